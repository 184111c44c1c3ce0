// npm run loadtest:slow-clients [-- --short]
//
// Slow clients beside good ones. For each target (nginx with its defaults, the gateway as
// config/examples/slow-clients.yaml sets it up, and the gateway with none of it: bodies streamed, no
// caps), good clients on 127.0.0.1 send GETs at a fixed open-loop rate, first alone (the baseline),
// then while 200 slow uploaders (127.0.0.2: a POST body at one byte every 2 s) and 200 slow readers
// (127.0.0.3: a 16 MiB download they never read) hold their connections. It reports the good
// clients' p50/p99 and errors in both phases, how many attackers the server cut off and the most
// upstream requests in flight, and judges the guarded gateway: no errors, and its p99 under attack
// within 2x (+10 ms) of its own baseline. Writes loadtest/results/slow-clients-latest.json. Exit 0
// (1 with --strict when the verdict fails). Everything is on loopback and ends by itself.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type Socket } from 'node:net'
import { parseArgs } from 'node:util'
import { parseDocument } from 'yaml'
import { request } from 'undici'
import { startGatewayProcess } from '../lib/gateway.js'
import { log, sleep } from '../lib/log.js'
import { GATEWAY_MAIN, REPO_ROOT, requireBuilt, STUB_CLI } from '../lib/paths.js'
import { runMain, stackOf } from '../lib/main.js'
import { HELP_FLAG, numberFlag, resultsDirFlag } from '../lib/options.js'
import { startProcess, stopAll, stopProcess, type Started } from '../lib/processes.js'
import { freePort } from '../lib/ports.js'
import { startStubProcess } from '../lib/stub.js'
import { findTool } from '../lib/tools.js'
import { LoadGenerator, type Sample } from '../zero-downtime/load.js'
import { fmt, percentiles, round, table, type Percentiles } from '../zero-downtime/util.js'

const USAGE = `usage: node dist/loadtest/slow-clients/run.js [--short] [options]
  --short             5 s baseline and 10 s under attack instead of 10 s and 20 s
  --rate N            good clients' requests per second, open loop (default 100)
  --uploaders N       slow uploaders (default 200)
  --readers N         slow readers (default 200)
  --targets LIST      nginx,gateway,gateway-unguarded (default all three)
  --results-dir DIR   where slow-clients-latest.json goes (default loadtest/results)
  --strict            exit 1 when the guarded gateway's verdict fails
  --keep              keep the temp dir (configs, logs)`

type Target = 'nginx' | 'gateway' | 'gateway-unguarded'
const TARGETS: readonly Target[] = ['nginx', 'gateway', 'gateway-unguarded']
const READ_BYTES = 16 * 1024 * 1024
const UPLOAD_BYTES = 100_000
const GOOD_PATH = '/anything/good'

interface Options {
  baselineS: number
  attackS: number
  rate: number
  uploaders: number
  readers: number
  targets: Target[]
  resultsDir: string
  strict: boolean
  keep: boolean
}

interface Phase extends Percentiles {
  errors: number
  causes: Record<string, number>
}

interface TargetResult {
  target: Target
  baseline: Phase
  underAttack: Phase
  /** Attacker connections the server closed while the attack phase ran. */
  attackersCut: { uploaders: number; readers: number }
  /** Attackers that got an answer (408, 429) before being closed. */
  attackersAnswered: Record<string, number>
  upstreamMaxInFlight: number
}

function parse(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...HELP_FLAG,
      short: { type: 'boolean', default: false },
      rate: { type: 'string' },
      uploaders: { type: 'string' },
      readers: { type: 'string' },
      targets: { type: 'string' },
      'results-dir': { type: 'string' },
      strict: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
    },
  })
  if (values.help === true) return 'help'
  const targets = (values.targets ?? TARGETS.join(',')).split(',').map((name) => {
    if (!TARGETS.includes(name as Target)) throw new Error(`--targets: unknown target "${name}" (expected ${TARGETS.join(', ')})`)
    return name as Target
  })
  return {
    baselineS: values.short === true ? 5 : 10,
    attackS: values.short === true ? 10 : 20,
    rate: numberFlag(values.rate, '--rate', 100, 1),
    uploaders: numberFlag(values.uploaders, '--uploaders', 200),
    readers: numberFlag(values.readers, '--readers', 200),
    targets,
    resultsDir: resultsDirFlag(values['results-dir']),
    strict: values.strict === true,
    keep: values.keep === true,
  }
}

/** The attackers: raw sockets from their own loopback addresses, so caps per address can tell them apart. */
class Attack {
  private readonly uploaders: Socket[] = []
  private readonly readers: Socket[] = []
  private readonly answered = new Map<string, number>()
  private trickle: NodeJS.Timeout | undefined
  cut = { uploaders: 0, readers: 0 }
  private counting = false

  constructor(private readonly port: number) {}

  async open(uploaders: number, readers: number): Promise<void> {
    const opening: Array<Promise<void>> = []
    for (let i = 0; i < uploaders; i++) opening.push(this.connect('127.0.0.2', 'uploaders', `POST /anything/upload HTTP/1.1\r\nhost: slow\r\ncontent-length: ${UPLOAD_BYTES}\r\n\r\nx`))
    for (let i = 0; i < readers; i++) opening.push(this.connect('127.0.0.3', 'readers', `GET /bytes/${READ_BYTES} HTTP/1.1\r\nhost: slow\r\n\r\n`))
    await Promise.all(opening)
    // One byte every 2 s from each uploader that is still connected.
    this.trickle = setInterval(() => {
      for (const socket of this.uploaders) if (!socket.destroyed) socket.write('x')
    }, 2000)
  }

  /** From now on, closes by the server count as cut. */
  startCounting(): void {
    this.cut = { uploaders: 0, readers: 0 }
    this.counting = true
  }

  answers(): Record<string, number> {
    return Object.fromEntries(this.answered)
  }

  close(): void {
    clearInterval(this.trickle)
    for (const socket of [...this.uploaders, ...this.readers]) socket.destroy()
  }

  private connect(localAddress: string, kind: 'uploaders' | 'readers', head: string): Promise<void> {
    return new Promise((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: this.port, localAddress })
      this[kind].push(socket)
      socket.on('error', () => undefined)
      socket.once('connect', () => {
        socket.write(head)
        resolve()
      })
      socket.once('close', () => {
        if (this.counting) this.cut[kind]++
        resolve()
      })
      if (kind === 'readers') {
        // Reads the status line, then never reads again: the response fills every buffer on the way.
        socket.once('data', (chunk: Buffer) => {
          this.count(chunk)
          socket.pause()
        })
      } else {
        socket.on('data', (chunk: Buffer) => this.count(chunk))
      }
    })
  }

  private count(chunk: Buffer): void {
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(chunk.toString('latin1', 0, 16))?.[1]
    if (status !== undefined) this.answered.set(status, (this.answered.get(status) ?? 0) + 1)
  }
}

function phaseOf(samples: readonly Sample[]): Phase {
  const causes: Record<string, number> = {}
  let errors = 0
  for (const sample of samples) {
    if (sample.ok) continue
    errors++
    const cause = sample.cause ?? 'unknown'
    causes[cause] = (causes[cause] ?? 0) + 1
  }
  return { ...percentiles(samples.filter((sample) => sample.ok).map((sample) => sample.ended - sample.scheduled)), errors, causes }
}

async function measure(port: number, options: Options, seconds: number): Promise<Phase> {
  const generator = new LoadGenerator({
    rate: options.rate,
    maxInFlight: 2000,
    timeoutMs: 10_000,
    poolConnections: 32,
    plan: () => ({ origin: `http://127.0.0.1:${port}`, path: GOOD_PATH, method: 'GET', fresh: false, kind: 'good' }),
    step: () => 'measure',
  })
  generator.begin()
  await sleep(seconds * 1000)
  return phaseOf(await generator.stop(11_000))
}

async function stubStats(stubUrl: string, reset: boolean): Promise<{ maxInFlight: number }> {
  const response = await request(`${stubUrl}/__stats`, { method: reset ? 'DELETE' : 'GET' })
  return (await response.body.json()) as { maxInFlight: number }
}

/** Start the server for `target` in front of the stub; resolves with its port. */
async function startTarget(target: Target, dir: string, stubUrl: string): Promise<{ port: number; server: Started }> {
  const stubPort = Number(new URL(stubUrl).port)
  if (target === 'nginx') {
    const port = await freePort()
    const prefix = join(dir, 'nginx')
    for (const sub of ['logs', 'tmp']) mkdirSync(join(prefix, sub), { recursive: true })
    const conf = join(prefix, 'nginx.conf')
    // nginx's defaults otherwise: request and response buffering on, client_body_timeout and send_timeout 60s.
    writeFileSync(
      conf,
      `daemon off;\nmaster_process off;\nworker_processes 1;\npid ${prefix}/logs/nginx.pid;\nerror_log ${prefix}/logs/error.log warn;\n` +
        `events { worker_connections 4096; }\nhttp {\n  access_log off;\n  client_body_temp_path ${prefix}/tmp/body;\n  proxy_temp_path ${prefix}/tmp/proxy;\n` +
        `  fastcgi_temp_path ${prefix}/tmp/fastcgi;\n  uwsgi_temp_path ${prefix}/tmp/uwsgi;\n  scgi_temp_path ${prefix}/tmp/scgi;\n` +
        `  upstream app { server 127.0.0.1:${stubPort}; keepalive 128; }\n` +
        `  server {\n    listen 127.0.0.1:${port} backlog=4096;\n    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }\n  }\n}\n`,
    )
    const server = startProcess('nginx', findTool('nginx') ?? 'nginx', ['-p', prefix, '-c', conf, '-e', join(prefix, 'logs', 'error.log')], { logFile: join(dir, 'nginx.log') })
    await answering(server, port)
    return { port, server }
  }
  const file = join(dir, `${target}.yaml`)
  const document = parseDocument(readFileSync(join(REPO_ROOT, 'config/examples/slow-clients.yaml'), 'utf8'))
  document.setIn(['upstreams', 'app', 'url'], stubUrl)
  if (target === 'gateway-unguarded') {
    // As the gateway was before: no buffering, no caps, body timeouts far beyond the run.
    document.deleteIn(['listen', 'clients'])
    document.setIn(['listen', 'clients'], { bodyIdleTimeout: '1h', bodyMinRate: 0 })
    document.deleteIn(['routes', 0, 'policies', 'buffer'])
  }
  document.setIn(['log', 'access'], false)
  writeFileSync(file, document.toString())
  const gateway = await startGatewayProcess(target, file, join(dir, `${target}.log`), '127.0.0.1:0', '127.0.0.1:0')
  return { port: Number(gateway.listen.split(':').pop()), server: gateway.process }
}

/** Waits until the server proxies a good request; fails if it exits first. */
async function answering(server: Started, port: number): Promise<void> {
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    if (server.exit !== undefined) throw new Error(`${server.name} exited before it was ready; see ${server.logFile}`)
    const status = await request(`http://127.0.0.1:${port}${GOOD_PATH}`).then(
      async (response) => {
        await response.body.dump()
        return response.statusCode
      },
      () => 0,
    )
    if (status === 200) return
    await sleep(100)
  }
  throw new Error(`${server.name} not answering on 127.0.0.1:${port}; see ${server.logFile}`)
}

async function runTarget(target: Target, dir: string, stubUrl: string, options: Options): Promise<TargetResult> {
  const { port, server } = await startTarget(target, dir, stubUrl)
  log(`${target}: baseline, ${options.baselineS} s at ${options.rate} req/s`)
  await measure(port, options, 1) // warm-up, not recorded
  const baseline = await measure(port, options, options.baselineS)
  await stubStats(stubUrl, true)
  const attack = new Attack(port)
  log(`${target}: opening ${options.uploaders} slow uploaders and ${options.readers} slow readers`)
  await attack.open(options.uploaders, options.readers)
  await sleep(2000) // every reader's buffers fill up
  attack.startCounting()
  log(`${target}: under attack, ${options.attackS} s at ${options.rate} req/s`)
  const underAttack = await measure(port, options, options.attackS)
  const upstreamMaxInFlight = (await stubStats(stubUrl, false)).maxInFlight
  const result: TargetResult = { target, baseline, underAttack, attackersCut: { ...attack.cut }, attackersAnswered: attack.answers(), upstreamMaxInFlight }
  attack.close()
  await stopProcess(server)
  return result
}

function verdictOf(result: TargetResult | undefined): { pass: boolean; why: string } {
  if (result === undefined) return { pass: true, why: 'gateway not run' }
  const limit = 2 * result.baseline.p99Ms + 10
  const pass = result.underAttack.errors === 0 && result.underAttack.p99Ms <= limit
  return { pass, why: `p99 ${fmt(result.underAttack.p99Ms)} ms under attack (limit ${fmt(limit)} ms: 2x the baseline's ${fmt(result.baseline.p99Ms)} + 10), ${result.underAttack.errors} errors` }
}

async function run(options: Options): Promise<number> {
  requireBuilt([GATEWAY_MAIN, STUB_CLI])
  if (options.targets.includes('nginx') && findTool('nginx') === undefined) throw new Error('nginx is not installed: apt-get install -y nginx-light (or --targets gateway,gateway-unguarded)')
  const dir = mkdtempSync(join(tmpdir(), 'waypost-slow-clients-'))
  const stub = await startStubProcess(join(dir, 'stub.log'), 0)
  const results: TargetResult[] = []
  try {
    for (const target of options.targets) results.push(await runTarget(target, dir, stub.url, options))
  } finally {
    await stopAll()
    if (!options.keep) rmSync(dir, { recursive: true, force: true })
    else log(`kept ${dir}`)
  }
  const rows = [['target', 'baseline p50', 'p99', 'errors', 'under attack p50', 'p99', 'errors', 'p99 ratio', 'cut (up/read)', 'answers', 'upstream max in flight']]
  for (const result of results) {
    rows.push([
      result.target,
      fmt(result.baseline.p50Ms),
      fmt(result.baseline.p99Ms),
      String(result.baseline.errors),
      fmt(result.underAttack.p50Ms),
      fmt(result.underAttack.p99Ms),
      String(result.underAttack.errors),
      `${fmt(result.underAttack.p99Ms / result.baseline.p99Ms, 2)}x`,
      `${result.attackersCut.uploaders}/${result.attackersCut.readers}`,
      Object.entries(result.attackersAnswered).map(([status, count]) => `${status}:${count}`).join(' ') || '-',
      String(result.upstreamMaxInFlight),
    ])
  }
  console.log(table(rows))
  const verdict = verdictOf(results.find((result) => result.target === 'gateway'))
  console.log(`verdict: ${verdict.pass ? 'PASS' : 'FAIL'}: gateway ${verdict.why}`)
  const report = {
    at: new Date().toISOString(),
    node: process.version,
    settings: { rate: options.rate, baselineS: options.baselineS, attackS: options.attackS, uploaders: options.uploaders, readers: options.readers, readBytes: READ_BYTES, uploadBytes: UPLOAD_BYTES },
    results: results.map((result) => ({ ...result, p99Ratio: round(result.underAttack.p99Ms / result.baseline.p99Ms) })),
    verdict,
  }
  mkdirSync(options.resultsDir, { recursive: true })
  writeFileSync(join(options.resultsDir, 'slow-clients-latest.json'), `${JSON.stringify(report, null, 2)}\n`)
  return verdict.pass || !options.strict ? 0 : 1
}

runMain({ usage: USAGE, parse, run, logStamp: 'elapsed', describeFailure: (error) => `slow-clients: ${stackOf(error)}`, failureExitCode: 1 })
