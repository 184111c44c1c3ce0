// `npm run bench`: direct vs nginx vs the gateway (bare and with its default policies), measured
// in one run, interleaved, on 127.0.0.1 only; `--tls` adds TLS termination beside nginx's (keep-alive
// throughput and latency, and new connections per second). See loadtest/README.md for what each figure means.
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { cpus, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { BENCH_USAGE, benchOptions, DEFAULT_CONFIGS, isTls, MULTI_CPU_CONFIG_NAMES, type BenchOptions, type ConfigName } from './options.js'
import { messageOf, runMain } from '../lib/main.js'
import { setStopGrace, stopAll } from '../lib/processes.js'
import { GATEWAY_MAIN } from '../lib/paths.js'
import { log } from '../lib/log.js'
import { metricSum, scrapeMetrics } from '../lib/metrics.js'
import { findTool } from '../lib/tools.js'
import { deployedEnvironmentText, requireBenchTools, startTopology, STOP_GRACE_MS, type Target, type Topology } from './topology.js'
import { measure, waitQuiet } from './measure.js'
import { runWrk, wrkLogFile } from './wrk.js'
import { runFixedRate, runHandshakes } from './latency.js'
import { NCPU, groupRssKiB } from './procfs.js'
import { floorNote, formatHandshakeTable, formatTable, formatTargets, judge, paired, reportKind, summarize, writeReport, type BenchReport, type HandshakeRun, type LatencyRun, type ThroughputRun } from './report.js'
import { fmt, ratio } from './util.js'
import { resolveRuntime } from '../lib/runtime.js'
import { formatPolicyTable, policyCosts } from './policy-report.js'

/** The fixed-rate generator sends at the target rate for this long before it starts recording. */
const LATENCY_WARMUP_S = 1

function firstLine(command: string, args: string[]): string {
  const path = findTool(command)
  if (path === undefined) return 'missing'
  const result = spawnSync(path, args, { encoding: 'utf8' })
  return `${result.stdout ?? ''}${result.stderr ?? ''}`.trim().split('\n', 1)[0] ?? ''
}

class Runner {
  readonly throughput: ThroughputRun[] = []
  readonly latency: LatencyRun[] = []
  readonly handshakes: HandshakeRun[] = []
  /** Seconds that quiet-waits and retries have added so far. */
  private extra = 0

  constructor(private readonly options: BenchOptions, private readonly topology: Topology, private readonly runDir: string) {}

  private pgids(target: Target): number[] {
    return target.config === 'direct' ? [this.topology.upstream.pid] : [target.server.pid, this.topology.upstream.pid]
  }

  /** Runs `once` after a quiet-wait; retries runs disturbed by other processes while the budget lasts; keeps the least disturbed. */
  private async attempts<T extends { foreignPct: number }>(once: (attempt: number) => Promise<T>, runSeconds: number): Promise<T & { attempts: number }> {
    const { quietWait, foreignMax, retries, extraBudget } = this.options
    let best: T | undefined
    let attempt = 0
    for (;;) {
      attempt++
      if (this.extra < extraBudget) this.extra += await waitQuiet(Math.min(quietWait, extraBudget - this.extra), foreignMax)
      const result = await once(attempt)
      if (best === undefined || result.foreignPct < best.foreignPct) best = result
      if (result.foreignPct <= foreignMax || attempt > retries || this.extra >= extraBudget) break
      log(`    other processes (or the hypervisor) took ${fmt(result.foreignPct)}% of the CPUs during that run: retrying`)
      this.extra += runSeconds
    }
    return { ...best, attempts: attempt }
  }

  async warmUp(target: Target): Promise<void> {
    const { warmup, connections, loadCpus } = this.options
    if (warmup <= 0) return
    await runWrk({ port: target.port, seconds: warmup, connections, cpus: loadCpus, logFile: wrkLogFile(this.runDir, `warmup-${target.config}`), tls: target.tls, headers: target.headers })
  }

  async throughputRun(target: Target, rep: number): Promise<void> {
    const { duration, connections, loadCpus } = this.options
    const run = await this.attempts(async (attempt): Promise<Omit<ThroughputRun, 'attempts'>> => {
      const logFile = wrkLogFile(this.runDir, `${target.config}-${rep}-${attempt}`)
      const m = await measure(this.pgids(target), () => runWrk({ port: target.port, seconds: duration, connections, cpus: loadCpus, logFile, tls: target.tls, headers: target.headers }))
      const perRequest = (seconds: number): number => (m.result.requests > 0 ? (seconds * 1e6) / m.result.requests : NaN)
      const direct = target.config === 'direct'
      return {
        config: target.config,
        rep,
        rps: m.result.rps,
        requests: m.result.requests,
        errors: m.result.errors,
        wrkP50Ms: m.result.p50Ms,
        wrkP99Ms: m.result.p99Ms,
        proxyCpuUsPerReq: direct ? NaN : perRequest(m.cpuSeconds[0]!),
        upstreamCpuUsPerReq: perRequest(direct ? m.cpuSeconds[0]! : m.cpuSeconds[1]!),
        loadgenCpuUsPerReq: perRequest(m.loadgenCpuSeconds),
        foreignPct: m.foreignPct,
        stealPct: m.stealPct,
      }
    }, duration)
    this.throughput.push(run)
    log(
      `  ${target.config.padEnd(15)} rep ${rep}  wrk: ${fmt(run.rps)} req/s, proxy ${fmt(run.proxyCpuUsPerReq, 1)} us/req, ` +
        `upstream ${fmt(run.upstreamCpuUsPerReq, 1)} us/req, errors ${run.errors}, foreign ${fmt(run.foreignPct)}% (steal ${fmt(run.stealPct)}%)`,
    )
  }

  async latencyRun(target: Target, rep: number): Promise<void> {
    const { rate, latencyDuration, connections, loadCpus } = this.options
    const run = await this.attempts(async (attempt): Promise<Omit<LatencyRun, 'attempts'>> => {
      const logFile = join(this.runDir, `fixed-rate-${target.config}-${rep}-${attempt}.txt`)
      const m = await measure(this.pgids(target), () =>
        runFixedRate({ port: target.port, rate, seconds: latencyDuration, warmupSeconds: LATENCY_WARMUP_S, connections, cpus: loadCpus, logFile, tls: target.tls, headers: target.headers }),
      )
      const sent = rate * (latencyDuration + LATENCY_WARMUP_S)
      return {
        ...m.result,
        config: target.config,
        rep,
        proxyCpuUsPerReq: target.config === 'direct' ? NaN : (m.cpuSeconds[0]! * 1e6) / sent,
        foreignPct: m.foreignPct,
        stealPct: m.stealPct,
      }
    }, latencyDuration + LATENCY_WARMUP_S)
    this.latency.push(run)
    const problems = run.errors + run.non200 > 0 ? `, ${run.errors} failed, ${run.non200} non-200` : ''
    log(
      `  ${target.config.padEnd(15)} rep ${rep}  ${rate} req/s: p50 ${fmt(run.p50Ms, 2)} ms, p99 ${fmt(run.p99Ms, 2)} ms, ` +
        `p99.9 ${fmt(run.p999Ms, 2)} ms (achieved ${fmt(run.achievedRate)} req/s${problems}), foreign ${fmt(run.foreignPct)}% (steal ${fmt(run.stealPct)}%)`,
    )
  }

  /** TLS configs: new connections per second for `duration`, each a full handshake and one request. */
  async handshakeRun(target: Target, rep: number): Promise<void> {
    const { duration, connections, loadCpus } = this.options
    const run = await this.attempts(async (attempt): Promise<Omit<HandshakeRun, 'attempts'>> => {
      const logFile = join(this.runDir, `handshakes-${target.config}-${rep}-${attempt}.txt`)
      const m = await measure(this.pgids(target), () => runHandshakes({ port: target.port, seconds: duration, connections, cpus: loadCpus, logFile }))
      const perHandshake = (seconds: number): number => (m.result.handshakes > 0 ? (seconds * 1e6) / m.result.handshakes : NaN)
      return {
        ...m.result,
        config: target.config,
        rep,
        proxyCpuUsPerHandshake: perHandshake(m.cpuSeconds[0]!),
        loadgenCpuUsPerHandshake: perHandshake(m.loadgenCpuSeconds),
        foreignPct: m.foreignPct,
        stealPct: m.stealPct,
      }
    }, duration)
    this.handshakes.push(run)
    log(
      `  ${target.config.padEnd(15)} rep ${rep}  new TLS connections: ${fmt(run.rate)}/s (${run.protocol} ${run.cipher}), proxy ${fmt(run.proxyCpuUsPerHandshake, 1)} us each, ` +
        `generator ${fmt(run.loadgenCpuUsPerHandshake, 1)} us each, p99 ${fmt(run.p99Ms, 2)} ms, errors ${run.errors}, foreign ${fmt(run.foreignPct)}%`,
    )
  }

  get extraSeconds(): number {
    return this.extra
  }
}

function countLines(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let lines = 0
    createReadStream(file)
      .on('data', (chunk: Buffer | string) => {
        const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
        for (let i = buffer.indexOf(10); i !== -1; i = buffer.indexOf(10, i + 1)) lines++
      })
      .on('end', () => resolve(lines))
      .on('error', reject)
  })
}

async function bench(given: BenchOptions): Promise<number> {
  const runtime = resolveRuntime(given.node)
  const options: BenchOptions = { ...given, node: runtime.path }
  const needNginx = options.configs.some((config) => config.startsWith('nginx')) || options.upstream === 'nginx'
  const needTls = options.configs.some(isTls)
  requireBenchTools(['wrk', 'taskset', ...(needNginx ? ['nginx'] : []), ...(needTls ? ['openssl'] : []), ...(options.configs.includes('haproxy-2t') ? ['haproxy'] : [])])
  if (!existsSync(GATEWAY_MAIN)) throw new Error(`${GATEWAY_MAIN} not found: build first (npm run build), or use npm run bench`)
  // With --cpu-prof the gateway writes its profile after the drain: give it time.
  setStopGrace(options.gatewayNodeFlags.some((flag) => flag.startsWith('--cpu-prof') || flag.startsWith('--heap-prof')) ? 30_000 : STOP_GRACE_MS)
  const runDir = mkdtempSync(join(tmpdir(), 'waypost-bench-'))
  // Also on Ctrl-C (the 'exit' handlers run after lib/processes.ts has killed the process groups).
  if (!options.keep) process.on('exit', () => rmSync(runDir, { recursive: true, force: true }))
  const started = Date.now()
  const date = new Date().toISOString()
  const mode = options.quick ? 'quick' : options.duration === 5 && options.reps === 3 && options.configs.join() === DEFAULT_CONFIGS.join() ? 'full' : 'custom'
  const openssl = needTls ? firstLine('openssl', ['version']) : 'not used'
  const machine = {
    /** What runs the gateway, the floor and the node upstream (--node). */
    node: runtime.version,
    nodePath: runtime.path,
    /** What runs the benchmark and its load generators. */
    benchNode: process.version,
    kernel: release(),
    cpus: NCPU,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    nginx: needNginx ? firstLine('nginx', ['-v']) : 'not used',
    wrk: firstLine('wrk', ['-v']),
    openssl,
  }
  console.log(`waypost bench (${mode}) ${date}: gateway, floor and upstream on Node ${machine.node}, ${machine.cpus} CPUs (${machine.cpuModel}), kernel ${machine.kernel}`)
  console.log(`  configs ${options.configs.join(', ')}; upstream: ${options.upstream === 'node' ? 'node:http 1 KiB' : 'nginx static 1 KiB'}; 127.0.0.1 ports from ${options.portBase}`)
  console.log(`  throughput: wrk -t1 -c${options.connections} -d${options.duration}s, ${options.reps} round(s), order rotated each round, after ${options.warmup}s warm-up per config`)
  console.log(`  latency: open-loop ${options.rate} req/s for ${options.latencyDuration}s (+${LATENCY_WARMUP_S}s unrecorded) over ${options.connections} connections, from scheduled send time`)
  console.log(`  pinning (taskset -c): load generators ${options.loadCpus}; upstream and proxies ${options.serverCpus}${options.configs.some((config) => MULTI_CPU_CONFIG_NAMES.includes(config)) ? `; 2-core proxies (${MULTI_CPU_CONFIG_NAMES.filter((config) => options.configs.includes(config)).join(', ')}) ${options.multiServerCpus}` : ''}`)
  if (needTls) console.log(`  TLS: one self-signed RSA 2048 certificate for nginx-tls and gateway-tls (${openssl}); new connections: ${options.connections} loops for ${options.duration}s, a full handshake and one request each`)
  if (options.gatewayNodeFlags.length > 0) console.log(`  gateway node flags: ${options.gatewayNodeFlags.join(' ')}`)
  console.log(`  gateway and floor environment: ${deployedEnvironmentText()}`)

  let report: BenchReport
  try {
    const topology = await startTopology(runDir, options, options.configs)
    const rssIdle = new Map<ConfigName, number>()
    for (const [config, target] of topology.targets) rssIdle.set(config, groupRssKiB(target.server.pid))
    log(`all up (run dir ${runDir}); warming up ${options.warmup}s per config`)
    const runner = new Runner(options, topology, runDir)
    for (const config of options.configs) await runner.warmUp(topology.targets.get(config)!)

    for (let rep = 1; rep <= options.reps; rep++) {
      log(`round ${rep}/${options.reps}`)
      // Rotate the order each round so no config always follows the same neighbour.
      const n = options.configs.length
      for (let i = 0; i < n; i++) {
        const target = topology.targets.get(options.configs[(i + rep - 1) % n]!)!
        await runner.throughputRun(target, rep)
        await runner.latencyRun(target, rep)
        if (target.tls) await runner.handshakeRun(target, rep)
      }
    }

    const rss = new Map<ConfigName, number>()
    for (const [config, target] of topology.targets) rss.set(config, groupRssKiB(target.server.pid))
    const notes: string[] = []
    const gw = topology.targets.get('gateway-default')
    if (gw?.adminPort !== undefined) {
      const metrics = await scrapeMetrics(gw.adminPort)
      const classes = ['2xx', '4xx', '5xx'].map((c) => `${c} ${fmt(metricSum(metrics, 'waypost_requests_total', { status_class: c }) || 0)}`)
      notes.push(
        `gateway-default metrics: waypost_requests_total ${fmt(metricSum(metrics, 'waypost_requests_total'))} (${classes.join(', ')}; ` +
          `4xx are 499s: wrk closes its connections with requests in flight when a run ends)`,
      )
    }
    const cached = topology.targets.get('gateway-cache')
    if (cached?.adminPort !== undefined) {
      const metrics = await scrapeMetrics(cached.adminPort)
      const result = (name: string): number => metricSum(metrics, 'waypost_cache_requests_total', { result: name }) || 0
      const hits = result('hit')
      const all = ['hit', 'stale-while-revalidate', 'stale-if-error', 'max-stale', 'revalidated', 'miss', 'bypass'].reduce((sum, name) => sum + result(name), 0)
      notes.push(`gateway-cache metrics: ${fmt(hits)} cache hits of ${fmt(all)} lookups (${fmt((hits / all) * 100, 3)}%)`)
    }
    const sink = topology.otlpSink
    if (sink !== undefined) notes.push(`OTLP sink: ${fmt(sink.exports)} exports, ${fmt(sink.bytes / 2 ** 20, 1)} MiB of spans received from the traced configs`)
    log(`measurements done in ${fmt((Date.now() - started) / 1000)} s (${fmt(runner.extraSeconds)} s of it waiting for quiet or retrying); stopping`)
    await stopAll()
    if (gw !== undefined) {
      const lines = await countLines(gw.logFile)
      notes.push(`gateway-default access log: ${lines} lines, ${fmt(statSync(gw.logFile).size / 2 ** 20, 1)} MiB written to its stdout file`)
    }
    const summary = summarize(options.configs, runner.throughput, runner.latency, { idle: rssIdle, loaded: rss }, options.rate, runner.handshakes)
    const floor = floorNote(runner.throughput, summary)
    if (floor !== undefined) notes.push(floor)
    const notMeasured = summary.filter((s) => s.rps.runs === 0)
    if (notMeasured.length > 0) notes.push(`no runs for: ${notMeasured.map((s) => s.config).join(', ')}`)
    for (const config of ['gateway-jwt-rs256', 'gateway-jwt-es256'] as const) {
      if (!options.configs.includes(config) || !options.configs.includes('gateway-default')) continue
      const jwt = summary.find((s) => s.config === config)!
      const base = summary.find((s) => s.config === 'gateway-default')!
      const cpu = paired(runner.throughput, config, 'gateway-default', (a, b) => a.proxyCpuUsPerReq / b.proxyCpuUsPerReq)
      notes.push(`${config}: the default chain plus JWT verification (cached key, verified token remembered) costs ${fmt(jwt.proxyCpuUsPerReq - base.proxyCpuUsPerReq, 1)} us/req more CPU than gateway-default (${ratio(cpu)} its CPU per request)`)
    }
    const hit = summary.find((s) => s.config === 'gateway-cache')
    if (hit !== undefined && options.configs.includes('nginx-static')) {
      const cpu = paired(runner.throughput, 'gateway-cache', 'nginx-static', (a, b) => a.proxyCpuUsPerReq / b.proxyCpuUsPerReq)
      const rps = paired(runner.throughput, 'gateway-cache', 'nginx-static', (a, b) => a.rps / b.rps)
      notes.push(`cache hit vs nginx serving the same file: CPU per request ${ratio(cpu)}, throughput ${ratio(rps)}`)
    }
    if (needTls) notes.push('TLS configs: "vs nginx" compares with nginx-tls (nginx terminating TLS with the same certificate)')
    const limited = summary.filter((s) => s.handshakes !== undefined && s.handshakes.loadgenCpuUsPerHandshake * s.handshakes.rate > 0.9e6)
    if (limited.length > 0) notes.push(`the handshake generator used over 90% of its CPU for: ${limited.map((s) => s.config).join(', ')} (its rate is a lower bound of the server's)`)
    const failing = summary.filter((s) => s.errors + s.latency.errors + (s.handshakes?.errors ?? 0) > 0)
    if (failing.length > 0) notes.push(`errors (non-2xx, socket errors, failed requests or connections) in: ${failing.map((s) => `${s.config} ${s.errors + s.latency.errors + (s.handshakes?.errors ?? 0)}`).join(', ')}`)
    const slow = summary.filter((s) => s.latency.achievedRate < 0.95 * options.rate)
    if (slow.length > 0) notes.push(`fixed rate not reached (< 95% of ${options.rate} req/s) by: ${slow.map((s) => `${s.config} ${fmt(s.latency.achievedRate)}`).join(', ')}`)
    const disturbed = summary.filter((s) => s.foreignMaxPct > options.foreignMax)
    if (disturbed.length > 0) notes.push(`runs disturbed by other processes or hypervisor steal (foreign CPU > ${options.foreignMax}%): ${disturbed.map((s) => `${s.config} ${fmt(s.foreignMaxPct)}%`).join(', ')}`)
    report = {
      date,
      mode,
      settings: { ...options, latencyWarmup: LATENCY_WARMUP_S },
      machine,
      summary,
      policyCosts: policyCosts(runner.throughput, summary),
      targets: judge(summary, runner.throughput, options.rate),
      notes,
      runs: { throughput: runner.throughput, latency: runner.latency, handshakes: runner.handshakes },
    }
  } finally {
    await stopAll()
    if (options.keep) log(`raw files kept in ${runDir}`)
    else rmSync(runDir, { recursive: true, force: true })
  }

  console.log('')
  console.log(`Node ${report.machine.node} (gateway, floor and upstream):`)
  console.log(formatTable(report.summary, options.rate))
  console.log('')
  const policyTable = formatPolicyTable(report.policyCosts)
  if (policyTable !== undefined) console.log(`${policyTable}\n`)
  const handshakeTable = formatHandshakeTable(report.summary)
  if (handshakeTable !== undefined) console.log(`${handshakeTable}\n`)
  for (const note of report.notes) console.log(`note: ${note}`)
  console.log(formatTargets(report.targets))
  const file = writeReport(options.resultsDir, report)
  const kind = reportKind(report)
  console.log(`\nwrote ${file} and ${kind === 'proxy' ? 'latest.json' : `${kind}-latest.json`}; total ${fmt((Date.now() - started) / 1000)} s`)
  const failed = report.targets.filter((t) => t.pass === false)
  if (options.strict && failed.length > 0) {
    console.log(`--strict: ${failed.length} target(s) missed`)
    return 1
  }
  return 0
}

runMain({
  usage: BENCH_USAGE,
  parse: benchOptions,
  run: bench,
  logStamp: 'clock',
  describeFailure: (error) => `bench failed: ${messageOf(error)}`,
  failureExitCode: 1,
})
