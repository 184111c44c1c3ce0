// Flags of `npm run loadtest:zero-downtime`. `--short` is the CI form (about a minute); the default
// long form takes a few minutes.
import { parseArgs } from 'node:util'
import { HELP_FLAG, numberFlag } from '../lib/options.js'

export const USAGE = `usage: node dist/loadtest/zero-downtime/run.js [--short] [options]
  --short              CI form: 5 reloads 1 s apart, one rolling restart, about a minute
  --rate N             requests per second, open loop (default 450, so the long form carries over 50,000; short 300)
  --fresh-ratio F      share of requests on a new connection (default 0.5)
  --max-in-flight N    bound on concurrent requests; a request due beyond it fails (default 1000)
  --request-timeout MS deadline of one request (default 15000)
  --reloads N          reloads in step 1, one of them invalid (default 10; short 5)
  --rolling N          rolling restarts of both gateways in step 2 (default 2; short 1)
  --down MS            how long the stub stays down in step 3 (default 2000; short 1000)
  --seed N             seed of the request mix (default 1)
  --keep               keep the temp dir (configs, logs) also when the run passes
  --json FILE          also write the report (JSON) to FILE
  --help`

export interface Options {
  short: boolean
  rate: number
  freshRatio: number
  maxInFlight: number
  requestTimeoutMs: number
  reloads: number
  rolling: number
  downMs: number
  seed: number
  keep: boolean
  json: string | undefined
  /** Seconds of steady load before step 1, between steps, and after the last one. */
  warmupS: number
  settleS: number
  cooldownS: number
  /** Pause between two reloads. */
  reloadEveryMs: number
  /** Pause after a gateway is back in the load balancer before the next one is restarted. */
  rollingPauseMs: number
  /** The whole scenario is aborted after this long. */
  deadlineS: number
}

export function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      short: { type: 'boolean', default: false },
      rate: { type: 'string' },
      'fresh-ratio': { type: 'string' },
      'max-in-flight': { type: 'string' },
      'request-timeout': { type: 'string' },
      reloads: { type: 'string' },
      rolling: { type: 'string' },
      down: { type: 'string' },
      seed: { type: 'string' },
      keep: { type: 'boolean', default: false },
      json: { type: 'string' },
      ...HELP_FLAG,
    },
  })
  if (values.help) return 'help'
  const short = values.short
  const reloads = numberFlag(values.reloads, 'reloads', short ? 5 : 10, 2)
  return {
    short,
    rate: numberFlag(values.rate, 'rate', short ? 300 : 450, 1),
    freshRatio: Math.min(1, numberFlag(values['fresh-ratio'], 'fresh-ratio', 0.5)),
    maxInFlight: numberFlag(values['max-in-flight'], 'max-in-flight', 1000, 1),
    requestTimeoutMs: numberFlag(values['request-timeout'], 'request-timeout', 15_000, 100),
    reloads,
    rolling: numberFlag(values.rolling, 'rolling', short ? 1 : 2, 0),
    downMs: numberFlag(values.down, 'down', short ? 1000 : 2000),
    seed: numberFlag(values.seed, 'seed', 1),
    keep: values.keep,
    json: values.json,
    warmupS: short ? 3 : 10,
    settleS: short ? 2 : 8,
    cooldownS: short ? 3 : 10,
    reloadEveryMs: short ? 1000 : 4000,
    rollingPauseMs: short ? 1000 : 5000,
    deadlineS: short ? 150 : 900,
  }
}
