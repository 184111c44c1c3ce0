// npm run loadtest:slo [-- --short] [--config FILE] [--resilient-config FILE] [--strict]
//
// The SLO check: a flaky upstream (the stub's /flaky: 5 % answer 503, 2 % take 2 s), loaded at a
// fixed open-loop rate four ways: straight at the stub (direct), through the gateway's default
// chain without resilience policies (gateway: the "before"), through the recommended resilience
// policies, config/examples/resilience.yaml (resilient: the "after"), and through the same with the
// response cache on for GETs, config/examples/resilience-cache.yaml (cached). Requests cycle over
// `--keys` URIs whose 200s say `max-age=--max-age` (ignored where nothing caches). Reports
// p50/p95/p99, the error rate seen by the client and the requests that reached the upstream,
// judges the resilient and cached runs against the SLO (p95 < 200 ms, error rate < 0.1 %), prints
// a table and writes loadtest/results/slo-latest.json. The exit code is 0 (1 with --strict when a
// target is missed).
//
// `--config` / `--resilient-config` measure other policy files with the same load: `{{UPSTREAM}}` in
// a file is replaced with the stub's URL; a file without it gets every upstream's `url` pointed at
// the stub. The listen and admin addresses are set by the runner (ephemeral ports).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { parseDocument } from 'yaml'
import { request } from 'undici'
import { startGatewayProcess } from '../lib/gateway.js'
import { log, sleep } from '../lib/log.js'
import { gatewayMetrics, metricSum } from '../lib/metrics.js'
import { GATEWAY_MAIN, REPO_ROOT, requireBuilt, STUB_CLI } from '../lib/paths.js'
import { runMain, stackOf } from '../lib/main.js'
import { HELP_FLAG, numberFlag, resultsDirFlag, UsageError } from '../lib/options.js'
import { stopAll, stopProcess, type Started } from '../lib/processes.js'
import { startStubProcess } from '../lib/stub.js'
import { LoadGenerator, type Sample } from '../zero-downtime/load.js'
import { count, fmt, percentile, percentiles, round, sortedEntries, sortedNumbers, table, type Percentiles } from '../zero-downtime/util.js'

const USAGE = `usage: node dist/loadtest/slo/run.js [--short] [options]
  --short             10 s of measured load instead of 30 s
  --rate N            requests per second, open loop (default 200)
  --duration S        measured seconds (default 30; 10 with --short)
  --warmup S          seconds of load before the measurement, not recorded (default 2)
  --config FILE       policy file of the "gateway" run (before); {{UPSTREAM}} is replaced with the
                      stub URL (default loadtest/slo/gateway.yaml: timeout 30s, concurrency 1024/256)
  --resilient-config FILE
                      policy file of the "resilient" run (after); without {{UPSTREAM}}, its upstream
                      urls are pointed at the stub (default config/examples/resilience.yaml)
  --cached-config FILE
                      policy file of the "cached" run, like --resilient-config
                      (default config/examples/resilience-cache.yaml)
  --path PATH         the request (default ${'/flaky?fail=0.05&status=503&slow=0.02&slowMs=2000'})
  --keys N            requests cycle over N URIs (\`&item=0..N-1\` appended; default 100)
  --max-age S         \`&maxAge=S\` appended: the stub's 200s say Cache-Control: max-age=S (default 5)
  --seed N|none       seed of /flaky's outcomes, the same for every run (default 42)
  --targets LIST      which runs: direct,gateway,resilient,cached (default all four)
  --connections N     keep-alive connections of the load generator (default 256)
  --results-dir DIR   where slo-latest.json goes (default loadtest/results)
  --strict            exit 1 when a target is missed
  --keep              keep the temp dir (rendered config, logs)`

const DEFAULT_PATH = '/flaky?fail=0.05&status=503&slow=0.02&slowMs=2000'
const TARGETS = { p95Ms: 200, errorRate: 0.001 }

type Target = 'direct' | 'gateway' | 'resilient' | 'cached'
const TARGET_NAMES: readonly Target[] = ['direct', 'gateway', 'resilient', 'cached']
/** The runs whose figures are held against the SLO (the others are the baselines). */
const JUDGED: readonly Target[] = ['resilient', 'cached']

interface Options {
  rate: number
  durationS: number
  warmupS: number
  config: string
  resilientConfig: string
  cachedConfig: string
  path: string
  keys: number
  maxAgeS: number
  seed: string | undefined
  targets: Target[]
  connections: number
  resultsDir: string
  strict: boolean
  keep: boolean
  short: boolean
}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      short: { type: 'boolean', default: false },
      rate: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      config: { type: 'string' },
      'resilient-config': { type: 'string' },
      'cached-config': { type: 'string' },
      path: { type: 'string' },
      keys: { type: 'string' },
      'max-age': { type: 'string' },
      seed: { type: 'string' },
      targets: { type: 'string' },
      connections: { type: 'string' },
      'results-dir': { type: 'string' },
      strict: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      ...HELP_FLAG,
    },
  })
  if (values.help) return 'help'
  const targets = (values.targets ?? TARGET_NAMES.join(',')).split(',').map((name) => name.trim())
  for (const name of targets) if (!(TARGET_NAMES as readonly string[]).includes(name)) throw new UsageError(`--targets: unknown "${name}" (${TARGET_NAMES.join(', ')})`)
  const path = values.path ?? DEFAULT_PATH
  if (!path.startsWith('/')) throw new UsageError('--path: expected a path starting with "/"')
  return {
    short: values.short,
    rate: numberFlag(values.rate, 'rate', 200, 1),
    durationS: numberFlag(values.duration, 'duration', values.short ? 10 : 30, 1),
    warmupS: numberFlag(values.warmup, 'warmup', 2, 0),
    config: resolve(values.config ?? join(REPO_ROOT, 'loadtest/slo/gateway.yaml')),
    resilientConfig: resolve(values['resilient-config'] ?? join(REPO_ROOT, 'config/examples/resilience.yaml')),
    cachedConfig: resolve(values['cached-config'] ?? join(REPO_ROOT, 'config/examples/resilience-cache.yaml')),
    path,
    keys: Math.floor(numberFlag(values.keys, 'keys', 100, 1)),
    maxAgeS: Math.floor(numberFlag(values['max-age'], 'max-age', 5, 0)),
    seed: values.seed === 'none' ? undefined : (values.seed ?? '42'),
    targets: targets as Target[],
    connections: numberFlag(values.connections, 'connections', 256, 1),
    resultsDir: resultsDirFlag(values['results-dir']),
    strict: values.strict,
    keep: values.keep,
  }
}

interface RunResult {
  target: Target
  url: string
  /** Requests due in the measured window, and those with an HTTP answer. */
  sent: number
  answered: number
  ok: number
  errors: number
  errorRate: number
  errorsByCause: Record<string, number>
  /** Scheduled send -> end of body, every answered request (errors included): what the client waits. */
  latency: Percentiles
  /** The same, 2xx answers only. */
  okLatency: Percentiles
  /** Requests sent per second over the measured window (open loop: should equal the rate). */
  sentRate: number
  /** How late the generator sent requests (its own scheduling lag), p99 over the whole run. */
  sendLagP99Ms: number
  maxInFlight: number
  /** Requests the stub received during the measured window (what the gateway spared it, by difference). */
  upstreamRequests: number
  /** The gateway's cache lookups by result (hit, stale-while-revalidate, miss, ...) over the whole run; null without a cache. */
  cache: Record<string, number> | null
}

/** The request path without its item number. */
function requestPath(options: Options): string {
  const params = [...(options.seed === undefined ? [] : [`seed=${encodeURIComponent(options.seed)}`]), `maxAge=${options.maxAgeS}`]
  return `${options.path}${options.path.includes('?') ? '&' : '?'}${params.join('&')}`
}

async function stubRequests(stubUrl: string): Promise<number> {
  const response = await request(`${stubUrl}/__stats`, { headersTimeout: 2000, bodyTimeout: 2000 })
  return ((await response.body.json()) as { requests: number }).requests
}

async function cacheResults(admin: string): Promise<Record<string, number> | null> {
  const text = await gatewayMetrics(admin)
  const results: Record<string, number> = {}
  for (const result of ['hit', 'stale-while-revalidate', 'stale-if-error', 'max-stale', 'revalidated', 'miss', 'bypass']) {
    const value = metricSum(text, 'waypost_cache_requests_total', { result })
    if (!Number.isNaN(value)) results[result] = value
  }
  return Object.keys(results).length === 0 ? null : results
}

async function measure(target: Target, origin: string, stubUrl: string, admin: string | undefined, options: Options): Promise<RunResult> {
  const base = requestPath(options)
  let item = 0
  const nextPath = (): string => `${base}&item=${item++ % options.keys}`
  let step = 'warmup'
  const generator = new LoadGenerator({
    rate: options.rate,
    maxInFlight: 4096,
    timeoutMs: 35_000, // above the gateway's 30 s request deadline
    poolConnections: options.connections,
    plan: () => ({ origin, path: nextPath(), method: 'GET', fresh: false, kind: 'GET', verify: (answer) => (answer.status >= 200 && answer.status < 300 ? undefined : `status-${answer.status}`) }),
    step: () => step,
  })
  log(`${target}: ${options.rate} req/s to ${origin}${base}&item=0..${options.keys - 1}: ${options.warmupS} s warm-up, then ${options.durationS} s measured`)
  generator.begin()
  await sleep(options.warmupS * 1000)
  step = 'measure'
  const measuredFrom = generator.samples.length
  const upstreamBefore = await stubRequests(stubUrl)
  await sleep(options.durationS * 1000)
  const upstreamRequests = (await stubRequests(stubUrl)) - upstreamBefore
  step = 'after'
  const all = await generator.stop(10_000)
  const samples = all.slice(measuredFrom).filter((sample) => sample.step === 'measure')
  const cache = admin === undefined ? null : await cacheResults(admin)
  return { ...summarize(target, `${origin}${base}&item=0..${options.keys - 1}`, samples, generator), upstreamRequests, cache }
}

function summarize(target: Target, url: string, samples: Sample[], generator: LoadGenerator): Omit<RunResult, 'upstreamRequests' | 'cache'> {
  const answered = samples.filter((sample) => sample.status !== 0)
  const ok = samples.filter((sample) => sample.ok)
  const causes = new Map<string, number>()
  for (const sample of samples) if (!sample.ok) count(causes, sample.cause ?? '?')
  const errors = samples.length - ok.length
  const firstSent = samples[0]?.sent ?? 0
  const lastSent = samples[samples.length - 1]?.sent ?? 0
  const lag = sortedNumbers(generator.sendLag)
  return {
    target,
    url,
    sent: samples.length,
    answered: answered.length,
    ok: ok.length,
    errors,
    errorRate: samples.length === 0 ? NaN : errors / samples.length,
    errorsByCause: Object.fromEntries(sortedEntries(causes)),
    latency: percentiles(answered.map((sample) => sample.ended - sample.scheduled)),
    okLatency: percentiles(ok.map((sample) => sample.ended - sample.scheduled)),
    sentRate: round((samples.length - 1) / Math.max(0.001, (lastSent - firstSent) / 1000), 1),
    sendLagP99Ms: round(percentile(lag, 0.99)),
    maxInFlight: generator.maxInFlightSeen,
  }
}

function renderConfig(file: string, upstream: string): string {
  if (!existsSync(file)) throw new Error(`--config: ${file} does not exist`)
  const text = readFileSync(file, 'utf8')
  if (text.includes('{{UPSTREAM}}')) return text.replaceAll('{{UPSTREAM}}', upstream)
  // A policy file written for real use (like config/examples/resilience.yaml): aim its upstreams at the stub.
  const document = parseDocument(text)
  const upstreams = document.get('upstreams') as { items?: Array<{ key: unknown }> } | undefined
  for (const item of upstreams?.items ?? []) {
    const name = String((item.key as { value?: unknown }).value ?? item.key)
    if (document.hasIn(['upstreams', name, 'url'])) document.setIn(['upstreams', name, 'url'], upstream)
  }
  log(`${file}: every upstream url pointed at the stub (${upstream})`)
  return document.toString()
}

async function run(options: Options): Promise<number> {
  requireBuilt([GATEWAY_MAIN, STUB_CLI])
  const dir = mkdtempSync(join(tmpdir(), 'waypost-slo-'))
  log(`run dir (rendered config, logs): ${dir}`)
  const results: RunResult[] = []
  for (const target of options.targets) {
    // A fresh stub for every run: with a seed, both runs see the same sequence of outcomes.
    const stub = await startStubProcess(join(dir, `stub-${target}.log`), 0)
    const started: Started[] = [stub.process]
    try {
      let origin = stub.url
      let admin: string | undefined
      if (target !== 'direct') {
        const configFile = join(dir, `${target}.yaml`)
        writeFileSync(configFile, renderConfig(configOf(target, options)!, stub.url))
        const gateway = await startGatewayProcess(target, configFile, join(dir, `${target}.log`), '127.0.0.1:0', '127.0.0.1:0')
        started.unshift(gateway.process)
        origin = `http://${gateway.listen}`
        admin = gateway.admin
      }
      results.push(await measure(target, origin, stub.url, admin, options))
    } finally {
      for (const child of started) await stopProcess(child, 10_000)
    }
  }
  await stopAll()

  const direct = results.find((result) => result.target === 'direct')
  // The SLO is held against the resilient and cached runs; with neither, against the last run made.
  const judgedRuns = results.filter((result) => JUDGED.includes(result.target))
  const judged = judgedRuns.length > 0 ? judgedRuns : [results[results.length - 1]!]
  const targets = judged.flatMap((run) => [
    { run: run.target, name: `p95 < ${TARGETS.p95Ms} ms`, value: run.latency.p95Ms, unit: 'ms', pass: run.latency.p95Ms < TARGETS.p95Ms },
    { run: run.target, name: `error rate < ${TARGETS.errorRate * 100}%`, value: round(run.errorRate * 100, 3), unit: '%', pass: run.errorRate < TARGETS.errorRate },
  ])
  printTable(results, targets, options)
  const json = {
    date: new Date().toISOString(),
    settings: { rate: options.rate, durationS: options.durationS, warmupS: options.warmupS, path: options.path, keys: options.keys, maxAgeS: options.maxAgeS, seed: options.seed ?? null, config: options.config, resilientConfig: options.resilientConfig, cachedConfig: options.cachedConfig, connections: options.connections, short: options.short },
    machine: { cpus: cpus().length, node: process.version, platform: process.platform },
    latencyDefinition: 'ms from the scheduled send time (open loop) to the end of the body; every answered request, errors included (okLatency: 2xx only)',
    runs: results,
    addedOverDirect: direct === undefined ? null : Object.fromEntries(results.filter((run) => run !== direct).map((run) => [run.target, difference(run, direct)])),
    targets: { judged: judged.map((run) => run.target), results: targets },
  }
  mkdirSync(options.resultsDir, { recursive: true })
  const out = join(options.resultsDir, 'slo-latest.json')
  writeFileSync(out, `${JSON.stringify(json, null, 2)}\n`)
  console.log(`\nwrote ${out}`)
  if (!options.keep) rmSync(dir, { recursive: true, force: true })
  else console.log(`run dir kept: ${dir}`)
  const missed = targets.filter((target) => !target.pass).length
  return options.strict && missed > 0 ? 1 : 0
}

function difference(run: RunResult, direct: RunResult): { p50Ms: number; p95Ms: number; p99Ms: number; errorRate: number } {
  return { p50Ms: round(run.latency.p50Ms - direct.latency.p50Ms), p95Ms: round(run.latency.p95Ms - direct.latency.p95Ms), p99Ms: round(run.latency.p99Ms - direct.latency.p99Ms), errorRate: run.errorRate - direct.errorRate }
}

function configOf(target: Target, options: Options): string | undefined {
  return { direct: undefined, gateway: options.config, resilient: options.resilientConfig, cached: options.cachedConfig }[target]
}

function printTable(results: RunResult[], targets: Array<{ run: Target; name: string; value: number; unit: string; pass: boolean }>, options: Options): void {
  const rows = [['target', 'sent', 'answered', 'errors', 'error rate', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'ok p50', 'ok p95', 'ok p99', 'send lag p99', 'upstream reqs', 'errors by cause']]
  for (const r of results) {
    rows.push([
      r.target,
      String(r.sent),
      String(r.answered),
      String(r.errors),
      `${fmt(r.errorRate * 100, 2)}%`,
      fmt(r.latency.p50Ms, 2),
      fmt(r.latency.p95Ms, 2),
      fmt(r.latency.p99Ms, 1),
      fmt(r.latency.maxMs, 1),
      fmt(r.okLatency.p50Ms, 2),
      fmt(r.okLatency.p95Ms, 2),
      fmt(r.okLatency.p99Ms, 1),
      fmt(r.sendLagP99Ms, 1),
      String(r.upstreamRequests),
      Object.entries(r.errorsByCause).map(([cause, n]) => `${cause}:${n}`).join(' ') || '-',
    ])
  }
  const direct = results.find((r) => r.target === 'direct')
  console.log(`\n== SLO: ${options.rate} req/s for ${options.durationS} s, GET ${requestPath(options)}&item=0..${options.keys - 1} (in turn) ==`)
  console.log(`(latency: ms from the scheduled send to the end of the body, every answered request; "ok": 2xx only)\n`)
  console.log(table(rows))
  for (const run of results) {
    if (run.target === 'direct' || direct === undefined) continue
    const added = difference(run, direct)
    console.log(`\n${run.target} vs direct: p50 ${signed(added.p50Ms)} ms, p95 ${signed(added.p95Ms)} ms, p99 ${signed(added.p99Ms)} ms; error rate ${signed(added.errorRate * 100, 3)} points`)
  }
  for (const run of results) {
    if (run.cache === null) continue
    const lookups = Object.values(run.cache).reduce((sum, n) => sum + n, 0)
    const parts = Object.entries(run.cache).map(([result, n]) => `${result} ${n}`).join(', ')
    console.log(`\n${run.target}: cache lookups over the whole run (warm-up included): ${parts}; hit ratio ${fmt(((run.cache.hit ?? 0) / lookups) * 100, 1)}%`)
  }
  for (const run of new Set(targets.map((target) => target.run))) {
    const config = configOf(run, options)
    console.log(`\nSLO (judged on ${run}${config === undefined ? '' : `, config ${config}`}):`)
    for (const target of targets.filter((t) => t.run === run)) console.log(`  ${target.pass ? 'PASS' : 'FAIL'}  ${target.name}: ${target.value}${target.unit === '%' ? '%' : ' ms'}`)
  }
}

function signed(value: number, digits = 2): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`
}

runMain({
  usage: USAGE,
  parse: parseOptions,
  run,
  logStamp: 'elapsed',
  describeFailure: (error) => `slo: ${stackOf(error)}`,
  failureExitCode: 2,
  abortGraceMs: 3000,
})
