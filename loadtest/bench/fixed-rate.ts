// A small open-loop load generator: sends requests at a FIXED rate whatever the server does, so
// that latency can be compared between configs at the same load (wrk runs closed-loop and cannot;
// wrk2 is not packaged for Debian). Request i is due at start + i/rate; its latency is measured
// from that scheduled time, not from when it was actually sent, so a stalled server is charged for
// the whole queue that builds up behind it (no "coordinated omission").
//
// usage: node dist/loadtest/bench/fixed-rate.js --url http://127.0.0.1:PORT/ --rate 2000 --duration 5
//          [--warmup 1] [--connections 50] [--timer-only] [--insecure]
// Between requests less than 2 ms apart it polls (setImmediate), which keeps its own send lag far
// below a millisecond but keeps its CPU busy; --timer-only sleeps on timers instead (about 1 ms
// of lag, little CPU: for long runs such as the soak). --insecure accepts any certificate of an
// https:// URL (the TLS benchmarks' self-signed one).
// Prints one JSON line (FixedRateResult) on stdout. Run it pinned to its own CPU (run.ts does).
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'

export interface FixedRateResult {
  targetRate: number
  /** Requests scheduled in the measured window (after the warm-up). */
  scheduled: number
  completed: number
  achievedRate: number
  /** Requests that failed or did not finish within 10 s of the end; and answers other than 200. */
  errors: number
  non200: number
  /** From the scheduled send time to the end of the response body, in ms. */
  p50Ms: number
  p90Ms: number
  p99Ms: number
  p999Ms: number
  maxMs: number
  /** From the actual send time (what a closed-loop tool would report), in ms. */
  serviceP50Ms: number
  serviceP99Ms: number
  /** How late the generator itself sent requests (its own scheduling delay), p99 and max, in ms. */
  sendLagP99Ms: number
  sendLagMaxMs: number
}

function percentile(sorted: Float64Array, count: number, p: number): number {
  if (count === 0) return NaN
  return sorted[Math.min(count - 1, Math.max(0, Math.ceil(p * count) - 1))]!
}

/** Sorts the finite values to the front (NaN = not completed) and returns how many there are. */
function sortFinite(values: Float64Array): number {
  values.sort() // typed-array sort is numeric; NaN goes last
  let count = values.length
  while (count > 0 && Number.isNaN(values[count - 1]!)) count--
  return count
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      rate: { type: 'string', default: '2000' },
      duration: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      connections: { type: 'string', default: '50' },
      'timer-only': { type: 'boolean', default: false },
      insecure: { type: 'boolean', default: false },
      header: { type: 'string', multiple: true, default: [] },
    },
  })
  if (values.url === undefined) throw new Error('--url is required')
  const url = new URL(values.url)
  const rate = Number(values.rate)
  const duration = Number(values.duration)
  const warmup = Number(values.warmup)
  const connections = Number(values.connections)
  const timerOnly = values['timer-only'] === true
  const headers: Record<string, string> = {}
  for (const header of values.header) headers[header.slice(0, header.indexOf(':')).trim()] = header.slice(header.indexOf(':') + 1).trim()

  const connect = values.insecure === true ? { rejectUnauthorized: false } : undefined
  const pool = new Pool(url.origin, { connections, pipelining: 1, headersTimeout: 10_000, bodyTimeout: 10_000, keepAliveTimeout: 30_000, ...(connect === undefined ? {} : { connect }) })
  const path = url.pathname + url.search
  const intervalMs = 1000 / rate
  const warmCount = Math.round(rate * warmup)
  const total = warmCount + Math.round(rate * duration)
  const measured = total - warmCount
  const latency = new Float64Array(measured).fill(NaN)
  const service = new Float64Array(measured).fill(NaN)
  const lag = new Float64Array(measured)
  let non200 = 0
  let lastEnd = 0
  let settled = 0
  let sent = 0
  let allSettled: () => void = () => {}
  const done = new Promise<void>((resolve) => (allSettled = resolve))

  const fire = (i: number, scheduled: number, now: number): void => {
    const index = i - warmCount
    if (index >= 0) lag[index] = now - scheduled
    pool.request({ method: 'GET', path, headers }).then(
      async ({ statusCode, body }) => {
        await body.dump()
        const end = performance.now()
        if (index >= 0) {
          lastEnd = Math.max(lastEnd, end)
          if (statusCode === 200) {
            latency[index] = end - scheduled
            service[index] = end - now
          } else {
            non200++
          }
        }
      },
      () => {
        // counted below: scheduled - completed - non200
      },
    ).finally(() => {
      if (++settled === total) allSettled()
    })
  }

  const start = performance.now() + 20
  const tick = (): void => {
    const now = performance.now()
    while (sent < total && start + sent * intervalMs <= now) {
      fire(sent, start + sent * intervalMs, now)
      sent++
    }
    if (sent >= total) return
    const wait = start + sent * intervalMs - performance.now()
    // Timers are only ~1 ms precise: sleep when the next request is far, otherwise yield to I/O and
    // come straight back (setImmediate runs after the poll phase, so responses are still read).
    if (timerOnly) setTimeout(tick, Math.max(0, wait))
    else if (wait > 2) setTimeout(tick, wait - 1)
    else setImmediate(tick)
  }
  tick()

  // Everything is sent after warmup + duration; give stragglers up to 10 s more.
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, (warmup + duration) * 1000 + 10_000).unref())
  await Promise.race([done, deadline])
  const windowStart = start + warmCount * intervalMs

  const completed = sortFinite(latency)
  const serviceCount = sortFinite(service)
  lag.sort()
  const result: FixedRateResult = {
    targetRate: rate,
    scheduled: measured,
    completed,
    // Completed answers over the time from the first scheduled send to the last answer.
    achievedRate: completed > 0 ? completed / (Math.max(duration * 1000, lastEnd - windowStart) / 1000) : 0,
    errors: measured - completed - non200,
    non200,
    p50Ms: percentile(latency, completed, 0.5),
    p90Ms: percentile(latency, completed, 0.9),
    p99Ms: percentile(latency, completed, 0.99),
    p999Ms: percentile(latency, completed, 0.999),
    maxMs: completed > 0 ? latency[completed - 1]! : NaN,
    serviceP50Ms: percentile(service, serviceCount, 0.5),
    serviceP99Ms: percentile(service, serviceCount, 0.99),
    sendLagP99Ms: percentile(lag, lag.length, 0.99),
    sendLagMaxMs: lag.length > 0 ? lag[lag.length - 1]! : NaN,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
  await pool.destroy()
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  },
)
