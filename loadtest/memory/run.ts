// npm run loadtest:memory [-- --short] [--node 24|20|current|PATH]
//
// The gateway's memory as deployed (its V8 flags, the bench's default chain with the access log),
// beside the floor measured the same way in the same run: the bench's undici-proxy (node:http and
// an undici Pool, nothing else) on the same node with the same heap flags, so what the runtime
// itself costs is told apart from what the gateway adds. Each in fresh processes in front of the
// bench's node:http upstream, on 127.0.0.1 only:
//   1. idle: RSS once started and settled, no traffic; then wrk -c50 for N seconds (the bench's
//      load), RSS right after it (what `npm run bench` reports as "RSS after load") and its peak;
//   2. idle keep-alive connections: a second process, warmed up with a few requests, then K client
//      connections that each send one request, read the answer and stay open; KiB per connection is
//      (RSS with them - RSS before) / K, medians of a few samples each. The full form also measures
//      the floor's parts the same way (connection-parts.ts): a node:net server alone, and with one
//      of node's HTTP parsers per connection, so the table can say where node:http's cost lies.
// A second process for 2 so that neither measure inherits the other's garbage or freed pages.
// The gateway is judged against issue 17's absolute targets (idle < 64 MiB, after load < 100 MiB,
// <= 8 KiB per idle connection), the floor's figures beside it; writes memory-latest.json. Exit 0
// (1 with --strict when a target is missed).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { cpus, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parse as parseYaml, stringify } from 'yaml'
import { GATEWAY_NODE_FLAGS } from '../../gateway/src/core/node-flags.js'
import { deployedEnvironment, deployedEnvironmentText, gatewayConfig, gatewayEnv, startBenchUpstream, startFloorProcess } from '../bench/topology.js'
import { runWrk } from '../bench/wrk.js'
import { CLK_TCK, NCPU, groupTicks } from '../bench/procfs.js'
import { launchGateway } from '../lib/gateway.js'
import { resolveRuntime, type Runtime } from '../lib/runtime.js'
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
  --short                 5 s of load and 2,000 idle connections instead of 20 s and 5,000, without
                          the parts of node:http's cost per connection (CI)
  --node 24|20|current|PATH  the node that runs the gateway and the floor (default 24, as npm run bench)
  --node-flags="FLAGS"    the gateway's and the floor's node flags (default as deployed: ${GATEWAY_NODE_FLAGS.join(' ')}; "" for none)
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
  /** The node that runs the gateway and the floor, resolved from --node (lib/runtime.ts). */
  runtime: Runtime
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
    runtime: resolveRuntime(values.node ?? '24'),
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

/**
 * The V8 heap and external memory the gateway's /metrics reports (prom-client's default metrics), in
 * KiB; undefined for the floor, which has no metrics.
 */
async function heapFigures(adminPort: number | undefined): Promise<HeapFigures | undefined> {
  if (adminPort === undefined) return undefined
  const text = await scrapeMetrics(adminPort)
  const kib = (name: string): number => round(metricSum(text, name) / 1024, 0)
  return { heapUsedKiB: kib('nodejs_heap_size_used_bytes'), heapTotalKiB: kib('nodejs_heap_size_total_bytes'), externalKiB: kib('nodejs_external_memory_bytes') }
}

// ---- processes ---------------------------------------------------------------------------------

/**
 * What is measured: the gateway, or the floor beside it; in phase 2 also the floor's parts, a
 * node:net server alone (`socket`) and with node's HTTP parser per connection (`parser`).
 */
type SubjectKind = 'gateway' | 'floor' | ConnectionPart
type ConnectionPart = 'socket' | 'parser'
const SUBJECTS = ['gateway', 'floor'] as const
const CONNECTION_PARTS: readonly ConnectionPart[] = ['socket', 'parser']

interface Subject {
  process: Started
  port: number
  /** The gateway's admin port (heap figures from /metrics); undefined for the floor. */
  adminPort?: number
}

/** `keepAliveS`: the floor keeps idle connections 65 s (undici-proxy.ts), longer than phase 2 lasts. */
function startSubject(kind: SubjectKind, phase: string, dir: string, upstreamPort: number, options: Options, keepAliveS: number): Promise<Subject> {
  if (kind === 'gateway') return startGateway(`gateway-${phase}`, dir, upstreamPort, options, keepAliveS)
  if (kind === 'floor') return startFloor(`floor-${phase}`, dir, upstreamPort, options)
  return startConnectionPart(kind, dir, options)
}

/** A part of the floor's cost per connection (connection-parts.ts), on the same node with the same flags. */
async function startConnectionPart(part: ConnectionPart, dir: string, options: Options): Promise<Subject> {
  const port = await freePort()
  const started = startProcess(part, options.runtime.path, [...options.nodeFlags, join(REPO_ROOT, 'dist/loadtest/memory/connection-parts.js'), part, String(port)], { cpus: serverCpus(), logFile: join(dir, `${part}.log`), env: gatewayEnv() })
  await waitForLine(started, (line) => line.includes('connection-parts ('), 20_000)
  return { process: started, port }
}

/** The bench's floor, undici-proxy, on the same node with the same flags as the gateway. */
async function startFloor(name: string, dir: string, upstreamPort: number, options: Options): Promise<Subject> {
  const port = await freePort()
  const started = startFloorProcess(name, options.runtime.path, options.nodeFlags, port, upstreamPort, { cpus: serverCpus(), logFile: join(dir, `${name}.log`) })
  await waitForLine(started, (line) => line.includes('undici-proxy listening'), 20_000)
  return { process: started, port }
}

async function startGateway(name: string, dir: string, upstreamPort: number, options: Options, keepAliveS: number): Promise<Subject> {
  const port = await freePort()
  const adminPort = await freePort()
  // The bench's gateway-default config; only the idle timeout is longer, so phase 2's connections stay.
  const doc = parseYaml(gatewayConfig('gateway-default', port, adminPort, upstreamPort)) as { listen: Record<string, unknown> }
  doc.listen.keepAliveTimeout = `${keepAliveS}s`
  const configFile = join(dir, `${name}.yaml`)
  writeFileSync(configFile, `# ${name}: gateway-default (loadtest/bench/topology.ts), written by loadtest/memory/run.ts\n${stringify(doc)}`)
  const started = launchGateway(name, configFile, { node: options.runtime.path, nodeFlags: options.nodeFlags, cpus: serverCpus(), logFile: join(dir, `${name}.log`), env: gatewayEnv(), cwd: dir })
  await waitForLine(started, (line) => line.includes('"msg":"waypost ready"'), 20_000)
  return { process: started, port, adminPort }
}

const serverCpus = (): string => '0'
const loadCpus = (): string => (NCPU >= 2 ? '1' : '0')

// ---- phase 1: idle, then load ------------------------------------------------------------------

type Reading = RssReading & { heap?: HeapFigures }

interface LoadPhase {
  idle: Reading
  load: { seconds: number; connections: number; requests: number; rps: number; errors: number; cpuUsPerReq: number }
  /** Peak RSS during the load (VmHWM). */
  peakKiB: number
  afterLoad: Reading
}

async function loadPhase(kind: SubjectKind, dir: string, upstreamPort: number, options: Options): Promise<LoadPhase> {
  log(`phase 1 (${kind}): a fresh process, idle`)
  const subject = await startSubject(kind, 'load', dir, upstreamPort, options, 65)
  try {
    await sleep(options.settleS * 1000)
    const idleRss = await readRss(subject.process.pid)
    const idle = { ...idleRss, heap: await heapFigures(subject.adminPort) }
    log(`  idle RSS ${fmt(idle.rssKiB / MIB)} MiB${idle.heap === undefined ? '' : ` (heap used ${fmt(idle.heap.heapUsedKiB / MIB)} MiB)`}`)
    log(`  wrk -t1 -c${options.connections} -d${options.loadSeconds}s`)
    const ticks0 = groupTicks(subject.process.pid)
    const wrk = await runWrk({ port: subject.port, seconds: options.loadSeconds, connections: options.connections, cpus: loadCpus(), logFile: join(dir, `wrk-${kind}.txt`) })
    const cpuSeconds = (groupTicks(subject.process.pid) - ticks0) / CLK_TCK
    const peakKiB = statusKiB(subject.process.pid, 'VmHWM')
    // As `npm run bench` samples it: at once, the load just over.
    const afterRss = await readRss(subject.process.pid)
    const afterLoad = { ...afterRss, heap: await heapFigures(subject.adminPort) }
    const load = { seconds: options.loadSeconds, connections: options.connections, requests: wrk.requests, rps: round(wrk.rps, 0), errors: wrk.errors, cpuUsPerReq: round((cpuSeconds * 1e6) / wrk.requests, 1) }
    log(`  ${fmt(load.rps, 0)} req/s, ${kind} ${fmt(load.cpuUsPerReq)} us/req; RSS after load ${fmt(afterLoad.rssKiB / MIB)} MiB, peak ${fmt(peakKiB / MIB)} MiB`)
    return { idle, load, peakKiB, afterLoad }
  } finally {
    await stopProcess(subject.process, 5000)
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
  before: Reading
  with: Reading
  kibPerConnection: number
  anonKibPerConnection: number
  /** The V8 heap's share (the gateway only). */
  heap?: { usedKibPerConnection: number; totalKibPerConnection: number; externalKibPerConnection: number }
  /** Connections the gateway closed before the end of the measurement (should be 0). */
  closedEarly: number
}

async function idleConnectionsPhase(kind: SubjectKind, dir: string, upstreamPort: number, options: Options): Promise<IdleConnectionsPhase> {
  log(`phase 2 (${kind}): a fresh process, ${options.idleConnections} idle keep-alive connections`)
  const subject = await startSubject(kind, 'idle', dir, upstreamPort, options, 600)
  const sockets: Socket[] = []
  try {
    // Warm up: the code paths of a proxied request compiled, and as many upstream sockets open as
    // the connections below will use (they are opened OPEN_BATCH at a time), so those are not counted.
    const warm = await openIdleConnections(subject.port, OPEN_BATCH)
    for (const socket of warm) socket.destroy()
    await sleep(options.settleS * 1000)
    const beforeRss = await readRss(subject.process.pid)
    const before = { ...beforeRss, heap: await heapFigures(subject.adminPort) }
    log(`  before: RSS ${fmt(before.rssKiB / MIB)} MiB; opening ${options.idleConnections} connections`)
    sockets.push(...(await openIdleConnections(subject.port, options.idleConnections)))
    let closedEarly = 0
    for (const socket of sockets) socket.once('close', () => closedEarly++)
    await sleep(options.settleS * 1000)
    const withRss = await readRss(subject.process.pid)
    const withThem = { ...withRss, heap: await heapFigures(subject.adminPort) }
    const per = (after: number, was: number): number => round((after - was) / options.idleConnections, 2)
    const heapBefore = before.heap
    const heapWith = withThem.heap
    const result: IdleConnectionsPhase = {
      count: options.idleConnections,
      before,
      with: withThem,
      kibPerConnection: per(withThem.rssKiB, before.rssKiB),
      anonKibPerConnection: per(withThem.anonKiB, before.anonKiB),
      ...(heapBefore === undefined || heapWith === undefined
        ? {}
        : {
            heap: {
              usedKibPerConnection: per(heapWith.heapUsedKiB, heapBefore.heapUsedKiB),
              totalKibPerConnection: per(heapWith.heapTotalKiB, heapBefore.heapTotalKiB),
              externalKibPerConnection: per(heapWith.externalKiB, heapBefore.externalKiB),
            },
          }),
      closedEarly,
    }
    log(`  with them: RSS ${fmt(withThem.rssKiB / MIB)} MiB: ${fmt(result.kibPerConnection, 2)} KiB per connection${result.heap === undefined ? '' : ` (V8 heap used ${fmt(result.heap.usedKibPerConnection, 2)})`}, ${closedEarly} closed early`)
    return result
  } finally {
    for (const socket of sockets) socket.destroy()
    await stopProcess(subject.process, 5000)
  }
}

/**
 * The floor's cost per idle connection split three ways, each part measured as the difference
 * between two servers: node:net alone, node:net holding a parser per connection, node:http.
 */
function connectionParts(idle: Partial<Record<SubjectKind, IdleConnectionsPhase>>): { floorKiB: number; socketKiB: number; parserKiB: number; nodeHttpKiB: number } | undefined {
  const { floor, socket, parser } = idle
  if (floor === undefined || socket === undefined || parser === undefined) return undefined
  return {
    floorKiB: floor.kibPerConnection,
    socketKiB: socket.kibPerConnection,
    parserKiB: round(parser.kibPerConnection - socket.kibPerConnection, 2),
    nodeHttpKiB: round(floor.kibPerConnection - parser.kibPerConnection, 2),
  }
}

// ---- the run -----------------------------------------------------------------------------------

interface Check {
  what: string
  /** The gateway's figure, judged against the target. */
  value: number
  /** The floor's, measured the same way in the same run. */
  floor: number
  overFloor: number
  unit: 'MiB' | 'KiB'
  target: string
  pass: boolean
  /** Whether the floor itself would meet the target. */
  floorPass: boolean
}

function check(what: string, value: number, floor: number, unit: Check['unit'], comparison: '<' | '<=', limit: number): Check {
  const meets = (figure: number): boolean => (comparison === '<' ? figure < limit : figure <= limit)
  const digits = unit === 'KiB' ? 2 : 1
  return { what, value: round(value, digits), floor: round(floor, digits), overFloor: round(value - floor, digits), unit, target: `${comparison} ${limit} ${unit}`, pass: meets(value), floorPass: meets(floor) }
}

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

async function run(options: Options): Promise<number> {
  const reexec = raiseNoFileLimit(options)
  if (reexec !== undefined) return reexec
  requireBuilt([GATEWAY_MAIN, join(REPO_ROOT, 'dist/loadtest/bench/upstream.js')])
  if (options.phases.includes('load')) requireTools(['wrk', 'taskset'], 'apt-get install -y wrk')
  else requireTools(['taskset'], 'apt-get install -y util-linux')
  const gatewayNode = options.runtime.version
  const dir = mkdtempSync(join(tmpdir(), 'waypost-memory-'))
  if (!options.keep) process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  const date = new Date().toISOString()
  console.log(`waypost memory (${options.short ? 'short' : 'full'}) ${date}: gateway and floor on ${gatewayNode} (${options.runtime.path}) with ${options.nodeFlags.join(' ') || 'no flags'} and ${deployedEnvironmentText()}; ${NCPU} CPUs`)
  const upstreamPort = await freePort()
  const upstream = startBenchUpstream('upstream', process.execPath, upstreamPort, { logFile: join(dir, 'upstream.log'), cpus: serverCpus() })
  const load: Partial<Record<SubjectKind, LoadPhase>> = {}
  const idle: Partial<Record<SubjectKind, IdleConnectionsPhase>> = {}
  try {
    await waitForBody(upstream, upstreamPort, BODY_BYTES)
    // Gateway, floor, gateway, floor: each phase measures both while the machine is in one mood.
    for (const phase of options.phases) {
      if (phase === 'load') for (const kind of SUBJECTS) load[kind] = await loadPhase(kind, dir, upstreamPort, options)
      else for (const kind of [...SUBJECTS, ...(options.short ? [] : CONNECTION_PARTS)]) idle[kind] = await idleConnectionsPhase(kind, dir, upstreamPort, options)
    }
  } finally {
    await stopProcess(upstream, 5000)
  }

  const checks: Check[] = []
  if (load.gateway !== undefined && load.floor !== undefined) {
    checks.push(check('RSS idle', load.gateway.idle.rssKiB / MIB, load.floor.idle.rssKiB / MIB, 'MiB', '<', TARGETS.idleKiB / MIB))
    checks.push(check(`RSS after ${options.loadSeconds} s of wrk -c${options.connections}`, load.gateway.afterLoad.rssKiB / MIB, load.floor.afterLoad.rssKiB / MIB, 'MiB', '<', TARGETS.afterLoadKiB / MIB))
  }
  if (idle.gateway !== undefined && idle.floor !== undefined) {
    const closedEarly = idle.gateway.closedEarly + idle.floor.closedEarly
    checks.push({ ...check(`per idle keep-alive connection (${idle.gateway.count})`, idle.gateway.kibPerConnection, idle.floor.kibPerConnection, 'KiB', '<=', TARGETS.perIdleConnectionKiB), ...(closedEarly > 0 ? { pass: false, floorPass: false } : {}) })
  }
  const digits = (unit: string): number => (unit === 'KiB' ? 2 : 1)
  const rows = [
    ['measure', 'gateway', 'floor (same run)', 'gateway - floor', 'target', 'gateway', 'floor'],
    ...checks.map((c) => [c.what, `${fmt(c.value, digits(c.unit))} ${c.unit}`, `${fmt(c.floor, digits(c.unit))} ${c.unit}`, `${c.overFloor >= 0 ? '+' : ''}${fmt(c.overFloor, digits(c.unit))} ${c.unit}`, c.target, c.pass ? 'PASS' : 'FAIL', c.floorPass ? 'PASS' : 'FAIL']),
  ]
  console.log(table(rows))
  console.log('  floor: the bench\'s undici-proxy (node:http and an undici Pool, nothing else), same node and flags: what any node:http + undici proxy costs on this runtime')
  for (const kind of SUBJECTS) {
    const phase = load[kind]
    if (phase !== undefined) console.log(`  ${kind} load: ${fmt(phase.load.rps, 0)} req/s, CPU ${fmt(phase.load.cpuUsPerReq)} us/req (rough on a shared machine), ${phase.load.errors} errors; peak RSS ${fmt(phase.peakKiB / MIB)} MiB`)
  }
  for (const kind of [...SUBJECTS, ...CONNECTION_PARTS]) {
    const phase = idle[kind]
    if (phase === undefined) continue
    const heap = phase.heap === undefined ? '' : `, V8 heap used ${fmt(phase.heap.usedKibPerConnection, 2)} KiB (committed ${fmt(phase.heap.totalKibPerConnection, 2)}), external ${fmt(phase.heap.externalKibPerConnection, 2)} KiB`
    console.log(`  ${kind} idle connections: RSS ${fmt(phase.before.rssKiB / MIB)} -> ${fmt(phase.with.rssKiB / MIB)} MiB; per connection: anonymous ${fmt(phase.anonKibPerConnection, 2)} KiB${heap}; ${phase.closedEarly} closed early`)
  }
  const parts = connectionParts(idle)
  if (parts !== undefined) {
    console.log(
      `  the floor's ${fmt(parts.floorKiB, 2)} KiB per connection, in parts: the socket (node:net alone) ${fmt(parts.socketKiB, 2)} KiB,` +
        ` node's native HTTP parser ${fmt(parts.parserKiB, 2)} KiB, node:http's own objects ${fmt(parts.nodeHttpKiB, 2)} KiB`,
    )
  }
  const pass = checks.every((c) => c.pass)
  const report = {
    kind: 'memory',
    date,
    mode: options.short ? 'short' : 'full',
    machine: { runner: process.version, gatewayNode, kernel: release(), cpus: NCPU, cpuModel: cpus()[0]?.model ?? 'unknown' },
    nodeFlags: options.nodeFlags,
    environment: deployedEnvironment(),
    config: 'gateway-default (loadtest/bench/topology.ts); floor: loadtest/bench/undici-proxy.ts',
    load,
    idleConnections: idle,
    connectionParts: parts ?? null,
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
