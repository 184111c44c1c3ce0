// Upstreams with several endpoints, end to end over real sockets: balancing, endpoint choice per
// attempt, active health checks, outlier ejection, priority fail-over, panic, DNS, reload.
import t from 'tap'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import { request } from 'undici'
import { startStub, type Stub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, startGateway, type RunningGateway } from './helpers.js'
import type { EndpointSnapshot } from '../src/proxy/upstream/group.js'
import type { Exchange, ExchangeRecord, ProxyResponse } from '../src/core/exchange.js'
import { ExchangeSignal, newExchangeRecord } from '../src/core/exchange.js'
import { ANONYMOUS } from '../src/core/identity.js'

/** The upstream section with these endpoints, and more of its fields. */
function endpointList(urls: string[], more: Record<string, unknown> = {}): Record<string, unknown> {
  return { endpoints: urls.map((url) => ({ url })), ...more }
}

/** A plain upstream that answers `status` to everything (changeable) and counts what it gets. */
interface StatusServer {
  readonly url: string
  readonly port: number
  status: number
  requests: number
  close(): Promise<void>
}

async function startStatusServer(status: number): Promise<StatusServer> {
  const server = createServer((req: IncomingMessage, res) => {
    state.requests++
    req.resume()
    res.statusCode = state.status
    res.end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const state: StatusServer = {
    url: `http://127.0.0.1:${port}`,
    port,
    status,
    requests: 0,
    close: () => {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
  return state
}

async function statusOf(url: string): Promise<number> {
  const response = await request(url)
  await response.body.dump()
  return response.statusCode
}

async function sendMany(url: string, count: number): Promise<number[]> {
  const statuses: number[] = []
  for (let i = 0; i < count; i++) statuses.push(await statusOf(url))
  return statuses
}

async function endpointsOf(gw: RunningGateway): Promise<EndpointSnapshot[]> {
  const response = await request(`${gw.adminUrl}/upstreams`)
  const body = (await response.body.json()) as Record<string, { endpoints: EndpointSnapshot[] }>
  return body.app!.endpoints
}

/** Polls until `check` holds; generous bounds, as the machine is shared. */
async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

async function endpointState(gw: RunningGateway, url: string): Promise<EndpointSnapshot> {
  return (await endpointsOf(gw)).find((endpoint) => endpoint.address === url)!
}

const stubs: Stub[] = await Promise.all([startStub(), startStub(), startStub()])
t.teardown(() => Promise.all(stubs.map((stub) => stub.close())))
const [stubA, stubB, stubC] = stubs as [Stub, Stub, Stub]

/** Proxied requests a stub got on /status/200 (health checks use other paths). */
function served(stub: Stub): number {
  return stub.stats.byPath.get('/status/200') ?? 0
}

function resetStubs(): void {
  for (const stub of stubs) stub.resetStats()
}

t.test('round-robin spreads requests evenly and the access log names the endpoint', async (t) => {
  const gw = await startGateway(catchAllConfig(endpointList([stubA.url, stubB.url, stubC.url], { balancer: 'round-robin' })))
  t.teardown(() => gw.close())
  resetStubs()
  t.same(await sendMany(`${gw.url}/status/200`, 30), Array(30).fill(200))
  t.same(stubs.map((stub) => stub.stats.requests), [10, 10, 10])
  await new Promise((resolve) => setTimeout(resolve, 20))
  const endpoints = new Set(gw.accessLines().map((line) => line.endpoint))
  t.same([...endpoints].sort(), [stubA.url, stubB.url, stubC.url].sort())
})

t.test('least-request sends new requests to the idle endpoint', async (t) => {
  const gw = await startGateway(catchAllConfig(endpointList([stubA.url, stubB.url])))
  t.teardown(() => gw.close())
  resetStubs()
  const controller = new AbortController()
  const hung = request(`${gw.url}/fault/hang`, { signal: controller.signal }).catch(() => undefined)
  await waitFor('the hung request reached an endpoint', () => stubA.stats.inFlight + stubB.stats.inFlight === 1)
  const [busy, idle] = stubA.stats.inFlight === 1 ? [stubA, stubB] : [stubB, stubA]
  t.same(await sendMany(`${gw.url}/status/200`, 20), Array(20).fill(200))
  t.equal(idle.stats.requests, 20, 'every request went to the idle endpoint')
  t.equal(busy.stats.requests, 1, 'the busy one has only the hung request')
  t.match(await endpointState(gw, busy.url), { inFlight: 1 })
  controller.abort()
  await hung
  await waitFor('the in-flight count dropped', async () => (await endpointState(gw, busy.url)).inFlight === 0)
})

/** Calls a route's compiled handler like a retry layer would: same record, one attempt per call. */
async function attempt(gw: RunningGateway, record: ExchangeRecord): Promise<number> {
  const route = gw.gateway.plan.routes[0]!
  const exchange: Exchange = {
    request: {
      method: 'GET',
      path: '/status/200',
      authority: 'test',
      target: '/status/200',
      headers: ['host', 'test'],
      // A body-less request: dispatch never reads the client message.
      incoming: undefined as unknown as IncomingMessage,
      hasBody: false,
      requestId: 'retry-test',
      sendContinue: undefined,
      sendInterim: undefined,
    },
    identity: ANONYMOUS,
    route: route.info,
    log: gw.gateway.log,
    signal: new ExchangeSignal(),
    attempt: 0,
    record,
  }
  const response: ProxyResponse = await route.handler(exchange)
  const body = response.body
  if (body !== null && !Buffer.isBuffer(body)) {
    await new Promise<void>((resolve, reject) => body.pipe({ write: () => true, end: () => resolve(), fail: reject }))
  }
  return response.status
}

t.test('a second attempt on the same exchange record goes to another endpoint', async (t) => {
  const gw = await startGateway(catchAllConfig(endpointList([stubA.url, stubB.url, stubC.url])))
  t.teardown(() => gw.close())
  for (let exchange = 0; exchange < 10; exchange++) {
    const record: ExchangeRecord = newExchangeRecord()
    const used: string[] = []
    for (let i = 0; i < 3; i++) {
      t.equal(await attempt(gw, record), 200)
      used.push(record.endpoint)
    }
    t.equal(new Set(used).size, 3, `three attempts, three endpoints: ${used.join(' ')}`)
    t.equal(record.attempts, 3)
    // Every endpoint tried: a fourth attempt still goes somewhere.
    t.equal(await attempt(gw, record), 200)
  }
  const single = await startGateway(catchAllConfig(stubA.url))
  t.teardown(() => single.close())
  const record: ExchangeRecord = newExchangeRecord()
  t.equal(await attempt(single, record), 200)
  t.equal(await attempt(single, record), 200)
  t.equal(record.endpoint, stubA.url)
  t.equal(record.tried, null, 'one endpoint: nothing to avoid, nothing allocated')
})

t.test('a health check takes a stopped endpoint out of rotation and back when it returns', async (t) => {
  const a = await startStub()
  let b = await startStub()
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  const gw = await startGateway(catchAllConfig(endpointList([a.url, b.url], { balancer: 'round-robin', healthCheck: { path: '/status/204', interval: '100ms', timeout: '500ms', healthyThreshold: 2, unhealthyThreshold: 2 } })))
  t.teardown(() => gw.close())
  t.match(await endpointsOf(gw), [{ healthy: true }, { healthy: true }], 'endpoints start healthy')
  await b.close()
  await waitFor('b is unhealthy', async () => !(await endpointState(gw, b.url)).healthy)
  t.ok(gw.logs.some((line) => line.msg === 'upstream endpoint unhealthy' && line.endpoint === b.url), 'the transition is logged')
  t.match(await metricsText(gw), new RegExp(`waypost_upstream_endpoint_healthy\\{upstream="app",endpoint="${b.url.replace(/\./g, '\\.')}"\\} 0`))
  a.resetStats()
  t.same(await sendMany(`${gw.url}/status/200`, 10), Array(10).fill(200), 'no request reaches the stopped endpoint')
  t.equal(served(a), 10)

  b = await startStub({ port: b.port })
  await waitFor('b is healthy again', async () => (await endpointState(gw, b.url)).healthy)
  t.ok(gw.logs.some((line) => line.msg === 'upstream endpoint healthy' && line.endpoint === b.url))
  b.resetStats()
  await sendMany(`${gw.url}/status/200`, 10)
  t.equal(served(b), 5, 'round-robin includes it again')
})

t.test('outlier ejection after consecutive 5xx, and return after the ejection time', async (t) => {
  const bad = await startStatusServer(500)
  t.teardown(() => bad.close())
  const gw = await startGateway(catchAllConfig(endpointList([stubA.url, bad.url], { balancer: 'round-robin', outlierDetection: { consecutive5xx: 3, baseEjectionTime: '300ms' } })))
  t.teardown(() => gw.close())
  const statuses = await sendMany(`${gw.url}/status/200`, 20)
  t.equal(bad.requests, 3, 'ejected after its third 500 in a row')
  t.equal(statuses.filter((status) => status === 500).length, 3, 'the 500s themselves are passed on (retries are another layer\'s job)')
  t.match(await endpointState(gw, bad.url), { ejected: true, ejectedUntil: String, timesEjected: 1 })
  const metrics = await metricsText(gw)
  t.match(metrics, /waypost_upstream_ejections_total\{upstream="app"\} 1/)
  t.match(metrics, /waypost_upstream_endpoints_ejected\{upstream="app"\} 1/)
  t.ok(gw.logs.some((line) => line.msg === 'upstream endpoint ejected' && line.endpoint === bad.url))

  bad.status = 200
  await new Promise((resolve) => setTimeout(resolve, 400))
  await sendMany(`${gw.url}/status/200`, 10)
  t.equal(bad.requests, 3 + 5, 'back in rotation after the ejection time')
  t.match(await endpointState(gw, bad.url), { ejected: false, ejectedUntil: null })
  t.ok(gw.logs.some((line) => line.msg === 'upstream endpoint returned from ejection' && line.endpoint === bad.url))
})

t.test('connect failures eject too; the second ejection lasts twice as long', async (t) => {
  const gone = await startStatusServer(200)
  await gone.close()
  const gw = await startGateway(catchAllConfig(endpointList([stubA.url, gone.url], { balancer: 'round-robin', outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '200ms' } })))
  t.teardown(() => gw.close())
  const statuses = await sendMany(`${gw.url}/status/200`, 10)
  t.equal(statuses.filter((status) => status === 502).length, 2)
  t.match(await endpointState(gw, gone.url), { ejected: true, timesEjected: 1 })
  await new Promise((resolve) => setTimeout(resolve, 300))
  await sendMany(`${gw.url}/status/200`, 6)
  t.match(await endpointState(gw, gone.url), { ejected: true, timesEjected: 2 })
  const ejections = gw.logs.filter((line) => line.msg === 'upstream endpoint ejected').map((line) => line.forMs)
  t.same(ejections, [200, 400], 'ejected for base × the times ejected')
})

t.test('ejection never exceeds maxEjectionPercent', async (t) => {
  const servers = await Promise.all([503, 503, 503, 503].map((status) => startStatusServer(status)))
  t.teardown(() => Promise.all(servers.map((server) => server.close())))
  // Round-robin, so the two left share the load evenly: least-request breaks ties at random and
  // once gave one of them fewer than 10 of the 36 requests.
  const gw = await startGateway(catchAllConfig(endpointList(servers.map((server) => server.url), { balancer: 'round-robin', outlierDetection: { consecutiveGatewayErrors: 2, baseEjectionTime: '1m', maxEjectionPercent: 50 } })))
  t.teardown(() => gw.close())
  const statuses = await sendMany(`${gw.url}/status/200`, 40)
  t.ok(statuses.every((status) => status === 503), 'the upstream\'s own 503s, never a local no-endpoints')
  const endpoints = await endpointsOf(gw)
  t.equal(endpoints.filter((endpoint) => endpoint.ejected).length, 2, 'two of four ejected, no more')
  t.ok(servers.filter((server) => server.requests > 10).length >= 2, 'the other two keep taking traffic')

  const single = await startGateway(catchAllConfig({ url: servers[0]!.url, outlierDetection: { consecutive5xx: 1 } }))
  t.teardown(() => single.close())
  await sendMany(`${single.url}/x`, 5)
  t.match(await endpointsOf(single), [{ ejected: false }], 'a lone endpoint is never ejected below 100%')
})

t.test('priority groups: fail over to the backup group and back when the primary recovers', async (t) => {
  let primary = await startStub()
  const backup = await startStub()
  t.teardown(async () => {
    await primary.close()
    await backup.close()
  })
  const gw = await startGateway(catchAllConfig({
    endpoints: [
      { url: primary.url, priority: 0 },
      { url: backup.url, priority: 1 },
    ],
    healthCheck: { path: '/status/204', interval: '100ms', timeout: '500ms', healthyThreshold: 1, unhealthyThreshold: 1 },
  }))
  t.teardown(() => gw.close())
  await sendMany(`${gw.url}/status/200`, 5)
  t.equal(served(primary), 5)
  t.equal(served(backup), 0, 'the backup group takes nothing while the primary is healthy')

  await primary.close()
  await waitFor('the primary is unhealthy', async () => !(await endpointState(gw, primary.url)).healthy)
  t.same(await sendMany(`${gw.url}/status/200`, 5), Array(5).fill(200))
  t.equal(served(backup), 5, 'traffic failed over')
  t.ok(gw.logs.some((line) => line.msg === 'upstream traffic moves to another priority group' && line.to === 1))

  primary = await startStub({ port: primary.port })
  await waitFor('the primary is healthy again', async () => (await endpointState(gw, primary.url)).healthy)
  backup.resetStats()
  await sendMany(`${gw.url}/status/200`, 5)
  t.equal(served(primary), 5, 'traffic went back to the primary')
  t.equal(served(backup), 0)
})

t.test('panic: with no endpoint available, every endpoint of the first group is used', async (t) => {
  const gw = await startGateway(catchAllConfig(endpointList([stubA.url, stubB.url], { healthCheck: { path: '/status/500', interval: '100ms', timeout: '500ms' } })))
  t.teardown(() => gw.close())
  await waitFor('both endpoints are unhealthy', async () => (await endpointsOf(gw)).every((endpoint) => !endpoint.healthy))
  resetStubs()
  t.same(await sendMany(`${gw.url}/status/200`, 10), Array(10).fill(200), 'requests are still served')
  t.equal(served(stubA) + served(stubB), 10)
  t.ok(gw.logs.some((line) => line.msg.startsWith('upstream panic')), 'panic is logged')
  t.match(await metricsText(gw), /waypost_upstream_panic_total\{upstream="app"\} 10/)
})

t.test('DNS: localhost resolves to the stub (IPv4 only, so a stub on 127.0.0.1 is every endpoint)', async (t) => {
  const gw = await startGateway(catchAllConfig({ dns: { name: 'localhost', port: stubA.port, family: 4, ttl: '100ms' } }))
  t.teardown(() => gw.close())
  t.match(await endpointsOf(gw), [{ address: `http://127.0.0.1:${stubA.port}`, healthy: true }], 'ready only once the name has resolved')
  t.equal(await statusOf(`${gw.url}/status/200`), 200)
  await new Promise((resolve) => setTimeout(resolve, 250))
  t.equal((await endpointsOf(gw)).length, 1, 're-resolving the same answer changes nothing')
  t.notOk(gw.logs.some((line) => line.msg.startsWith('DNS resolve failed')))
})

t.test('reload keeps an unchanged upstream\'s state and replaces a changed one', async (t) => {
  const bad = await startStatusServer(503)
  t.teardown(() => bad.close())
  const upstream = endpointList([stubA.url, bad.url], { balancer: 'round-robin', outlierDetection: { consecutiveGatewayErrors: 1, baseEjectionTime: '1m' } })
  const gw = await startGateway(catchAllConfig(upstream))
  t.teardown(() => gw.close())
  await sendMany(`${gw.url}/status/200`, 4)
  t.match(await endpointState(gw, bad.url), { ejected: true })
  const before = gw.gateway.plan.upstreams.get('app')!

  writeFileSync(gw.configFile, catchAllConfig(upstream, { policies: { timeout: { request: '5s' } } }))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  t.equal(gw.gateway.plan.upstreams.get('app'), before, 'the same endpoint group serves the new plan')
  t.match(await endpointState(gw, bad.url), { ejected: true }, 'and the ejection survived the reload')

  writeFileSync(gw.configFile, catchAllConfig({ ...upstream, outlierDetection: { consecutiveGatewayErrors: 1, baseEjectionTime: '2m' } }))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  const after = gw.gateway.plan.upstreams.get('app')!
  t.not(after, before, 'a changed upstream gets a new group')
  t.match(await endpointState(gw, bad.url), { ejected: false })
  t.ok(before.endpointList.every((endpoint) => endpoint.pool.closed), 'the retired group\'s pools were closed')
  t.equal(await statusOf(`${gw.url}/status/200`), 200)
})
