// npm run loadtest:memory [-- --short] [--node PATH]
//
// The gateway's memory as deployed (its V8 flags, the bench's default chain with the access log),
// in two fresh gateway processes in front of the bench's node:http upstream, on 127.0.0.1 only:
//   1. idle: RSS once started and settled, no traffic; then wrk -c50 for N seconds (the bench's
//      load), RSS right after it (what `npm run bench` reports as "RSS after load") and its peak;
//   2. idle keep-alive connections: a second gateway, warmed up with a few requests, then K client
//      connections that each send one request, read the answer and stay open; KiB per connection is
//      (RSS with them - RSS before) / K, medians of a few samples each.
// A second process for 2 so that neither measure inherits the other's garbage or freed pages.
// Judged against issue 17's targets (idle < 64 MiB, after load < 100 MiB, <= 8 KiB per idle
// connection); writes memory-latest.json. Exit 0 (1 with --strict when a target is missed).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { cpus, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parse as parseYaml, stringify } from 'yaml'
import { GATEWAY_NODE_FLAGS } from '../../gateway/src/core/node-flags.js'
import { gatewayConfig } from '../bench/topology.js'
import { runWrk } from '../bench/wrk.js'
import { CLK_TCK, NCPU, groupTicks } from '../bench/procfs.js'
import { launchGateway } from '../lib/gateway.js'
import { log, sleep } from '../lib/log.js'
import { runMain, stackOf } from '../lib/main.js'
import { HELP_FLAG, numberFlag, resultsDirFlag, UsageError } from '../lib/options.js'
import { GATEWAY_MAIN, REPO_ROOT, requireBuilt } from '../lib/paths.js'
import { freePort } from '../lib/ports.js'
import { startProcess, stopProcess, waitForBody, waitForLine, type Started } from '../lib/processes.js'
import { requireTools } from '../lib/tools.js'
import { scrapeMetrics, metricSum } from '../lib/metrics.js'
import { fmt, round, table } from '../zero-downtime/util.js'

const USAGE = `usage: node dist/loadtest/memory/run.js [--short] [options]
  --short                 5 s of load and 2,000 idle connections instead of 20 s and 5,000 (CI)
  --node PATH             the node that runs the gateway (default: the one running this script)
  --node-flags="FLAGS"    the gateway's node flags (default as deployed: ${GATEWAY_NODE_FLAGS.join(' ')}; "" for none)
  --load-seconds N        seconds of wrk load
  --connections N         wrk's connections (default 50, as npm run bench)
  --idle-connections K    idle keep-alive connections opened in phase 2
  --settle S              seconds to wait before each idle sample (default 5)
  --phases LIST           load,idle-connections (default both)
  --results-dir DIR       where memory-latest.json goes (default loadtest/results)
  --strict                exit 1 when a target is missed
  --keep                  keep the temp dir (configs, logs, the access log)`

const MIB = 1024
/** Issue 17's targets, in KiB. */
const TARGETS = { idleKiB: 64 * MIB, afterLoadKiB: 100 * MIB, perIdleConnectionKiB: 8 }
/** RSS samples per reading, SAMPLE_GAP_MS apart; the reading is their median. */
const SAMPLES = 5
const SAMPLE_GAP_MS = 400
/** The upstream's answer (loadtest/bench/upstream.ts). */
const BODY_BYTES = 1024
/** Connections opened at once in phase 2. */
const OPEN_BATCH = 100
/** File descriptors this process and the gateway need beyond one per idle connection. */
const FD_MARGIN = 512
const REEXEC_MARK = 'WAYPOST_MEMORY_NOFILE_RAISED'

type Phase = 'load' | 'idle-connections'
const PHASES: readonly Phase[] = ['load', 'idle-connections']

interface Options {
  node: string
  nodeFlags: string[]
  loadSeconds: number
  connections: number
  idleConnections: number
  settleS: number
  phases: Phase[]
  resultsDir: string
  strict: boolean
  keep: boolean
  short: boolean
}

function parse(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...HELP_FLAG,
      short: { type: 'boolean', default: false },
      node: { type: 'string' },
      'node-flags': { type: 'string' },
      'load-seconds': { type: 'string' },
      connections: { type: 'string' },
      'idle-connections': { type: 'string' },
      settle: { type: 'string' },
      phases: { type: 'string' },
      'results-dir': { type: 'string' },
      strict: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
    },
  })
  if (values.help === true) return 'help'
  const short = values.short === true
  const phases = (values.phases ?? PHASES.join(',')).split(',').map((name) => {
    if (!PHASES.includes(name as Phase)) throw new UsageError(`--phases: unknown phase "${name}" (expected ${PHASES.join(', ')})`)
    return name as Phase
  })
  return {
    node: values.node ?? process.execPath,
    nodeFlags: (values['node-flags'] ?? GATEWAY_NODE_FLAGS.join(' ')).split(/\s+/).filter(Boolean),
    loadSeconds: numberFlag(values['load-seconds'], 'load-seconds', short ? 5 : 20, 1),
    connections: numberFlag(values.connections, 'connections', 50, 1),
    idleConnections: numberFlag(values['idle-connections'], 'idle-connections', short ? 2000 : 5000, 1),
    settleS: numberFlag(values.settle, 'settle', 5),
    phases,
    resultsDir: resultsDirFlag(values['results-dir']),
    strict: values.strict === true,
    keep: values.keep === true,
    short,
  }
}

// ---- /proc readings ----------------------------------------------------------------------------

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (match === null) throw new Error(`/proc/${pid}/status has no ${field}`)
  return Number(match[1])
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

interface RssReading {
  /** Median of the samples (KiB). */
  rssKiB: number
  /** Its anonymous part (heaps, buffers): what the process allocated rather than mapped from files. */
  anonKiB: number
  samplesKiB: number[]
}

async function readRss(pid: number): Promise<RssReading> {
  const samples: number[] = []
  const anon: number[] = []
  for (let i = 0; i < SAMPLES; i++) {
    if (i > 0) await sleep(SAMPLE_GAP_MS)
    samples.push(statusKiB(pid, 'VmRSS'))
    anon.push(statusKiB(pid, 'RssAnon'))
  }
  return { rssKiB: median(samples), anonKiB: median(anon), samplesKiB: samples }
}

interface HeapFigures {
  heapUsedKiB: number
  heapTotalKiB: number
  externalKiB: number
}

/** The V8 heap and external memory the gateway's /metrics reports (prom-client's default metrics), in KiB. */
async function heapFigures(adminPort: number): Promise<HeapFigures> {
  const text = await scrapeMetrics(adminPort)
  const kib = (name: string): number => round(metricSum(text, name) / 1024, 0)
  return { heapUsedKiB: kib('nodejs_heap_size_used_bytes'), heapTotalKiB: kib('nodejs_heap_size_total_bytes'), externalKiB: kib('nodejs_external_memory_bytes') }
}

// ---- processes ---------------------------------------------------------------------------------

interface Gateway {
  process: Started
  port: number
  adminPort: number
}

async function startGateway(name: string, dir: string, upstreamPort: number, options: Options, keepAliveS: number): Promise<Gateway> {
  const port = await freePort()
  const adminPort = await freePort()
  // The bench's gateway-default config; only the idle timeout is longer, so phase 2's connections stay.
  const doc = parseYaml(gatewayConfig('gateway-default', port, adminPort, upstreamPort)) as { listen: Record<string, unknown> }
  doc.listen.keepAliveTimeout = `${keepAliveS}s`
  const configFile = join(dir, `${name}.yaml`)
  writeFileSync(configFile, `# ${name}: gateway-default (loadtest/bench/topology.ts), written by loadtest/memory/run.ts\n${stringify(doc)}`)
  const env = { ...process.env }
  for (const key of Object.keys(env)) if (key.startsWith('WAYPOST_') || key.startsWith('OTEL_')) delete env[key]
  const started = launchGateway(name, configFile, { node: options.node, nodeFlags: options.nodeFlags, cpus: serverCpus(), logFile: join(dir, `${name}.log`), env, cwd: dir })
  await waitForLine(started, (line) => line.includes('"msg":"waypost ready"'), 20_000)
  return { process: started, port, adminPort }
}

const serverCpus = (): string => '0'
const loadCpus = (): string => (NCPU >= 2 ? '1' : '0')

// ---- phase 1: idle, then load ------------------------------------------------------------------

interface LoadPhase {
  idle: RssReading & { heap: HeapFigures }
  load: { seconds: number; connections: number; requests: number; rps: number; errors: number; gatewayCpuUsPerReq: number }
  /** Peak RSS during the load (VmHWM). */
  peakKiB: number
  afterLoad: RssReading & { heap: HeapFigures }
}

async function loadPhase(dir: string, upstreamPort: number, options: Options): Promise<LoadPhase> {
  log('phase 1: a fresh gateway, idle')
  const gateway = await startGateway('gateway-load', dir, upstreamPort, options, 65)
  try {
    await sleep(options.settleS * 1000)
    const idleRss = await readRss(gateway.process.pid)
    const idle = { ...idleRss, heap: await heapFigures(gateway.adminPort) }
    log(`  idle RSS ${fmt(idle.rssKiB / MIB)} MiB (heap used ${fmt(idle.heap.heapUsedKiB / MIB)} MiB)`)
    log(`  wrk -t1 -c${options.connections} -d${options.loadSeconds}s`)
    const ticks0 = groupTicks(gateway.process.pid)
    const wrk = await runWrk({ port: gateway.port, seconds: options.loadSeconds, connections: options.connections, cpus: loadCpus(), logFile: join(dir, 'wrk.txt') })
    const cpuSeconds = (groupTicks(gateway.process.pid) - ticks0) / CLK_TCK
    const peakKiB = statusKiB(gateway.process.pid, 'VmHWM')
    // As `npm run bench` samples it: at once, the load just over.
    const afterRss = await readRss(gateway.process.pid)
    const afterLoad = { ...afterRss, heap: await heapFigures(gateway.adminPort) }
    const load = { seconds: options.loadSeconds, connections: options.connections, requests: wrk.requests, rps: round(wrk.rps, 0), errors: wrk.errors, gatewayCpuUsPerReq: round((cpuSeconds * 1e6) / wrk.requests, 1) }
    log(`  ${fmt(load.rps, 0)} req/s, gateway ${fmt(load.gatewayCpuUsPerReq)} us/req; RSS after load ${fmt(afterLoad.rssKiB / MIB)} MiB, peak ${fmt(peakKiB / MIB)} MiB`)
    return { idle, load, peakKiB, afterLoad }
  } finally {
    await stopProcess(gateway.process, 5000)
  }
}

// ---- phase 2: idle keep-alive connections ------------------------------------------------------

/** One keep-alive connection that has sent one request and read its whole answer; stays open. */
function openIdleConnection(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    let received = Buffer.alloc(0)
    let done = false
    const fail = (error: Error): void => {
      if (done) return
      done = true
      socket.destroy()
      reject(error)
    }
    socket.setTimeout(10_000, () => fail(new Error('no answer within 10 s')))
    socket.once('error', fail)
    socket.once('close', () => fail(new Error('closed before the answer was complete')))
    socket.on('data', (chunk: Buffer) => {
      if (done) return
      received = Buffer.concat([received, chunk])
      const end = received.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = received.subarray(0, end).toString('latin1')
      if (!head.startsWith('HTTP/1.1 200')) return fail(new Error(`answer: ${head.split('\r\n', 1)[0]}`))
      if (received.length - end - 4 < BODY_BYTES) return
      done = true
      socket.setTimeout(0)
      socket.removeAllListeners('close')
      socket.removeAllListeners('error')
      socket.on('error', () => undefined)
      resolve(socket)
    })
    socket.write('GET / HTTP/1.1\r\nhost: memory.test\r\n\r\n')
  })
}

async function openIdleConnections(port: number, count: number): Promise<Socket[]> {
  const sockets: Socket[] = []
  while (sockets.length < count) {
    const batch = Math.min(OPEN_BATCH, count - sockets.length)
    sockets.push(...(await Promise.all(Array.from({ length: batch }, () => openIdleConnection(port)))))
  }
  return sockets
}

interface IdleConnectionsPhase {
  count: number
  before: RssReading & { heap: HeapFigures }
  with: RssReading & { heap: HeapFigures }
  kibPerConnection: number
  anonKibPerConnection: number
  heapUsedKibPerConnection: number
  heapTotalKibPerConnection: number
  externalKibPerConnection: number
  /** Connections the gateway closed before the end of the measurement (should be 0). */
  closedEarly: number
}

async function idleConnectionsPhase(dir: string, upstreamPort: number, options: Options): Promise<IdleConnectionsPhase> {
  log(`phase 2: a fresh gateway, ${options.idleConnections} idle keep-alive connections`)
  const gateway = await startGateway('gateway-idle', dir, upstreamPort, options, 600)
  const sockets: Socket[] = []
  try {
    // Warm up: the code paths of a proxied request compiled, and as many upstream sockets open as
    // the connections below will use (they are opened OPEN_BATCH at a time), so those are not counted.
    const warm = await openIdleConnections(gateway.port, OPEN_BATCH)
    for (const socket of warm) socket.destroy()
    await sleep(options.settleS * 1000)
    const beforeRss = await readRss(gateway.process.pid)
    const before = { ...beforeRss, heap: await heapFigures(gateway.adminPort) }
    log(`  before: RSS ${fmt(before.rssKiB / MIB)} MiB; opening ${options.idleConnections} connections`)
    sockets.push(...(await openIdleConnections(gateway.port, options.idleConnections)))
    let closedEarly = 0
    for (const socket of sockets) socket.once('close', () => closedEarly++)
    await sleep(options.settleS * 1000)
    const withRss = await readRss(gateway.process.pid)
    const withThem = { ...withRss, heap: await heapFigures(gateway.adminPort) }
    const per = (after: number, was: number): number => round((after - was) / options.idleConnections, 2)
    const result = {
      count: options.idleConnections,
      before,
      with: withThem,
      kibPerConnection: per(withThem.rssKiB, before.rssKiB),
      anonKibPerConnection: per(withThem.anonKiB, before.anonKiB),
      heapUsedKibPerConnection: per(withThem.heap.heapUsedKiB, before.heap.heapUsedKiB),
      heapTotalKibPerConnection: per(withThem.heap.heapTotalKiB, before.heap.heapTotalKiB),
      externalKibPerConnection: per(withThem.heap.externalKiB, before.heap.externalKiB),
      closedEarly,
    }
    log(`  with them: RSS ${fmt(withThem.rssKiB / MIB)} MiB: ${fmt(result.kibPerConnection, 2)} KiB per connection (V8 heap used ${fmt(result.heapUsedKibPerConnection, 2)}), ${closedEarly} closed early`)
    return result
  } finally {
    for (const socket of sockets) socket.destroy()
    await stopProcess(gateway.process, 5000)
  }
}

// ---- the run -----------------------------------------------------------------------------------

function softNoFile(): { soft: number; hard: number } {
  const read = (flag: string): number => {
    const out = spawnSync('sh', ['-c', `ulimit ${flag}`], { encoding: 'utf8' }).stdout.trim()
    return out === 'unlimited' ? Infinity : Number(out)
  }
  return { soft: read('-Sn'), hard: read('-Hn') }
}

/**
 * K idle connections take K descriptors here and K in the gateway: raise the soft limit to what is
 * needed (the hard limit allowing) by running this script again under `ulimit -n`, which the
 * gateway inherits. Returns the exit code of that run, or undefined when the limit is enough.
 */
function raiseNoFileLimit(options: Options): Promise<number> | undefined {
  if (!options.phases.includes('idle-connections')) return undefined
  const needed = options.idleConnections + FD_MARGIN
  const { soft, hard } = softNoFile()
  if (soft >= needed) return undefined
  if (process.env[REEXEC_MARK] !== undefined || hard < needed) {
    throw new UsageError(`--idle-connections ${options.idleConnections} needs ${needed} open files, but ulimit -n is ${soft} (hard ${hard}): raise the hard limit or open fewer connections`)
  }
  log(`raising the open-file limit from ${soft} to ${needed} (ulimit -n) and running again`)
  const child = spawnSync('sh', ['-c', `ulimit -n ${needed} && exec "$@"`, 'sh', process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, [REEXEC_MARK]: '1' } })
  return Promise.resolve(child.status ?? 1)
}

function nodeVersion(node: string): string {
  const result = spawnSync(node, ['-v'], { encoding: 'utf8' })
  if (result.status !== 0) throw new UsageError(`--node ${node}: cannot run it (${result.error?.message ?? result.stderr})`)
  return result.stdout.trim()
}

async function run(options: Options): Promise<number> {
  const reexec = raiseNoFileLimit(options)
  if (reexec !== undefined) return reexec
  requireBuilt([GATEWAY_MAIN, join(REPO_ROOT, 'dist/loadtest/bench/upstream.js')])
  if (options.phases.includes('load')) requireTools(['wrk', 'taskset'], 'apt-get install -y wrk')
  else requireTools(['taskset'], 'apt-get install -y util-linux')
  const gatewayNode = nodeVersion(options.node)
  const dir = mkdtempSync(join(tmpdir(), 'waypost-memory-'))
  if (!options.keep) process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  const date = new Date().toISOString()
  console.log(`waypost memory (${options.short ? 'short' : 'full'}) ${date}: gateway on ${gatewayNode} (${options.node}) with ${options.nodeFlags.join(' ') || 'no flags'}; ${NCPU} CPUs`)
  const upstreamPort = await freePort()
  const upstream = startProcess('upstream', process.execPath, [join(REPO_ROOT, 'dist/loadtest/bench/upstream.js'), String(upstreamPort)], { logFile: join(dir, 'upstream.log'), cpus: serverCpus() })
  let load: LoadPhase | undefined
  let idle: IdleConnectionsPhase | undefined
  try {
    await waitForBody(upstream, upstreamPort, BODY_BYTES)
    if (options.phases.includes('load')) load = await loadPhase(dir, upstreamPort, options)
    if (options.phases.includes('idle-connections')) idle = await idleConnectionsPhase(dir, upstreamPort, options)
  } finally {
    await stopProcess(upstream, 5000)
  }

  const checks: Array<{ what: string; value: number; unit: string; target: string; pass: boolean }> = []
  if (load !== undefined) {
    checks.push({ what: 'RSS idle', value: round(load.idle.rssKiB / MIB, 1), unit: 'MiB', target: '< 64 MiB', pass: load.idle.rssKiB < TARGETS.idleKiB })
    checks.push({ what: `RSS after ${options.loadSeconds} s of wrk -c${options.connections}`, value: round(load.afterLoad.rssKiB / MIB, 1), unit: 'MiB', target: '< 100 MiB', pass: load.afterLoad.rssKiB < TARGETS.afterLoadKiB })
  }
  if (idle !== undefined) {
    checks.push({ what: `per idle keep-alive connection (${idle.count})`, value: idle.kibPerConnection, unit: 'KiB', target: '<= 8 KiB', pass: idle.kibPerConnection <= TARGETS.perIdleConnectionKiB && idle.closedEarly === 0 })
  }
  const rows = [['measure', 'value', 'target', 'verdict'], ...checks.map((check) => [check.what, `${fmt(check.value, check.unit === 'KiB' ? 2 : 1)} ${check.unit}`, check.target, check.pass ? 'PASS' : 'FAIL'])]
  console.log(table(rows))
  if (load !== undefined) {
    console.log(`  load: ${fmt(load.load.rps, 0)} req/s, gateway CPU ${fmt(load.load.gatewayCpuUsPerReq)} us/req (rough on a shared machine), ${load.load.errors} errors; peak RSS ${fmt(load.peakKiB / MIB)} MiB`)
  }
  if (idle !== undefined) {
    console.log(`  idle connections: RSS ${fmt(idle.before.rssKiB / MIB)} -> ${fmt(idle.with.rssKiB / MIB)} MiB; per connection: anonymous ${fmt(idle.anonKibPerConnection, 2)} KiB, V8 heap used ${fmt(idle.heapUsedKibPerConnection, 2)} KiB (committed ${fmt(idle.heapTotalKibPerConnection, 2)}), external ${fmt(idle.externalKibPerConnection, 2)} KiB; ${idle.closedEarly} closed early`)
  }
  const pass = checks.every((check) => check.pass)
  const report = {
    kind: 'memory',
    date,
    mode: options.short ? 'short' : 'full',
    machine: { runner: process.version, gatewayNode, kernel: release(), cpus: NCPU, cpuModel: cpus()[0]?.model ?? 'unknown' },
    nodeFlags: options.nodeFlags,
    config: 'gateway-default (loadtest/bench/topology.ts)',
    load,
    idleConnections: idle,
    checks,
    pass,
  }
  mkdirSync(options.resultsDir, { recursive: true })
  const file = join(options.resultsDir, 'memory-latest.json')
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`)
  log(`written ${file}${options.keep ? `; run dir kept: ${dir}` : ''}`)
  return options.strict && !pass ? 1 : 0
}

runMain({ usage: USAGE, parse, run, logStamp: 'elapsed', describeFailure: (error) => `memory: ${stackOf(error)}`, failureExitCode: 1 })
