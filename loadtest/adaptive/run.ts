// npm run loadtest:adaptive [-- --short] [--rate N] [--duration S]
//
// Adaptive concurrency against an upstream whose latency grows with its concurrency (the stub's
// /concurrency-latency: 5 ms + 3 ms per request in flight, so it serves at most ~330 req/s and
// beyond that its queue, and everyone's latency, grows without bound). The same open-loop load,
// above that capacity, goes through two gateways in turn: one without a limit, one with
// `adaptiveConcurrency`. Reports, for each: answered, shed (503 adaptive-concurrency-limit),
// latency of the 200s, and the upstream's peak concurrency; writes
// loadtest/results/adaptive-latest.json. Exits 1 when the limited run does not keep the 200s'
// p99 under the unlimited run's, or sheds nothing.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { request } from 'undici'
import { startGatewayProcess } from '../lib/gateway.js'
import { log, sleep } from '../lib/log.js'
import { gatewayMetrics } from '../lib/metrics.js'
import { runMain, stackOf } from '../lib/main.js'
import { resultsDirFlag } from '../lib/options.js'
import { stopAll, stopProcess } from '../lib/processes.js'
import { startStubProcess } from '../lib/stub.js'
import { LoadGenerator } from '../zero-downtime/load.js'
import { fmt, percentiles, table, type Percentiles } from '../zero-downtime/util.js'

const PATH = '/concurrency-latency?baseMs=5&perInFlightMs=3'

interface RunResult {
  name: string
  sent: number
  ok: number
  shed: number
  otherErrors: number
  okLatency: Percentiles
  upstreamMaxInFlight: number
  finalLimit: number | null
}

function config(stubUrl: string, adaptive: boolean): string {
  return `upstreams:
  app:
    url: ${stubUrl}
    connections: 512
defaults:
  policies:
    timeout: { request: 30s }
${adaptive ? '    adaptiveConcurrency: { initialLimit: 10, window: 100ms }\n' : ''}routes:
  - name: all
    upstream: app
drain: { delay: 0s, timeout: 5s }
log: { access: false }
`
}

async function runOne(name: string, adaptive: boolean, dir: string, rate: number, durationS: number): Promise<RunResult> {
  const stub = await startStubProcess(join(dir, `stub-${name}.log`), 0)
  const configFile = join(dir, `${name}.yaml`)
  writeFileSync(configFile, config(stub.url, adaptive))
  const gateway = await startGatewayProcess(name, configFile, join(dir, `${name}.log`), '127.0.0.1:0', '127.0.0.1:0')
  try {
    const origin = `http://${gateway.listen}`
    const generator = new LoadGenerator({
      rate,
      maxInFlight: 4096,
      timeoutMs: 35_000,
      poolConnections: 1024,
      plan: () => ({ origin, path: PATH, method: 'GET', fresh: false, kind: 'GET', verify: (answer) => (answer.status === 200 ? undefined : `status-${answer.status}`) }),
      step: () => 'measure',
    })
    log(`${name}: ${rate} req/s for ${durationS} s to ${origin}${PATH}`)
    generator.begin()
    await sleep(durationS * 1000)
    const samples = await generator.stop(30_000)
    const stats = (await (await request(`${stub.url}/__stats`)).body.json()) as { maxInFlight: number }
    const metrics = await gatewayMetrics(gateway.admin)
    const limit = /waypost_adaptive_concurrency_limit\{route="all"\} (\d+)/.exec(metrics)
    const ok = samples.filter((sample) => sample.ok)
    const shed = samples.filter((sample) => sample.status === 503 && sample.reason?.startsWith('adaptive-concurrency-limit') === true).length
    return {
      name,
      sent: samples.length,
      ok: ok.length,
      shed,
      otherErrors: samples.length - ok.length - shed,
      okLatency: percentiles(ok.map((sample) => sample.ended - sample.scheduled)),
      upstreamMaxInFlight: stats.maxInFlight,
      finalLimit: limit === null ? null : Number(limit[1]),
    }
  } finally {
    await stopProcess(gateway.process, 10_000)
    await stopProcess(stub.process, 10_000)
  }
}

interface Options {
  rate: number
  durationS: number
  resultsDir: string
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: { short: { type: 'boolean', default: false }, rate: { type: 'string' }, duration: { type: 'string' }, 'results-dir': { type: 'string' } },
  })
  const rate = Number(values.rate ?? 450)
  const durationS = Number(values.duration ?? (values.short ? 5 : 20))
  // Reported as a failure (stack, exit 2), as adaptive always has, not as a usage error.
  if (!(rate > 0) || !(durationS > 0)) throw new Error('--rate and --duration: expected positive numbers')
  return { rate, durationS, resultsDir: resultsDirFlag(values['results-dir']) }
}

async function run({ rate, durationS, resultsDir }: Options): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-adaptive-'))
  const results = [await runOne('unlimited', false, dir, rate, durationS), await runOne('adaptive', true, dir, rate, durationS)]
  await stopAll()
  rmSync(dir, { recursive: true, force: true })

  console.log(`\n== adaptive concurrency: ${rate} req/s for ${durationS} s, GET ${PATH} (capacity about 330 req/s) ==\n`)
  const rows = [['gateway', 'sent', '200', 'shed 503', 'other errors', 'ok p50 ms', 'ok p99 ms', 'ok max ms', 'upstream max in flight', 'final limit']]
  for (const r of results) {
    rows.push([r.name, String(r.sent), String(r.ok), String(r.shed), String(r.otherErrors), fmt(r.okLatency.p50Ms, 1), fmt(r.okLatency.p99Ms, 1), fmt(r.okLatency.maxMs, 1), String(r.upstreamMaxInFlight), r.finalLimit === null ? '-' : String(r.finalLimit)])
  }
  console.log(table(rows))
  const [unlimited, adaptive] = results as [RunResult, RunResult]
  const checks = [
    { name: 'the limited gateway sheds load', pass: adaptive.shed > 0 },
    { name: "its 200s' p99 stays under the unlimited gateway's", pass: adaptive.okLatency.p99Ms < unlimited.okLatency.p99Ms },
    { name: 'the upstream sees less concurrency', pass: adaptive.upstreamMaxInFlight < unlimited.upstreamMaxInFlight },
  ]
  console.log('')
  for (const check of checks) console.log(`  ${check.pass ? 'PASS' : 'FAIL'}  ${check.name}`)
  mkdirSync(resultsDir, { recursive: true })
  const out = join(resultsDir, 'adaptive-latest.json')
  writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), rate, durationS, path: PATH, results, checks }, null, 2)}\n`)
  console.log(`\nwrote ${out}`)
  return checks.every((check) => check.pass) ? 0 : 1
}

runMain({
  parse: parseOptions,
  run,
  logStamp: 'elapsed',
  describeFailure: (error) => `adaptive: ${stackOf(error)}`,
  failureExitCode: 2,
  abortGraceMs: 3000,
})
