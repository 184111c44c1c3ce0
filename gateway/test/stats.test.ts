// GET /stats, /stats/stream and /dashboard on the admin port: the routes of the running config
// with their rate, error ratio, percentiles, in-flight and policies' state; upstream endpoints and
// their health; the config version and the last reload's result; red, amber, green; and /ready
// waiting for upstream health only when admin.readyRequiresUpstream says so.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'undici'
import YAML from 'yaml'
import { startStub } from '../../upstream-stub/src/stub.js'
import { freePort, sleep, startGateway, type RunningGateway } from './helpers.js'
import type { Stats } from '../src/server/stats.js'

const stub = await startStub()
t.teardown(() => stub.close())

async function stats(gw: RunningGateway): Promise<Stats> {
  const response = await request(`${gw.adminUrl}/stats`)
  t.equal(response.headers['content-type'], 'application/json; charset=utf-8')
  return (await response.body.json()) as Stats
}

async function send(gw: RunningGateway, path: string): Promise<number> {
  const response = await request(`${gw.url}${path}`)
  await response.body.dump()
  return response.statusCode
}

function config(extra: Record<string, unknown> = {}): string {
  return YAML.stringify({
    listen: { address: '127.0.0.1:0' },
    admin: { address: '127.0.0.1:0' },
    drain: { delay: '0s', timeout: '2s' },
    upstreams: { app: { url: stub.url } },
    routes: [
      {
        name: 'api',
        match: { path: { prefix: '/' } },
        upstream: 'app',
        policies: { rateLimit: { rate: 1000 }, cache: {}, concurrency: { max: 10, queue: 5 }, breaker: { minRequests: 100 }, retry: { attempts: 1 } },
      },
      { name: 'fragile', match: { path: { prefix: '/fragile/' } }, upstream: 'app', rewrite: { pathPrefix: '/status/' }, policies: { breaker: { minRequests: 3, failureRatio: 0.5, openFor: '30s' } } },
      { name: 'quiet', match: { path: { prefix: '/quiet/' } }, upstream: 'app' },
    ],
    ...extra,
  })
}

t.test('the routes of the running config with rate, errors, percentiles and policy state; the config and its last reload', async (t) => {
  const gw = await startGateway(config())
  t.teardown(() => gw.close())
  let body = await stats(gw)
  t.same(body.routes.map((route) => route.name), ['api', 'fragile', 'quiet'])
  t.match(body, { health: 'green', gateway: { state: 'ready', ready: true, logLevel: 'info', audit: null }, config: { version: 1, source: 'startup', lastReload: { ok: true, version: 1 } } })
  t.match(body.routes[2], { name: 'quiet', health: 'green', rate: 0, errorRatio: null, p50Ms: null, inFlight: 0, requests: 0, policies: [] })
  t.same(body.routes[0]!.policies.map((report) => report.policy), ['rateLimit', 'cache', 'concurrency', 'breaker'], 'in layer order; retry with one attempt builds nothing')

  for (let i = 0; i < 4; i++) t.equal(await send(gw, '/delay/0.3'), 200)
  for (let i = 0; i < 16; i++) t.equal(await send(gw, '/status/200'), 200)
  body = await stats(gw)
  const api = body.routes[0]!
  t.equal(api.requests, 20)
  t.ok(api.rate > 0, `rate ${api.rate}/s`)
  t.equal(api.errorRatio, 0)
  t.ok(api.p50Ms !== null && api.p50Ms < 100, `p50 ${api.p50Ms} ms: most requests are quick`)
  t.ok(api.p95Ms !== null && api.p95Ms >= 250 && api.p95Ms <= 500, `p95 ${api.p95Ms} ms: the 300 ms requests, in their bucket (0.25 s, 0.5 s]`)
  t.ok(api.p99Ms !== null && api.p99Ms >= api.p95Ms!, 'p99 ≥ p95')
  t.equal(api.health, 'amber', 'p95 over the 200 ms SLO')
  t.match(api.why, [/p95 .* ms \(SLO 200 ms\)/])
  t.match(api.policies, [
    { policy: 'rateLimit', health: 'green', summary: /1000\/s, burst 1000 per ip; 0 limited in 10 s/, allowed: 20, limited: 0 },
    { policy: 'cache', health: 'green', entries: 0 },
    { policy: 'concurrency', health: 'green', summary: '0 of 10 in flight, 0 of 5 queued' },
    { policy: 'breaker', health: 'green', state: 'closed' },
  ])
  t.match(body.upstreams, [{ name: 'app', health: 'green', available: 1, total: 1, failureRatio: 0, endpoints: [{ address: new URL(stub.url).origin, healthy: true, ejected: false, inFlight: 0 }] }])

  // The breaker opens: the route turns red and says when half-open is due.
  for (let i = 0; i < 3; i++) t.equal(await send(gw, '/fragile/503'), 503)
  t.equal(await send(gw, '/fragile/200'), 503, 'refused by the open breaker')
  body = await stats(gw)
  t.match(body.routes[1], { name: 'fragile', health: 'red', errorRatio: 1, why: ['100.0% 5xx', /^breaker: open: half-open in \d+\.\d s$/] })
  const breaker = body.routes[1]!.policies[0]!
  t.match(breaker, { health: 'red', state: 'open', upstream: 'app' })
  t.equal(Date.parse(breaker.halfOpenAt as string) - Date.parse(breaker.openedAt as string), 30_000)
  t.equal(body.health, 'red')

  // A rejected reload: the plan in force stays, its version with it; the last reload says why.
  writeFileSync(gw.configFile, 'routes: [')
  await gw.gateway.reload('admin')
  body = await stats(gw)
  t.match(body.config, { version: 1, lastReload: { ok: false, source: 'admin', errors: [/YAML syntax/] } })
  writeFileSync(gw.configFile, config({ log: { level: 'warn' } }))
  await gw.gateway.reload('file')
  body = await stats(gw)
  t.match(body.config, { version: 2, source: 'file', lastReload: { ok: true, source: 'file', version: 2 } })
  t.equal(body.gateway.logLevel, 'warn')
})

t.test('upstream health: unhealthy endpoints turn an upstream red; /ready waits for it only with admin.readyRequiresUpstream', async (t) => {
  const closed = await freePort()
  const upstreams = {
    app: { url: stub.url, healthCheck: { path: '/status/200', interval: '100ms' } },
    sick: { endpoints: [{ url: stub.url }], healthCheck: { path: '/status/503', interval: '100ms', unhealthyThreshold: 1 } },
    half: { endpoints: [{ url: stub.url }, { url: `http://127.0.0.1:${closed}` }], healthCheck: { path: '/status/200', interval: '100ms', timeout: '200ms' } },
  }
  const routes = [
    { name: 'a', match: { path: { prefix: '/' } }, upstream: 'app' },
    { name: 's', match: { path: { prefix: '/s/' } }, upstream: 'sick' },
    { name: 'h', match: { path: { prefix: '/h/' } }, upstream: 'half' },
  ]
  const base = { listen: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, drain: { delay: '0s' }, upstreams, routes }
  const gw = await startGateway(YAML.stringify(base))
  t.teardown(() => gw.close())
  await sleep(400)
  const body = await stats(gw)
  const byName = Object.fromEntries(body.upstreams.map((upstream) => [upstream.name, upstream]))
  t.match(byName.app, { health: 'green', healthy: 1, total: 1 })
  t.match(byName.sick, { health: 'red', healthy: 0, why: [/no endpoint available/] })
  t.match(byName.half, { health: 'amber', healthy: 1, available: 1, total: 2, why: ['1 of 2 endpoints unhealthy or ejected'] })
  t.equal(body.health, 'red')
  const ready = await request(`${gw.adminUrl}/ready`)
  t.equal(ready.statusCode, 200, 'off by default: a sick upstream does not make the gateway unready')
  await ready.body.dump()

  writeFileSync(gw.configFile, YAML.stringify({ ...base, admin: { address: '127.0.0.1:0', readyRequiresUpstream: true } }))
  t.match(await gw.gateway.reload('admin'), { ok: true })
  await sleep(400)
  const unready = await request(`${gw.adminUrl}/ready`)
  t.equal(unready.statusCode, 503)
  t.equal(await unready.body.text(), 'not ready: upstream sick has no healthy endpoint\n')
  t.match((await stats(gw)).gateway, { ready: false, readyReason: 'upstream sick has no healthy endpoint' })
  const live = await request(`${gw.adminUrl}/live`)
  t.equal(live.statusCode, 200, 'still live')
  await live.body.dump()

  writeFileSync(gw.configFile, YAML.stringify({ ...base, admin: { address: '127.0.0.1:0', readyRequiresUpstream: true }, routes: [routes[0], routes[2]] }))
  t.match(await gw.gateway.reload('admin'), { ok: true })
  await sleep(300)
  const readyAgain = await request(`${gw.adminUrl}/ready`)
  t.equal(readyAgain.statusCode, 200, 'once no route uses the sick upstream; one healthy endpoint of half is enough')
  await readyAgain.body.dump()
})

t.test('GET /stats/stream: an event a second; the gateway ends open streams when it stops', async (t) => {
  const gw = await startGateway(config())
  const response = await request(`${gw.adminUrl}/stats/stream`)
  t.equal(response.statusCode, 200)
  t.equal(response.headers['content-type'], 'text/event-stream; charset=utf-8')
  let text = ''
  const started = Date.now()
  for await (const chunk of response.body) {
    text += (chunk as Buffer).toString()
    if ((text.match(/\nevent: stats\n/g) ?? []).length >= 3) break
  }
  const elapsed = Date.now() - started
  t.ok(elapsed >= 1500 && elapsed < 5000, `three events took ${elapsed} ms: one at once, then one a second`)
  t.match(text, /^retry: 1000\n\n/)
  const events = text.split('\n\n').filter((block) => block.startsWith('event: stats\n'))
  for (const event of events) t.match(JSON.parse(event.slice(event.indexOf('data: ') + 6)), { routes: [{ name: 'api' }, { name: 'fragile' }, { name: 'quiet' }] })
  const open = await request(`${gw.adminUrl}/stats/stream`)
  const ended = (async () => {
    for await (const _chunk of open.body) {
      // read until the gateway ends it
    }
    return true
  })()
  const closing = Date.now()
  await gw.close()
  t.ok(await ended, 'the stream ended')
  t.ok(Date.now() - closing < 3000, 'shutdown did not wait on the open stream')
})

t.test('GET /dashboard: one self-contained page, relative URLs only, a strict Content-Security-Policy', async (t) => {
  const gw = await startGateway(config())
  t.teardown(() => gw.close())
  const response = await request(`${gw.adminUrl}/dashboard`)
  t.equal(response.statusCode, 200)
  t.equal(response.headers['content-type'], 'text/html; charset=utf-8')
  const csp = String(response.headers['content-security-policy'])
  t.match(csp, /default-src 'none'; script-src 'sha256-[A-Za-z0-9+/]+=*'; style-src 'sha256-[A-Za-z0-9+/]+=*'; connect-src 'self'/)
  const html = await response.body.text()
  t.notMatch(html, /(src|href)="(https?:)?\/\//, 'nothing fetched from elsewhere')
  t.notMatch(html, /https?:\/\//, 'no absolute URL at all')
  t.match(html, /new EventSource\("stats\/stream"\)/, 'relative: works behind kubectl port-forward and path prefixes')
  const head = await request(`${gw.adminUrl}/dashboard`, { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  await head.body.dump()
})
