// `npm run bench:soak`: gateway-default under a steady fixed rate (default 1,000 req/s) for
// SOAK_MINUTES (default 10). RSS and V8 heap are sampled after the warm-up, every
// SOAK_SAMPLE_EVERY seconds (30) and at the end, still under load. Exit 1 if RSS grew by more
// than SOAK_MAX_GROWTH % (10) from the first sample to the last. Bounded in time; stops by itself.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { SOAK_USAGE, soakOptions, type SoakOptions } from './options.js'
import { resolveRuntime } from '../lib/runtime.js'
import { messageOf, runMain } from '../lib/main.js'
import { setStopGrace, stopAll } from '../lib/processes.js'
import { GATEWAY_MAIN } from '../lib/paths.js'
import { log, sleep } from '../lib/log.js'
import { metricSum, scrapeMetrics } from '../lib/metrics.js'
import { deployedEnvironmentText, requireBenchTools, startTopology, STOP_GRACE_MS } from './topology.js'
import { runFixedRate, type FixedRateResult } from './latency.js'
import { groupRssKiB } from './procfs.js'
import { fmt, signed, table } from './util.js'

interface Sample {
  /** Seconds since the load started. */
  t: number
  rssMiB: number
  /** nodejs_heap_size_used_bytes from the gateway's /metrics. */
  heapUsedMiB: number
  /** waypost_requests_total so far. */
  requests: number
}

async function sample(pid: number, adminPort: number, t: number): Promise<Sample> {
  const rssMiB = groupRssKiB(pid) / 1024
  if (rssMiB === 0) throw new Error('the gateway is gone')
  const metrics = await scrapeMetrics(adminPort)
  return {
    t,
    rssMiB,
    heapUsedMiB: metricSum(metrics, 'nodejs_heap_size_used_bytes') / 2 ** 20,
    requests: metricSum(metrics, 'waypost_requests_total'),
  }
}

async function soak(given: SoakOptions): Promise<number> {
  const runtime = resolveRuntime(given.node)
  const options: SoakOptions = { ...given, node: runtime.path }
  requireBenchTools(['taskset', ...(options.upstream === 'nginx' ? ['nginx'] : [])])
  if (!existsSync(GATEWAY_MAIN)) throw new Error(`${GATEWAY_MAIN} not found: build first (npm run build), or use npm run bench:soak`)
  setStopGrace(STOP_GRACE_MS)
  const runDir = mkdtempSync(join(tmpdir(), 'waypost-soak-'))
  if (!options.keep) process.on('exit', () => rmSync(runDir, { recursive: true, force: true }))
  const date = new Date().toISOString()
  const seconds = Math.round(options.minutes * 60)
  console.log(`waypost soak ${date}: gateway-default on Node ${runtime.version} at ${options.rate} req/s for ${seconds} s after ${options.warmup} s warm-up, ${options.connections} connections`)
  console.log(`  samples every ${options.sampleEvery} s; fails if RSS grows by more than ${options.maxGrowthPct}%; ports from ${options.portBase}; load cpus ${options.loadCpus}, server cpus ${options.serverCpus}`)
  console.log(`  gateway node flags: ${options.gatewayNodeFlags.join(' ') || 'none'}; environment: ${deployedEnvironmentText()}`)
  const samples: Sample[] = []
  let load: FixedRateResult
  try {
    const topology = await startTopology(runDir, options, ['gateway-default'])
    const gw = topology.targets.get('gateway-default')!
    const adminPort = gw.adminPort!
    const started = performance.now()
    // One generator for the whole soak; its warm-up seconds are sent at the same rate but not recorded.
    const generator = runFixedRate({
      port: gw.port,
      rate: options.rate,
      seconds,
      warmupSeconds: options.warmup,
      connections: options.connections,
      // Ten minutes of polling would take a whole CPU from whoever else uses the machine.
      timerOnly: true,
      cpus: options.loadCpus,
      logFile: join(runDir, 'fixed-rate.txt'),
    })
    let finished = false
    void generator.finally(() => (finished = true)).catch(() => {})
    const at = async (t: number): Promise<void> => {
      const wait = started + (options.warmup + t) * 1000 - performance.now()
      if (wait > 0) await sleep(wait)
      if (finished) throw new Error(`the load generator stopped early (log: ${join(runDir, 'fixed-rate.txt')})`)
      const s = await sample(gw.server.pid, adminPort, t)
      samples.push(s)
      log(`  t=${String(t).padStart(4)} s  RSS ${fmt(s.rssMiB, 1)} MiB  heap used ${fmt(s.heapUsedMiB, 1)} MiB  requests ${fmt(s.requests)}`)
    }
    // The last sample is taken one second before the end, while the load still runs.
    const end = Math.max(1, seconds - 1)
    for (let t = 0; t < end; t += options.sampleEvery) await at(t)
    await at(end)
    load = await generator
  } finally {
    await stopAll()
    if (options.keep) log(`raw files kept in ${runDir}`)
    else rmSync(runDir, { recursive: true, force: true })
  }

  const first = samples[0]!
  const last = samples[samples.length - 1]!
  const rows = [['t (s)', 'RSS MiB', 'vs first', 'heap used MiB', 'vs first', 'requests']]
  for (const s of samples) {
    rows.push([String(s.t), fmt(s.rssMiB, 1), `${signed(((s.rssMiB - first.rssMiB) / first.rssMiB) * 100, 1)}%`, fmt(s.heapUsedMiB, 1), `${signed(((s.heapUsedMiB - first.heapUsedMiB) / first.heapUsedMiB) * 100, 1)}%`, fmt(s.requests)])
  }
  console.log(`\n${table(rows)}\n`)
  const rssGrowth = ((last.rssMiB - first.rssMiB) / first.rssMiB) * 100
  const heapGrowth = ((last.heapUsedMiB - first.heapUsedMiB) / first.heapUsedMiB) * 100
  console.log(
    `load: ${fmt(load.achievedRate)} req/s achieved, p50 ${fmt(load.p50Ms, 2)} ms, p99 ${fmt(load.p99Ms, 2)} ms, p99.9 ${fmt(load.p999Ms, 2)} ms, ` +
      `max ${fmt(load.maxMs, 1)} ms, ${load.errors} failed, ${load.non200} non-200`,
  )
  console.log(`heap used: ${fmt(first.heapUsedMiB, 1)} -> ${fmt(last.heapUsedMiB, 1)} MiB (${signed(heapGrowth, 1)}%; informational: the heap swings with GC)`)
  const pass = rssGrowth <= options.maxGrowthPct
  console.log(`${pass ? 'PASS' : 'FAIL'}  RSS ${fmt(first.rssMiB, 1)} -> ${fmt(last.rssMiB, 1)} MiB: ${signed(rssGrowth, 1)}% (limit +${options.maxGrowthPct}%)`)

  const dir = options.resultsDir
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `soak-${date.replace(/\.\d+Z$/, 'Z').replaceAll(':', '-')}.json`)
  const text = `${JSON.stringify({ date, node: runtime.version, settings: options, samples, rssGrowthPct: rssGrowth, heapGrowthPct: heapGrowth, pass, load }, null, 2)}\n`
  writeFileSync(file, text)
  writeFileSync(join(dir, 'soak-latest.json'), text)
  console.log(`wrote ${file} and soak-latest.json`)
  return pass ? 0 : 1
}

runMain({
  usage: SOAK_USAGE,
  parse: soakOptions,
  run: soak,
  logStamp: 'clock',
  describeFailure: (error) => `soak failed: ${messageOf(error)}`,
  failureExitCode: 1,
})
