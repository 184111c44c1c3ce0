// sidecar-manifests/monitoring/: the Grafana dashboard and the PrometheusRule, checked against a
// real gateway's scrape (every series a query names is one the gateway exposes), by promtool (every
// query and rule parses; `promtool check rules`), and the SLO alerts by `promtool test rules` on
// synthetic series: a fast burn pages, a slow one makes a ticket, a burn within budget says nothing,
// and the page ends soon after the burn stops.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import YAML from 'yaml'
import { startStub } from '../../upstream-stub/src/stub.js'
import { metricsText, startGateway } from './helpers.js'

const monitoring = fileURLToPath(new URL('../../sidecar-manifests/monitoring/', import.meta.url))

function installed(command: string): boolean {
  const found = spawnSync(command, ['--version']).status === 0
  if (!found && process.env.WAYPOST_REQUIRE_PROMETHEUS === '1') throw new Error(`${command} is not installed (apt-get install prometheus)`)
  return found
}
const promtool = installed('promtool')
const NO_PROMTOOL = 'promtool is not installed (Debian package prometheus: apt-get install prometheus)'

interface Target {
  readonly refId: string
  readonly expr: string
}
interface Panel {
  readonly id: number
  readonly type: string
  readonly title: string
  readonly gridPos: { h: number; w: number; x: number; y: number }
  readonly targets?: Target[]
  readonly panels?: Panel[]
}
interface Dashboard {
  readonly uid: string
  readonly panels: Panel[]
  readonly templating: { list: Array<{ name: string; type: string; definition?: string }> }
}
interface RuleGroup {
  name: string
  rules: Array<{ record?: string; alert?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string>; for?: string }>
}

const dashboard = JSON.parse(readFileSync(join(monitoring, 'waypost-dashboard.json'), 'utf8')) as Dashboard
const ruleGroups = (YAML.parse(readFileSync(join(monitoring, 'prometheus-rule.yaml'), 'utf8')) as { spec: { groups: RuleGroup[] } }).spec.groups

function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])])
}

/** Grafana's variables replaced by what a query could hold: the expression is then plain PromQL. */
function withoutVariables(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?(\w+)\}?/g, 'x')
}

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan', 'Inf', 'NaN'])

/** The metric names a PromQL expression selects (label matchers, ranges, groupings and calls left out). */
export function metricNames(expr: string): string[] {
  const plain = withoutVariables(expr)
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names: string[] = []
  for (const match of plain.matchAll(/(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()/g)) {
    const name = match[1]!
    if (PROMQL_WORDS.has(name) || /^\d/.test(name)) continue
    names.push(name)
  }
  return names
}

/** Runs promtool with `args`; its output (stdout and stderr) and exit code. */
function runPromtool(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, output }))
  })
}

const work = mkdtempSync(join(tmpdir(), 'waypost-monitoring-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

/** What a gateway with every policy, a static endpoint list and a DNS upstream exposes after some traffic. */
async function exposedNames(): Promise<Set<string>> {
  const stub = await startStub()
  const gw = await startGateway(
    YAML.stringify({
      listen: { address: '127.0.0.1:0' },
      admin: { address: '127.0.0.1:0' },
      drain: { delay: '0s', timeout: '5s' },
      upstreams: {
        app: { endpoints: [{ url: stub.url }], outlierDetection: { consecutive5xx: 1000 }, healthCheck: { path: '/status/200', interval: '1s' } },
        named: { dns: { name: 'localhost', port: Number(new URL(stub.url).port), family: 4 } },
      },
      routes: [
        {
          name: 'guarded',
          match: { path: { prefix: '/' } },
          upstream: 'app',
          policies: {
            timeout: { request: '2s', perTry: '1s' },
            rateLimit: { rate: 1000 },
            cache: {},
            fault: { header: 'x-fault', abort: { percent: 100, status: 503 } },
            concurrency: { max: 50 },
            adaptiveConcurrency: {},
            breaker: { minRequests: 100 },
            retry: { attempts: 2 },
          },
        },
        { name: 'named', match: { path: { prefix: '/named/' } }, upstream: 'named' },
      ],
    }),
  )
  try {
    for (const path of ['/cacheable/a?cc=max-age=60', '/cacheable/a?cc=max-age=60', '/status/503', '/status/200', '/named/status/200']) await (await request(`${gw.url}${path}`)).body.dump()
    const text = await metricsText(gw)
    const names = new Set<string>()
    for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      names.add(name!)
      if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name!}${suffix}`)
    }
    return names
  } finally {
    await gw.close()
    await stub.close()
  }
}
const exposed = await exposedNames()

t.test('the dashboard: every query names series the gateway exposes', async (t) => {
  const panels = allPanels(dashboard.panels)
  const queries = panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ where: `panel ${panel.id} "${panel.title}" ${target.refId}`, expr: target.expr })))
  for (const variable of dashboard.templating.list) {
    if (variable.type === 'query') queries.push({ where: `variable ${variable.name}`, expr: variable.definition!.replace(/^label_values\((.*),\s*\w+\)$/, '$1') })
  }
  t.ok(queries.length >= 30, `${queries.length} queries`)
  const used = new Set<string>()
  for (const { where, expr } of queries) {
    const names = metricNames(expr)
    t.ok(names.length > 0, `${where} selects a series`)
    for (const name of names) {
      used.add(name)
      t.ok(exposed.has(name), `${where}: ${name} is exposed`)
    }
  }
  // The families the issue asks the dashboard to show.
  for (const name of ['waypost_requests_total', 'waypost_request_duration_seconds_bucket', 'waypost_breaker_state', 'waypost_breaker_transitions_total', 'waypost_rate_limit_total', 'waypost_cache_requests_total', 'waypost_cache_stored_bytes', 'waypost_upstream_endpoint_healthy', 'waypost_config_info', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_gc_duration_seconds_sum', 'nodejs_heap_size_used_bytes']) {
    t.ok(used.has(name), `the dashboard shows ${name}`)
  }
})

t.test('the dashboard is laid out on Grafana\'s 24-column grid with unique panel ids', async (t) => {
  const panels = allPanels(dashboard.panels)
  t.equal(new Set(panels.map((panel) => panel.id)).size, panels.length, 'unique ids')
  for (const panel of panels) t.ok(panel.gridPos.x >= 0 && panel.gridPos.x + panel.gridPos.w <= 24, `panel ${panel.id} fits the grid`)
  for (const panel of panels.filter((each) => each.type !== 'row')) t.ok((panel.targets ?? []).length > 0, `panel ${panel.id} has a query`)
})

t.test('promtool parses every dashboard query', { skip: promtool ? false : NO_PROMTOOL }, async (t) => {
  // promtool has no query linter offline; `check rules` parses each recording rule's expression.
  const rules = allPanels(dashboard.panels).flatMap((panel) => (panel.targets ?? []).map((target) => ({ record: `dashboard:panel_${panel.id}:${target.refId}`, expr: withoutVariables(target.expr) })))
  const file = join(work, 'dashboard-rules.yaml')
  writeFileSync(file, YAML.stringify({ groups: [{ name: 'dashboard', rules }] }))
  const { code, output } = await runPromtool(['check', 'rules', file])
  t.equal(code, 0, output)
  t.match(output, `SUCCESS: ${rules.length} rules found`)
})

t.test('the PrometheusRule: promtool check rules passes and every series it names is exposed', { skip: promtool ? false : NO_PROMTOOL }, async (t) => {
  const file = join(work, 'rules.yaml')
  writeFileSync(file, YAML.stringify({ groups: ruleGroups }))
  const { code, output } = await runPromtool(['check', 'rules', file])
  t.equal(code, 0, output)
  t.match(output, /SUCCESS: \d+ rules found/)
  const recorded = new Set(ruleGroups.flatMap((group) => group.rules.flatMap((rule) => (rule.record === undefined ? [] : [rule.record]))))
  for (const rule of ruleGroups.flatMap((group) => group.rules)) {
    for (const name of metricNames(rule.expr)) t.ok(recorded.has(name) || exposed.has(name), `${rule.record ?? rule.alert}: ${name}`)
  }
  const alerts = ruleGroups.flatMap((group) => group.rules.flatMap((rule) => (rule.alert === undefined ? [] : [rule.alert])))
  for (const alert of ['WaypostAvailabilityBudgetBurn', 'WaypostAvailabilityBudgetSlowBurn', 'WaypostLatencyBudgetBurn', 'WaypostLatencyBudgetSlowBurn']) t.ok(alerts.includes(alert), alert)
})

t.test('the SLO alerts burn as the SRE workbook says (promtool test rules)', { skip: promtool ? false : NO_PROMTOOL }, async (t) => {
  // Annotations are templates promtool check rules already parsed; the unit tests look at labels.
  const rulesFile = join(work, 'slo-rules.yaml')
  writeFileSync(rulesFile, YAML.stringify({ groups: ruleGroups.map((group) => ({ ...group, rules: group.rules.map(({ annotations: _annotations, ...rule }) => rule) })) }))
  const route = (name: string, extra: Record<string, string>) => `{namespace="shop",route="${name}",method="GET",${Object.entries(extra).map(([key, value]) => `${key}="${value}"`).join(',')}}`
  const requests = (name: string, statusClass: string, perMinute: string) => ({ series: `waypost_requests_total${route(name, { status_class: statusClass })}`, values: perMinute })
  const page = (name: string, slo: string) => ({ exp_labels: { severity: 'page', slo, namespace: 'shop', route: name } })
  const ticket = (name: string, slo: string) => ({ exp_labels: { severity: 'ticket', slo, namespace: 'shop', route: name } })
  const tests = [
    {
      name: 'a fast burn (2% errors against a 0.1% budget) pages and makes a ticket; the page ends once the short windows are clean',
      interval: '1m',
      input_series: [
        requests('api', '2xx', '0+980x130'),
        // 20 errors a minute for 70 minutes, then none.
        requests('api', '5xx', '0+20x70 1400+0x60'),
      ],
      alert_rule_test: [
        { eval_time: '70m', alertname: 'WaypostAvailabilityBudgetBurn', exp_alerts: [page('api', 'availability')] },
        { eval_time: '70m', alertname: 'WaypostAvailabilityBudgetSlowBurn', exp_alerts: [ticket('api', 'availability')] },
        // The 1h and 6h windows still hold the burn; the 5m and 30m ones no longer do.
        { eval_time: '101m', alertname: 'WaypostAvailabilityBudgetBurn', exp_alerts: [] },
        { eval_time: '101m', alertname: 'WaypostAvailabilityBudgetSlowBurn', exp_alerts: [ticket('api', 'availability')] },
      ],
    },
    {
      name: 'a slow burn (0.5% errors for a day) makes a ticket, no page',
      interval: '1m',
      input_series: [requests('api', '2xx', '0+995x1500'), requests('api', '5xx', '0+5x1500')],
      alert_rule_test: [
        { eval_time: '1450m', alertname: 'WaypostAvailabilityBudgetBurn', exp_alerts: [] },
        { eval_time: '1450m', alertname: 'WaypostAvailabilityBudgetSlowBurn', exp_alerts: [ticket('api', 'availability')] },
      ],
    },
    {
      name: 'within budget (0.05% errors), and requests no route took, say nothing',
      interval: '1m',
      input_series: [requests('api', '2xx', '0+1999x200'), requests('api', '5xx', '0+1x200'), { series: `waypost_requests_total{namespace="shop",route="-",method="GET",status_class="5xx"}`, values: '0+100x200' }],
      alert_rule_test: [
        { eval_time: '190m', alertname: 'WaypostAvailabilityBudgetBurn', exp_alerts: [] },
        { eval_time: '190m', alertname: 'WaypostAvailabilityBudgetSlowBurn', exp_alerts: [] },
      ],
    },
    {
      name: 'latency: 90% of requests over 200 ms pages; 3% over it says nothing',
      interval: '1m',
      input_series: [
        { series: 'waypost_request_duration_seconds_bucket{namespace="shop",route="slow",le="0.2"}', values: '0+100x80' },
        { series: 'waypost_request_duration_seconds_count{namespace="shop",route="slow"}', values: '0+1000x80' },
        { series: 'waypost_request_duration_seconds_bucket{namespace="shop",route="fine",le="0.2"}', values: '0+970x80' },
        { series: 'waypost_request_duration_seconds_count{namespace="shop",route="fine"}', values: '0+1000x80' },
      ],
      alert_rule_test: [
        { eval_time: '70m', alertname: 'WaypostLatencyBudgetBurn', exp_alerts: [page('slow', 'latency')] },
        { eval_time: '70m', alertname: 'WaypostLatencyBudgetSlowBurn', exp_alerts: [ticket('slow', 'latency')] },
      ],
    },
  ]
  const testFile = join(work, 'slo-tests.yaml')
  writeFileSync(testFile, YAML.stringify({ rule_files: [rulesFile], evaluation_interval: '1m', tests }))
  const { code, output } = await runPromtool(['test', 'rules', testFile])
  t.equal(code, 0, output)
  t.match(output, /SUCCESS/)
})

t.test('the metric-name reader itself', async (t) => {
  t.same(metricNames('sum by (route, le) (rate(a_bucket{x="y{z}", route=~"$route"}[$__rate_interval])) / on (route) group_left b_total offset 5m > bool 0.5'), ['a_bucket', 'b_total'])
  t.same(metricNames('histogram_quantile(0.99, sum by (le) (rate(c_bucket[5m]))) or vector(0)'), ['c_bucket'])
  t.same(metricNames('route:waypost_x:ratio_rate5m > (14.4 * 0.001) and d'), ['route:waypost_x:ratio_rate5m', 'd'])
})
