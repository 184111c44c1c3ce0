// The per-policy benchmark's pieces that need no load: each policy config is gateway-bare plus one
// thing and loads as a policy file, the costs are paired with gateway-bare round by round, and the
// targets are judged as ratios to the floor.
import t from 'tap'
import { parse } from 'yaml'
import { parseConfig, formatError } from '../../gateway/src/config/load.js'
import { gatewayConfig } from './topology.js'
import { benchOptions, POLICY_CONFIGS } from './options.js'
import { POLICY_CONFIG_NAMES } from './policy-configs.js'
import { policyCosts, formatPolicyTable } from './policy-report.js'
import { floorNote, judge, reportKind, summarize, type ThroughputRun } from './report.js'

const extras = { certificate: { cert: '/run/bench.crt', key: '/run/bench.key' }, jwksFile: '/run/jwks.json', otlpSink: 'http://127.0.0.1:4318' }

t.test('each policy config is gateway-bare plus exactly one thing, and loads', async (t) => {
  const bare = parse(gatewayConfig('gateway-bare', 19002, 19012, 19000)) as Record<string, unknown>
  t.equal(bare.defaults, undefined, 'gateway-bare: no policy')
  for (const config of POLICY_CONFIG_NAMES) {
    const text = gatewayConfig(config, 19050, 19051, 19000, extras)
    const doc = parse(text) as { defaults?: { policies: Record<string, unknown> }; log: { access: boolean }; tracing?: unknown; listen: { tls?: unknown } }
    const added = [...Object.keys(doc.defaults?.policies ?? {}), ...(doc.log.access ? ['access log'] : []), ...(doc.tracing === undefined ? [] : ['tracing']), ...(doc.listen.tls === undefined ? [] : ['tls'])]
    t.equal(added.length, 1, `${config} adds one thing: ${added.join(', ')}`)
    const result = parseConfig(text, `${config}.yaml`)
    t.same(result.ok ? [] : result.errors.map(formatError), [], `${config} is a valid policy file`)
  }
  t.match(parse(gatewayConfig('policy-jwt-uncached', 1, 2, 3, extras)), { defaults: { policies: { auth: { jwt: { cacheEntries: 0 } } } } })
  t.throws(() => gatewayConfig('policy-jwt', 1, 2, 3), /needs a JWKS file/)
  t.throws(() => gatewayConfig('policy-trace-1', 1, 2, 3), /needs an OTLP sink/)
  t.throws(() => gatewayConfig('policy-tls', 1, 2, 3), /needs the benchmark certificate/)
})

t.test('--policies measures every policy config beside gateway-bare and the floor', async (t) => {
  const options = benchOptions(['--policies'])
  t.same(options !== 'help' && options.configs, POLICY_CONFIGS)
  t.throws(() => benchOptions(['--policies', '--tls']), /one preset at a time/)
  t.equal(options !== 'help' && options.node, '24', 'Node 24 unless told otherwise')
})

function throughput(config: ThroughputRun['config'], rep: number, rps: number, cpu: number, upstreamCpu = 40): ThroughputRun {
  return { config, rep, attempts: 1, rps, requests: rps * 5, errors: 0, wrkP50Ms: 1, wrkP99Ms: 2, proxyCpuUsPerReq: cpu, upstreamCpuUsPerReq: upstreamCpu, loadgenCpuUsPerReq: 20, foreignPct: 0, stealPct: 0 }
}

t.test('a policy costs what it adds over gateway-bare in the same round', async (t) => {
  const configs = ['undici-proxy', 'gateway-bare', 'policy-timeout', 'policy-jwt'] as const
  // Round 2 ran on a slower machine: every config slower, the differences the same.
  const runs = [
    throughput('undici-proxy', 1, 12_000, 60),
    throughput('gateway-bare', 1, 10_000, 70),
    throughput('policy-timeout', 1, 9_800, 72),
    throughput('policy-jwt', 1, 8_000, 90),
    throughput('undici-proxy', 2, 6_000, 120),
    throughput('gateway-bare', 2, 5_000, 140),
    throughput('policy-timeout', 2, 4_900, 142),
    throughput('policy-jwt', 2, 4_000, 160),
  ]
  const summary = summarize(configs, runs, [], { idle: new Map(), loaded: new Map() }, 2000)
  const costs = policyCosts(runs, summary)
  t.same(
    costs.map((cost) => [cost.config, cost.addedUsPerReq]),
    [
      ['policy-timeout', 2],
      ['policy-jwt', 20],
    ],
  )
  t.match(formatPolicyTable(costs), /policy-jwt\s+\d+(\.\d)?\s+\+20\.0/)
  t.equal(reportKind({ summary }), 'policies', 'filed as bench-policies-*.json and policies-latest.json')
  t.match(judge(summary, runs, 2000), [{ name: 'gateway-bare CPU per request vs the floor', comparison: '<=', limit: 1.1, pass: false }])
  t.same(policyCosts(runs, summary.filter((s) => s.config !== 'gateway-bare')), [], 'nothing to pair with')
})

t.test('the targets are ratios to the floor in the same rounds', async (t) => {
  const configs = ['direct', 'undici-proxy', 'gateway-bare', 'gateway-default'] as const
  const runs = [throughput('direct', 1, 30_000, 0), throughput('undici-proxy', 1, 10_000, 60), throughput('gateway-bare', 1, 9_500, 65), throughput('gateway-default', 1, 8_500, 71)]
  const summary = summarize(configs, runs, [], { idle: new Map(), loaded: new Map([['gateway-default', 90 * 1024], ['undici-proxy', 80 * 1024]]) }, 2000)
  const verdicts = Object.fromEntries(judge(summary, runs, 2000).map((target) => [target.name, target.pass]))
  t.same(verdicts, {
    'gateway-default CPU per request vs the floor': true,
    'gateway-default throughput vs the floor': true,
    'gateway-default p99 added over direct at 2000 req/s': null,
    'gateway-default RSS after load': true,
    'gateway-default RSS after load vs the floor': true,
    'gateway-bare CPU per request vs the floor': true,
  })
  const heavy = summarize(configs, runs, [], { idle: new Map(), loaded: new Map([['gateway-default', 130 * 1024], ['undici-proxy', 100 * 1024]]) }, 2000)
  const memory = judge(heavy, runs, 2000).filter((target) => target.name.includes('RSS'))
  t.same(
    memory.map((target) => [target.name, target.value, target.pass]),
    [
      ['gateway-default RSS after load', 130, false],
      ['gateway-default RSS after load vs the floor', 1.3, false],
    ],
    'RSS judged both ways: absolute, and as the gateway\'s share over the floor',
  )
})

t.test("the floor note divides each config's CPU by the upstream's, so the VM's drift within a round cancels", async (t) => {
  const configs = ['nginx', 'undici-proxy', 'gateway-bare', 'gateway-default'] as const
  // The VM slowed down twofold between the floor's run and the gateway's: the upstream shows it.
  const runs = [throughput('nginx', 1, 20_000, 30, 20), throughput('undici-proxy', 1, 10_000, 60, 20), throughput('gateway-bare', 1, 5_000, 120, 40), throughput('gateway-default', 1, 4_000, 144, 40)]
  const summary = summarize(configs, runs, [], { idle: new Map(), loaded: new Map() }, 2000)
  const note = floorNote(runs, summary) ?? ''
  t.match(note, /gateway-default 2\.40x its CPU per request/, 'the raw ratio, as judged')
  t.match(note, /upstream's in the same run .*gateway-default 1\.20x, gateway-bare 1\.00x the floor/, 'the steadied ratios')
})
