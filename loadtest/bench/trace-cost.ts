// The tracing code's own CPU per request, without the proxying around it: what one exchange costs
// telemetry/tracing.ts (server span, one policy event, one attempt with its header list, both spans
// ended) and, when sampled, exporting the spans by OTLP/HTTP to a sink in another process. Requests
// are paced at a steady rate, as a busy sidecar sees them, so the export keeps up and nothing is
// dropped; the same paced loop without tracing is subtracted. A figure a shared machine disturbs less
// than `npm run bench`'s gateway-trace-* configs, which measure the whole gateway.
// usage: node dist/loadtest/bench/trace-cost.js [--rate 5000] [--seconds 5]
import { spawn } from 'node:child_process'
import { parseArgs } from 'node:util'
import type { IncomingMessage } from 'node:http'
import { pino } from 'pino'
import { startTracing } from '../../gateway/src/telemetry/tracing.js'
import { resolveTracing, type Tracing } from '../../gateway/src/telemetry/tracing-config.js'
import { newExchangeRecord, type Exchange } from '../../gateway/src/core/exchange.js'
import { fmt } from './util.js'

const { values } = parseArgs({ options: { rate: { type: 'string', default: '5000' }, seconds: { type: 'string', default: '5' } } })
const rate = Number(values.rate)
const seconds = Number(values.seconds)

/** An OTLP/HTTP sink in a child process, so reading the exports costs this process nothing. */
async function startSink(): Promise<{ url: string; stop(): void }> {
  const code = `require('node:http').createServer((q, r) => { q.resume(); q.on('end', () => r.end('{}')) }).listen(0, '127.0.0.1', function () { console.log(this.address().port) })`
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<string>((resolve) => child.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString().trim())))
  return { url: `http://127.0.0.1:${port}`, stop: () => void child.kill() }
}

const request = { method: 'GET', httpVersion: '1.1', headers: { host: '127.0.0.1:8080', 'user-agent': 'wrk', accept: '*/*' } } as unknown as IncomingMessage
const upstreamHeaders = ['host', '127.0.0.1:8080', 'user-agent', 'wrk', 'accept', '*/*', 'x-request-id', 'a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d', 'x-forwarded-for', '127.0.0.1', 'x-forwarded-proto', 'http', 'forwarded', 'for=127.0.0.1;proto=http', 'via', '1.1 waypost']

/** What the exchange and the traced dispatch call for one proxied GET through the default chain. */
function exchange(tracing: Tracing): void {
  const server = tracing.serverSpan(request, { scheme: 'http', authority: '127.0.0.1:8080', path: '/', route: 'all', upstream: 'app', peer: '127.0.0.1', requestId: 'a0b1c2d3' })
  server.event('waypost.breaker', { 'waypost.breaker.state': 'closed', 'waypost.breaker.decision': 'pass' })
  const record = newExchangeRecord()
  const attempt = server.startAttempt({ attempt: 0, record, request: { method: 'GET', path: '/', headers: upstreamHeaders } } as unknown as Exchange, 'app')
  attempt.headers(upstreamHeaders)
  attempt.sentTo('http://127.0.0.1:3000')
  attempt.answered(200)
  attempt.end()
  server.end({ status: 200, finished: true, reason: '', cache: '', attempts: 1, error: undefined })
}

/** CPU microseconds per request of `work`, run `rate` times a second for `seconds`. */
async function paced(work: () => void): Promise<number> {
  const tickMs = 50
  const perTick = Math.max(1, Math.round((rate * tickMs) / 1000))
  const ticks = Math.round((seconds * 1000) / tickMs)
  const before = process.cpuUsage()
  for (let tick = 0; tick < ticks; tick++) {
    for (let i = 0; i < perTick; i++) work()
    await new Promise((resolve) => setTimeout(resolve, tickMs))
  }
  const used = process.cpuUsage(before)
  return (used.user + used.system) / (ticks * perTick)
}

const sink = await startSink()
const log = pino({ level: 'warn' })
const results: Array<[string, number]> = []
const loop = await paced(() => {})
for (const ratio of [0.01, 1]) {
  const resolved = resolveTracing({ enabled: true, endpoint: sink.url, sampler: { ratio } }, { OTEL_BSP_SCHEDULE_DELAY: '200' })
  if (!resolved.on) throw new Error(resolved.why)
  const tracing = startTracing(resolved.settings, log)
  await paced(() => exchange(tracing)) // warm-up
  results.push([`${ratio * 100}%`, (await paced(() => exchange(tracing))) - loop])
  await tracing.shutdown()
}
sink.stop()
console.log(`tracing's own CPU per request at ${rate} req/s (paced loop of ${fmt(loop, 2)} us/request subtracted), Node ${process.version}:`)
for (const [sampled, us] of results) console.log(`  sampled ${sampled.padStart(4)}: ${fmt(us, 2)} us`)
console.log('  off: nothing of it runs (the plan holds the plain dispatch; the SDK is not loaded)')
