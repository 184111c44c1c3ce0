// npm run bench:ab -- [options] NAME=CONFIG[@MAIN] NAME=CONFIG[@MAIN] ...
//
// An interleaved A/B of CPU per request, for changes too small for `npm run bench` to see on a VM
// whose speed drifts within minutes. Every variant runs at once, idle between its turns, beside one
// node:http upstream (all on the server CPU, as in the bench); each round gives every variant SECONDS
// of wrk -c50 in turn (the order reversed every other round), the first variant (the reference)
// between every two turns, and each turn's CPU per request is divided by the mean of the reference
// turns just before and after it. Turns seconds apart see nearly the same VM,
// so these per-round ratios spread by a few percent where whole bench configs spread by tens.
//
// CONFIG is `undici-proxy` (the floor) or one of the bench's gateway configs (gateway-bare,
// gateway-default, gateway-cache, the policy-* configs without keys, certificates or a trace sink).
// MAIN runs another build of the gateway: a copy of dist/waypost kept from before a change, say
// (it must sit inside the repository, so that it finds node_modules).
//
// The upstream-normalized ratio (each run's proxy CPU over the upstream's) is printed beside the raw
// one, but it is not a fair measure of the proxy alone: headers the proxy adds (the gateway's
// forwarding headers) cost the upstream too, and a slower proxy leaves the upstream less batching.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { gatewayConfig, gatewayEnv, startBenchUpstream, startFloorProcess } from './topology.js'
import { CONFIG_NAMES, type ConfigName } from './options.js'
import { isPolicyConfig, POLICY_ADDITIONS } from './policy-configs.js'
import { measure } from './measure.js'
import { runWrk, wrkLogFile } from './wrk.js'
import { assignments, fmt } from './util.js'
import { GATEWAY_NODE_FLAGS } from '../../gateway/src/core/node-flags.js'
import { resolveRuntime } from '../lib/runtime.js'
import { log } from '../lib/log.js'
import { runMain, stackOf } from '../lib/main.js'
import { HELP_FLAG, numberFlag, resultsDirFlag, UsageError } from '../lib/options.js'
import { GATEWAY_MAIN, REPO_ROOT, requireBuilt } from '../lib/paths.js'
import { freePort } from '../lib/ports.js'
import { startProcess, stopAll, waitForBody, type Started } from '../lib/processes.js'
import { requireTools } from '../lib/tools.js'
import { median } from './util.js'

const DIST_BENCH = fileURLToPath(new URL('.', import.meta.url))
const BODY_BYTES = 1024

const USAGE = `usage: node dist/loadtest/bench/ab.js [options] NAME=CONFIG[@MAIN][ NODE_FLAGS][ ENV=VALUE] ...
  CONFIG                  undici-proxy (the floor), or a bench gateway config: gateway-bare, gateway-default,
                          gateway-cache, policy-* (not those needing keys, certificates or a trace sink)
  @MAIN                   another build's main.js (default dist/waypost/main.js), inside the repository
  NODE_FLAGS              node flags for this variant instead of the deployed ${GATEWAY_NODE_FLAGS.join(' ')}, in the same
                          argument: "semi8=gateway-default --max-semi-space-size=8"
  ENV=VALUE               environment for this variant's process (upper-case names), in the same argument:
                          "arena1=gateway-default MALLOC_ARENA_MAX=1"
  --rounds N              rounds (default 8)
  --seconds S             seconds of wrk per variant and round (default 4)
  --node 24|20|current|PATH  the node that runs everything measured (default 24)
  --results-dir DIR       where ab-latest.json goes (default loadtest/results)
The first variant is the reference: the others are reported as ratios to it.`

type VariantConfig = 'undici-proxy' | 'gateway-bare' | 'gateway-default' | 'gateway-cache' | Extract<ConfigName, `policy-${string}`>

interface Variant {
  readonly name: string
  readonly config: VariantConfig
  readonly main: string
  readonly nodeFlags: readonly string[]
  /** Environment variables set for this variant's process alone (`MALLOC_ARENA_MAX=1`). */
  readonly env: Readonly<Record<string, string>>
}

interface AbOptions {
  variants: Variant[]
  rounds: number
  seconds: number
  node: string
  resultsDir: string
}

interface Turn {
  round: number
  requests: number
  errors: number
  rps: number
  proxyCpuUsPerReq: number
  upstreamCpuUsPerReq: number
}

function usableConfig(config: string): config is VariantConfig {
  if (config === 'undici-proxy' || config === 'gateway-bare' || config === 'gateway-default' || config === 'gateway-cache') return true
  if (!(CONFIG_NAMES as readonly string[]).includes(config) || !isPolicyConfig(config as ConfigName)) return false
  const addition = POLICY_ADDITIONS[config as Extract<ConfigName, `policy-${string}`>]
  return addition.jwt === undefined && addition.tls !== true && addition.tracingRatio === undefined
}

/** An environment assignment in a variant's argument: an upper-case name, `=`, any value. */
const ENV_ASSIGNMENT = /^([A-Z_][A-Z0-9_]*)=(.*)$/

function parseVariant(spec: string): Variant {
  const [variant = '', ...extras] = spec.trim().split(/\s+/)
  const match = /^([\w.-]+)=([\w-]+)(?:@(.+))?$/.exec(variant)
  if (match === null) throw new UsageError(`${spec}: expected NAME=CONFIG or NAME=CONFIG@MAIN, then any node flags and ENV=VALUE`)
  const nodeFlags: string[] = []
  const env: Record<string, string> = {}
  for (const extra of extras) {
    const assignment = ENV_ASSIGNMENT.exec(extra)
    if (assignment !== null) env[assignment[1]!] = assignment[2]!
    else if (extra.startsWith('--')) nodeFlags.push(extra)
    else throw new UsageError(`${spec}: "${extra}" is neither a node flag (--name or --name=value) nor an environment variable (NAME=value)`)
  }
  const [, name, config, main] = match as unknown as [string, string, string, string | undefined]
  if (!usableConfig(config)) throw new UsageError(`${spec}: ${config} is not undici-proxy or a gateway config this tool can start`)
  if (main !== undefined && config === 'undici-proxy') throw new UsageError(`${spec}: @MAIN is for gateway configs`)
  const path = main === undefined ? GATEWAY_MAIN : isAbsolute(main) ? main : resolve(main)
  if (!path.startsWith(REPO_ROOT)) throw new UsageError(`${spec}: ${path} is outside the repository, where it would not find node_modules`)
  return { name, config, main: path, nodeFlags: nodeFlags.length > 0 ? nodeFlags : GATEWAY_NODE_FLAGS, env }
}

function parse(argv: string[]): AbOptions | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...HELP_FLAG, rounds: { type: 'string' }, seconds: { type: 'string' }, node: { type: 'string' }, 'results-dir': { type: 'string' } },
  })
  if (values.help === true) return 'help'
  if (positionals.length < 2) throw new UsageError('give at least two variants')
  const variants = positionals.map(parseVariant)
  const names = new Set(variants.map((variant) => variant.name))
  if (names.size !== variants.length) throw new UsageError('variant names must differ')
  return {
    variants,
    rounds: Math.round(numberFlag(values.rounds, 'rounds', 8, 1)),
    seconds: numberFlag(values.seconds, 'seconds', 4, 1),
    node: values.node ?? '24',
    resultsDir: resultsDirFlag(values['results-dir']),
  }
}

function startVariant(variant: Variant, port: number, upstreamPort: number, node: string, runDir: string): Started {
  const logFile = join(runDir, `${variant.name}.log`)
  const cpus = '0'
  const env = { ...gatewayEnv(), ...variant.env }
  if (variant.config === 'undici-proxy') return startFloorProcess(variant.name, node, variant.nodeFlags, port, upstreamPort, { cpus, logFile, env })
  const configFile = join(runDir, `${variant.name}.yaml`)
  // No admin port of its own is needed: 0 lets the kernel pick one.
  writeFileSync(configFile, gatewayConfig(variant.config, port, 0, upstreamPort))
  // stdout to a file, as in the bench: the access log is written where it would be.
  return startProcess(variant.name, node, [...variant.nodeFlags, variant.main, 'run', '--config', configFile], { cpus, logFile, env, cwd: runDir })
}

async function run(options: AbOptions): Promise<number> {
  requireTools(['wrk', 'taskset'], 'apt-get install -y wrk util-linux')
  requireBuilt([join(DIST_BENCH, 'upstream.js'), ...new Set(options.variants.filter((variant) => variant.config !== 'undici-proxy').map((variant) => variant.main))])
  const runtime = resolveRuntime(options.node)
  const runDir = mkdtempSync(join(tmpdir(), 'waypost-ab-'))
  const turns = new Map<string, Turn[]>(options.variants.map((variant) => [variant.name, []]))
  const pairings = new Map<string, { raw: number[]; normalized: number[] }>(options.variants.map((variant) => [variant.name, { raw: [], normalized: [] }]))
  try {
    const upstreamPort = await freePort()
    const upstream = startBenchUpstream('upstream', runtime.path, upstreamPort, { cpus: '0', logFile: join(runDir, 'upstream.log') })
    await waitForBody(upstream, upstreamPort, BODY_BYTES)
    const servers: Array<{ variant: Variant; port: number; server: Started }> = []
    for (const variant of options.variants) {
      const port = await freePort()
      const server = startVariant(variant, port, upstreamPort, runtime.path, runDir)
      await waitForBody(server, port, BODY_BYTES)
      servers.push({ variant, port, server })
    }
    const described = (variant: Variant): string => `${variant.name} (${variant.config}${variant.main === GATEWAY_MAIN || variant.config === 'undici-proxy' ? '' : ` @ ${variant.main}`}; ${[...variant.nodeFlags, ...assignments(variant.env)].join(' ') || 'no node flags'})`
    log(`Node ${runtime.version}: ${servers.map(({ variant }) => described(variant)).join(', ')}; warming up`)
    for (const { port } of servers) await runWrk({ port, seconds: 2, connections: 50, cpus: '1', logFile: wrkLogFile(runDir, `warmup-${port}`) })
    const [reference, ...others] = servers
    const take = async (entry: (typeof servers)[number], round: number): Promise<Turn> => {
      const { variant, port, server } = entry
      const m = await measure([server.pid, upstream.pid], () => runWrk({ port, seconds: options.seconds, connections: 50, cpus: '1', logFile: wrkLogFile(runDir, `${variant.name}-${round}-${turns.get(variant.name)!.length}`) }))
      const requests = m.result.requests
      const turn = { round, requests, errors: m.result.errors, rps: m.result.rps, proxyCpuUsPerReq: (m.cpuSeconds[0]! * 1e6) / requests, upstreamCpuUsPerReq: (m.cpuSeconds[1]! * 1e6) / requests }
      turns.get(variant.name)!.push(turn)
      // A variant that answers with errors is measuring something else than the others.
      const errors = turn.errors > 0 ? `, ${turn.errors} errors (non-2xx or socket errors)` : ''
      log(`  round ${round} ${variant.name.padEnd(16)} ${fmt(turn.rps)} req/s, ${fmt(turn.proxyCpuUsPerReq, 1)} us/req (upstream ${fmt(turn.upstreamCpuUsPerReq, 1)})${errors}`)
      return turn
    }
    // The reference runs between every two turns, and each turn is paired with the reference turns
    // on either side of it: with many variants a round lasts minutes, and drift within it would
    // otherwise land on whichever variant ran furthest from the reference.
    const steadied = (turn: Turn): number => turn.proxyCpuUsPerReq / turn.upstreamCpuUsPerReq
    for (let round = 1; round <= options.rounds; round++) {
      const order = round % 2 === 1 ? others : [...others].reverse()
      let before = await take(reference!, round)
      for (const entry of order) {
        const turn = await take(entry, round)
        const after = await take(reference!, round)
        const pairing = pairings.get(entry.variant.name)!
        pairing.raw.push(turn.proxyCpuUsPerReq / ((before.proxyCpuUsPerReq + after.proxyCpuUsPerReq) / 2))
        pairing.normalized.push(steadied(turn) / ((steadied(before) + steadied(after)) / 2))
        before = after
      }
    }
  } finally {
    await stopAll()
    rmSync(runDir, { recursive: true, force: true })
  }
  const rows = options.variants.map((variant, index) => {
    const own = turns.get(variant.name)!
    const pairing = pairings.get(variant.name)!
    // The reference against itself is 1 by definition.
    const raw = index === 0 ? Array.from({ length: options.rounds }, () => 1) : pairing.raw
    const normalized = index === 0 ? raw : pairing.normalized
    return {
      name: variant.name,
      config: variant.config,
      main: variant.config === 'undici-proxy' ? undefined : variant.main,
      nodeFlags: variant.nodeFlags,
      env: variant.env,
      rps: median(own.map((turn) => turn.rps)),
      proxyCpuUsPerReq: median(own.map((turn) => turn.proxyCpuUsPerReq)),
      cpuVsReference: median(raw),
      /** Each turn's ratio, in order: one per round (the reference's are all 1). */
      perRound: raw,
      normalizedVsReference: median(normalized),
      errors: own.reduce((sum, turn) => sum + turn.errors, 0),
      turns: own,
    }
  })
  console.log('')
  console.log(`variant           req/s median  CPU us/req median  vs ${options.variants[0]!.name} (median of rounds)  per round                                 ÷ upstream`)
  for (const row of rows) {
    console.log(`${row.name.padEnd(16)}  ${fmt(row.rps).padStart(12)}  ${fmt(row.proxyCpuUsPerReq, 1).padStart(17)}  ${`${fmt(row.cpuVsReference, 3)}x`.padStart(28)}  ${row.perRound.map((x) => fmt(x, 2)).join(' ').padEnd(40)}  ${fmt(row.normalizedVsReference, 3)}x`)
  }
  const failing = rows.filter((row) => row.errors > 0)
  if (failing.length > 0) console.log(`\nerrors (non-2xx or socket errors) in: ${failing.map((row) => `${row.name} ${row.errors}`).join(', ')}: their figures are not comparable`)
  const report = { date: new Date().toISOString(), node: runtime.version, rounds: options.rounds, seconds: options.seconds, rows }
  // Made if missing, as the bench does: minutes of measurement must not be lost at the last step.
  mkdirSync(options.resultsDir, { recursive: true })
  const file = join(options.resultsDir, 'ab-latest.json')
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`)
  console.log(`\nwrote ${file}`)
  return 0
}

runMain({
  usage: USAGE,
  parse,
  run,
  logStamp: 'clock',
  describeFailure: (error) => `ab failed: ${stackOf(error)}`,
  failureExitCode: 1,
})
