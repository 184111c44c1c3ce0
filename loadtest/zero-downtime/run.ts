// npm run loadtest:zero-downtime [-- --short]
//
// Zero-downtime proof under steady load: the upstream stub, two gateway processes sharing one policy
// file, HAProxy in front of them health-checking each gateway's admin /ready, and an open-loop load
// generator (keep-alive and new connections, GETs and POSTs with verified echoes) at a fixed rate.
// While the load runs: (1) reloads by file edit, SIGHUP and POST /reload, one with an invalid file;
// (2) rolling restarts of the gateways with SIGTERM (drain); (3) SIGKILL + restart of the stub.
// Exit 0 when no request failed outside step 3's outage window and every check held; 1 otherwise;
// 2 when the scenario itself could not run. Everything runs on 127.0.0.1, in process groups of its
// own that are stopped on exit, on error and on Ctrl-C; every wait is bounded.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { gatewayConfig, haproxyConfig, type Ports } from './configs.js'
import { LoadGenerator, type Sample } from './load.js'
import { zeroDowntimeMix } from './mix.js'
import { parseOptions, USAGE, type Options } from './options.js'
import { startGatewayProcess } from '../lib/gateway.js'
import { log, now } from '../lib/log.js'
import { gatewayMetrics } from '../lib/metrics.js'
import { GATEWAY_MAIN, requireBuilt, STUB_CLI } from '../lib/paths.js'
import { freePort } from '../lib/ports.js'
import { runMain, stackOf } from '../lib/main.js'
import { onInterrupt, stopAll, stopProcess, tail } from '../lib/processes.js'
import { startStubProcess } from '../lib/stub.js'
import { buildReport, printReport, writeReport, writeSamples } from './report.js'
import { event, pause, reloadPlan, reloads, rollingRestart, upstreamKill, writeConfig, type Context, type OutageWindow, type RestartRecord } from './steps.js'
import { haproxyCommand, haproxyPath, inFlightFromMetrics, parseSessions, startHaproxy, waitHaproxyServer } from './topology.js'

async function allocatePorts(): Promise<Ports> {
  const taken = new Set<number>()
  const next = async (): Promise<number> => {
    for (;;) {
      const port = await freePort()
      if (!taken.has(port)) {
        taken.add(port)
        return port
      }
    }
  }
  return {
    stub: await next(),
    gateways: [
      { name: 'gw-a', proxy: await next(), admin: await next() },
      { name: 'gw-b', proxy: await next(), admin: await next() },
    ],
    lbKeepAlive: await next(),
    lbClose: await next(),
    lbStats: await next(),
  }
}

/**
 * Requests that stay unanswered for 5 s: records where they are -- HAProxy's sessions (which
 * gateway, request sent or not, response started or not) and each gateway's in-flight gauge -- into
 * stuck-<t>.txt and the timeline, while they are still stuck.
 */
async function dumpStuck(ctx: Context, haproxySocket: string, stalled: readonly Sample[]): Promise<void> {
  const t = Math.round((now() - ctx.loadStartedAt) / 1000)
  const sessions = await haproxyCommand(haproxySocket, 'show sess all').catch((error: unknown) => String(error))
  const gauges: string[] = []
  for (const gw of ctx.gateways) {
    const metrics = await gatewayMetrics(gw.admin).catch(() => '')
    gauges.push(`${gw.name} in flight ${metrics === '' ? '?' : inFlightFromMetrics(metrics)}`)
  }
  const old = parseSessions(sessions).filter((session) => session.ageS >= 4 && session.requestState !== 'MSG_RQBEFORE')
  const summary = old.map((s) => `${s.frontend}->${s.server} age ${s.ageS}s req ${s.requestState} rsp ${s.responseState}`)
  writeFileSync(join(ctx.dir, `stuck-${t}s.txt`), `stalled requests: ${stalled.map((sample) => `zd-${sample.id}`).join(' ')}\n${gauges.join('\n')}\n\n### show sess all\n${sessions}`)
  event(ctx, `${stalled.length} request(s) unanswered for 5 s (${stalled.map((sample) => `zd-${sample.id}`).join(' ')}); haproxy sessions older than 4 s: ${summary.join('; ') || 'none'}; ${gauges.join(', ')} (stuck-${t}s.txt)`)
}

async function run(options: Options): Promise<number> {
  requireBuilt([GATEWAY_MAIN, STUB_CLI])
  const haproxy = haproxyPath()
  const dir = mkdtempSync(join(tmpdir(), 'waypost-zero-downtime-'))
  const configDir = join(dir, 'config')
  mkdirSync(configDir)
  log(`run dir (configs, logs, report.json): ${dir}`)

  const current: { load?: LoadGenerator; ctx?: Context } = {}
  onInterrupt(async () => {
    if (current.ctx !== undefined) current.ctx.aborted = true
    if (current.load !== undefined) {
      const samples = await current.load.stop(1000)
      log(`interrupted: ${samples.length} requests due, ${samples.filter((s) => s.ok).length} ok, ${samples.filter((s) => !s.ok).length} failed; run dir ${dir}`)
    }
  })

  const ports = await allocatePorts()
  const stub = await startStubProcess(join(dir, 'stub-1.log'), ports.stub)
  log(`upstream stub on ${stub.url} (pid ${stub.process.pid})`)
  const configFile = join(configDir, 'waypost.yaml')
  writeConfig(configFile, gatewayConfig(stub.url, 0))
  const gateways = await Promise.all(
    ports.gateways.map((gw) => startGatewayProcess(gw.name, configFile, join(dir, `${gw.name}-1.log`), `127.0.0.1:${gw.proxy}`, `127.0.0.1:${gw.admin}`)),
  )
  for (const gw of gateways) log(`${gw.name} on ${gw.listen}, admin ${gw.admin} (pid ${gw.process.pid})`)
  const haproxyFile = join(dir, 'haproxy.cfg')
  const haproxySocket = join(dir, 'haproxy.sock')
  writeFileSync(haproxyFile, haproxyConfig(ports, haproxySocket))
  const lb = await startHaproxy(haproxy, haproxyFile, join(dir, 'haproxy.log'))
  try {
    await Promise.all(ports.gateways.map((gw) => waitHaproxyServer(ports.lbStats, 'gateways', gw.name, 'UP', 10_000)))
  } catch (error) {
    throw new Error(`${(error as Error).message}; haproxy.log:\n${tail(join(dir, 'haproxy.log'))}`)
  }
  log(`haproxy (pid ${lb.pid}): keep-alive frontend 127.0.0.1:${ports.lbKeepAlive}, new-connection frontend 127.0.0.1:${ports.lbClose}, stats 127.0.0.1:${ports.lbStats}/stats; both gateways UP`)

  const ctx: Context = {
    dir,
    configFile,
    ports,
    stubUrl: stub.url,
    stub,
    stubGeneration: 1,
    gateways,
    gatewayGeneration: gateways.map(() => 1),
    haproxy: lb,
    variant: 0,
    problems: [],
    timeline: [],
    step: 'warmup',
    loadStartedAt: 0,
    drain: { delayMs: 1000, timeoutMs: 10_000 },
    aborted: false,
  }
  current.ctx = ctx
  const generator = new LoadGenerator({
    rate: options.rate,
    maxInFlight: options.maxInFlight,
    timeoutMs: options.requestTimeoutMs,
    poolConnections: 64,
    plan: zeroDowntimeMix({ keepAliveOrigin: `http://127.0.0.1:${ports.lbKeepAlive}`, freshOrigin: `http://127.0.0.1:${ports.lbClose}`, freshRatio: options.freshRatio, seed: options.seed }),
    step: () => ctx.step,
  })
  current.load = generator

  // The whole scenario is bounded: past the deadline it is abandoned (exit 2).
  const watchdog = setTimeout(() => {
    log(`the scenario did not finish within ${options.deadlineS} s: aborting (run dir ${dir})`)
    void stopAll(3000).finally(() => process.exit(2))
  }, options.deadlineS * 1000)
  watchdog.unref()

  const plan = reloadPlan(options.reloads)
  const restarts: RestartRecord[] = []
  ctx.loadStartedAt = now()
  generator.begin()
  const reported = new Set<number>()
  let dumping = false
  const stallWatch = setInterval(() => {
    const stalled = generator.stalled(5000).filter((sample) => !reported.has(sample.id))
    if (stalled.length === 0 || dumping) return
    for (const sample of stalled) reported.add(sample.id)
    dumping = true
    void dumpStuck(ctx, haproxySocket, stalled).finally(() => (dumping = false))
  }, 1000)
  stallWatch.unref()
  event(ctx, `load: ${options.rate} req/s, ${Math.round(options.freshRatio * 100)}% on new connections`)
  await pause(ctx, options.warmupS * 1000)

  ctx.step = 'reloads'
  event(ctx, `${plan.length} reloads every ${options.reloadEveryMs} ms: ${plan.join(', ')}`)
  await reloads(ctx, plan, options.reloadEveryMs)
  await pause(ctx, options.settleS * 1000)

  if (options.rolling > 0) {
    ctx.step = 'rolling-restart'
    for (let round = 1; round <= options.rolling; round++) {
      restarts.push(...(await rollingRestart(ctx, round, options.rollingPauseMs)))
    }
    await pause(ctx, options.settleS * 1000)
  }

  ctx.step = 'upstream-kill'
  const outage: OutageWindow = await upstreamKill(ctx, options.downMs)
  await pause(ctx, options.settleS * 1000)

  ctx.step = 'cooldown'
  event(ctx, `steady load for ${options.cooldownS} s`)
  await pause(ctx, options.cooldownS * 1000)

  const durationS = (now() - ctx.loadStartedAt) / 1000
  const samples = await generator.stop(options.requestTimeoutMs + 2000)
  clearInterval(stallWatch)
  event(ctx, `load stopped after ${durationS.toFixed(1)} s`)
  clearTimeout(watchdog)

  // Stop everything: gateways first (they drain), then the load balancer and the stub.
  for (const gw of ctx.gateways) await stopProcess(gw.process, 15_000)
  await stopAll(5000)

  const gatewayLogs = readdirSync(dir)
    .filter((name) => /^gw-.*\.log$/.test(name))
    .sort()
    .map((name) => join(dir, name))
  const report = await buildReport({
    form: options.short ? 'short' : 'long',
    rate: options.rate,
    durationS,
    samples,
    outage,
    restarts,
    timeline: ctx.timeline,
    problems: ctx.problems,
    reloadPlan: plan,
    sendLagMs: generator.sendLag,
    maxInFlightSeen: generator.maxInFlightSeen,
    haproxyLog: join(dir, 'haproxy.log'),
    gatewayLogs,
    dir,
    loadStartedAt: ctx.loadStartedAt,
  })
  writeReport(report, join(dir, 'report.json'))
  if (options.json !== undefined) writeReport(report, resolve(options.json))
  writeSamples(samples, ctx.loadStartedAt, join(dir, 'samples.ndjson'))
  printReport(report, dir)
  if (report.verdict === 'PASS' && !options.keep) {
    rmSync(dir, { recursive: true, force: true })
    console.log(`(run dir removed: the run passed; --keep keeps it)`)
  }
  return report.verdict === 'PASS' ? 0 : 1
}

runMain({
  usage: USAGE,
  parse: parseOptions,
  run,
  logStamp: 'elapsed',
  describeFailure: (error) => `zero-downtime: ${stackOf(error)}`,
  failureExitCode: 2,
  abortGraceMs: 3000,
})
