// Tracing end to end: real gateways in front of the stub, exporting by OTLP/HTTP to a real receiver
// on 127.0.0.1. A caller's context is continued (W3C and B3), the upstream sees exactly one
// traceparent (the gateway's client span), retries are sibling attempts, policies leave events,
// sampling honours the caller, a collector that is down or hangs costs requests and the drain
// nothing, and with tracing off nothing about trace headers changes.
import t, { type Test } from 'tap'
import { request } from 'undici'
import WebSocket from 'ws'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, freePort, sleep, spawnGateway, startGateway, tempConfig } from './helpers.js'
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './otlp-receiver.js'

const stub = await startStub()
t.teardown(() => stub.close())

/** Spans leave in batches at most this long after they end. */
const FAST_EXPORT = { OTEL_BSP_SCHEDULE_DELAY: '20' }

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'

/** A fresh trace id per request, so tests sharing a receiver never mix their spans up. */
function traceId(seed: number): string {
  return `${seed.toString(16).padStart(8, '0')}${'a'.repeat(24)}`
}

async function receiver(t: Test): Promise<OtlpReceiver> {
  const otlp = await startOtlpReceiver()
  t.teardown(() => otlp.close())
  return otlp
}

interface HeadersEcho {
  headers: Record<string, string>
  rawHeaders: string[]
}

/** Every value of one header the upstream received (rawHeaders keeps duplicates). */
function rawValues(echo: HeadersEcho, name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < echo.rawHeaders.length; i += 2) if (echo.rawHeaders[i]!.toLowerCase() === name) out.push(echo.rawHeaders[i + 1]!)
  return out
}

function ofTrace(spans: ReceivedSpan[], trace: string): ReceivedSpan[] {
  return spans.filter((span) => span.traceId === trace)
}

/** Waits for a server span and `clients` client spans of `trace`. */
async function traceOf(otlp: OtlpReceiver, trace: string, clients = 1): Promise<{ server: ReceivedSpan; clients: ReceivedSpan[] }> {
  await otlp.waitFor((spans) => {
    const mine = ofTrace(spans, trace)
    return mine.some((span) => span.kind === SPAN_KIND.server) && mine.filter((span) => span.kind === SPAN_KIND.client).length >= clients
  })
  const mine = ofTrace(otlp.spans, trace)
  return { server: mine.find((span) => span.kind === SPAN_KIND.server)!, clients: mine.filter((span) => span.kind === SPAN_KIND.client) }
}

t.test('a caller\'s traceparent: server span parented to it, one client span, the upstream sees exactly that client span', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const response = await request(`${gw.url}/headers?secret=hunter2`, {
    headers: { traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01`, tracestate: 'vendor=abc,other=1', baggage: 'user=42;prop, tenant=acme', 'user-agent': 'trace-test/1' },
  })
  t.equal(response.statusCode, 200)
  const echo = (await response.body.json()) as HeadersEcho
  const { server, clients } = await traceOf(otlp, CALLER_TRACE)
  t.equal(clients.length, 1, 'one attempt, one client span')
  const client = clients[0]!

  t.equal(server.parentSpanId, CALLER_SPAN, 'the server span is a child of the caller\'s span')
  t.equal(server.name, 'GET all', '"{method} {http.route}", the route\'s name')
  t.match(server.attributes, {
    'http.request.method': 'GET',
    'http.route': 'all',
    'url.path': '/headers',
    'url.scheme': 'http',
    'server.address': '127.0.0.1',
    'http.response.status_code': 200,
    'user_agent.original': 'trace-test/1',
    'waypost.upstream': 'app',
    'waypost.attempts': 1,
  })
  t.equal(server.attributes['error.type'], undefined, 'no error.type for a 200')
  t.equal(client.parentSpanId, server.spanId, 'the client span is a child of the server span')
  t.equal(client.name, 'GET')
  t.match(client.attributes, { 'http.request.method': 'GET', 'server.address': '127.0.0.1', 'server.port': stub.port, 'url.full': `${stub.url}/headers`, 'http.response.status_code': 200 })
  t.notOk(JSON.stringify([server.attributes, client.attributes]).includes('hunter2'), 'no query string in any span')
  t.equal(server.resource['service.name'], 'waypost')

  t.same(rawValues(echo, 'traceparent'), [`00-${CALLER_TRACE}-${client.spanId}-01`], 'exactly one traceparent upstream: the client span\'s, not the caller\'s')
  t.same(rawValues(echo, 'tracestate'), ['vendor=abc,other=1'], 'tracestate continues')
  t.same(rawValues(echo, 'baggage'), ['user=42;prop, tenant=acme'], 'baggage passes unchanged')

  const line = gw.accessLines().find((entry) => entry.path === '/headers')
  t.match(line, { trace_id: CALLER_TRACE, span_id: server.spanId }, 'the access line names the trace and the server span')
  t.equal(response.headers.traceresponse, undefined, 'no traceresponse unless asked for')
})

t.test('a request without trace context starts a trace; the upstream gets its traceparent', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlp.url}/v1/traces`, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const echo = (await (await request(`${gw.url}/headers`)).body.json()) as HeadersEcho
  const [traceparent] = rawValues(echo, 'traceparent')
  const [, trace, span, flags] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent ?? '') ?? []
  t.ok(trace, `a traceparent went upstream (${traceparent})`)
  t.equal(flags, '01', 'sampled at the default ratio 1')
  const { server, clients } = await traceOf(otlp, trace!)
  t.equal(server.parentSpanId, '', 'a root span')
  t.equal(clients[0]!.spanId, span)
  const line = gw.accessLines().find((entry) => entry.path === '/headers')
  t.match(line, { trace_id: trace, span_id: server.spanId })
})

t.test('retries are sibling client spans, each attempt carries its own traceparent, retry events name the cause', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { retry: { attempts: 3, backoff: { base: '1ms', max: '5ms' } } } }), {
    environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT },
  })
  t.teardown(() => gw.close())
  const trace = traceId(1)
  const response = await request(`${gw.url}/sequence/traced-retry?codes=503,502,200`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` } })
  t.equal(response.statusCode, 200)
  await response.body.dump()
  const { server, clients } = await traceOf(otlp, trace, 3)
  t.equal(clients.length, 3)
  const ordered = [...clients].sort((a, b) => (a.startNanos < b.startNanos ? -1 : 1))
  t.same(ordered.map((span) => span.parentSpanId), [server.spanId, server.spanId, server.spanId], 'siblings: all children of the server span')
  t.same(ordered.map((span) => span.attributes['http.response.status_code']), [503, 502, 200])
  t.same(ordered.map((span) => span.attributes['http.request.resend_count']), [undefined, 1, 2], 'resend_count on the retries')
  t.same(ordered.map((span) => span.attributes['error.type']), ['503', '502', undefined], 'a client span is in error from 400')
  t.same(ordered.map((span) => span.statusCode), [2, 2, 0])
  const retries = server.events.filter((event) => event.name === 'waypost.retry')
  t.same(retries.map((event) => event.attributes), [
    { 'waypost.retry.attempt': 1, 'waypost.retry.reason': '503' },
    { 'waypost.retry.attempt': 2, 'waypost.retry.reason': '502' },
  ])
  t.equal(server.attributes['waypost.attempts'], 3)
})

t.test('an attempt that fails before a response: error.type is the reason, the server span a 5xx in error', async (t) => {
  const otlp = await receiver(t)
  const closedPort = await freePort()
  const gw = await startGateway(catchAllConfig(`http://127.0.0.1:${closedPort}`), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const trace = traceId(2)
  const response = await request(`${gw.url}/x`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` } })
  t.equal(response.statusCode, 502)
  await response.body.dump()
  const { server, clients } = await traceOf(otlp, trace)
  t.equal(clients[0]!.attributes['error.type'], 'connect-refused')
  t.equal(clients[0]!.statusCode, 2)
  t.equal(server.attributes['error.type'], 'connect-refused')
  t.equal(server.attributes['http.response.status_code'], 502)
  t.equal(server.statusCode, 2)
})

t.test('a client that leaves: the server span says 499 and client-gone, the attempt\'s span ends too', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const trace = traceId(10)
  const controller = new AbortController()
  const pending = request(`${gw.url}/delay/5`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` }, signal: controller.signal })
  setTimeout(() => controller.abort(), 200)
  await t.rejects(pending)
  const { server, clients } = await traceOf(otlp, trace)
  t.match(server.attributes, { 'http.response.status_code': 499, 'error.type': 'client-gone' })
  t.equal(server.statusCode, 0, 'not the server\'s error')
  t.equal(clients[0]!.parentSpanId, server.spanId)
})

t.test('B3 multi and single headers are continued, and the upstream gets them back in kind, for the client span', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())

  const multiTrace = traceId(3)
  const multi = (await (
    await request(`${gw.url}/headers`, { headers: { 'x-b3-traceid': multiTrace, 'x-b3-spanid': CALLER_SPAN, 'x-b3-sampled': '1' } })
  ).body.json()) as HeadersEcho
  const multiSpans = await traceOf(otlp, multiTrace)
  t.equal(multiSpans.server.parentSpanId, CALLER_SPAN, 'B3 multi: the server span is the caller\'s child')
  const multiClient = multiSpans.clients[0]!.spanId
  t.same(rawValues(multi, 'traceparent'), [`00-${multiTrace}-${multiClient}-01`], 'and the upstream gets one traceparent')
  t.same(rawValues(multi, 'x-b3-traceid'), [multiTrace])
  t.same(rawValues(multi, 'x-b3-spanid'), [multiClient], 'x-b3-spanid replaced by the client span')
  t.same(rawValues(multi, 'x-b3-parentspanid'), [multiSpans.server.spanId])
  t.same(rawValues(multi, 'x-b3-sampled'), ['1'])
  t.same(rawValues(multi, 'b3'), [], 'no single header the caller did not use')

  const singleTrace = traceId(4)
  const single = (await (await request(`${gw.url}/headers`, { headers: { b3: `${singleTrace}-${CALLER_SPAN}-1` } })).body.json()) as HeadersEcho
  const singleSpans = await traceOf(otlp, singleTrace)
  t.equal(singleSpans.server.parentSpanId, CALLER_SPAN, 'B3 single: the server span is the caller\'s child')
  const singleClient = singleSpans.clients[0]!.spanId
  t.same(rawValues(single, 'b3'), [`${singleTrace}-${singleClient}-1-${singleSpans.server.spanId}`], 'b3 replaced by the client span')
  t.same(rawValues(single, 'traceparent'), [`00-${singleTrace}-${singleClient}-01`])
  t.same(rawValues(single, 'x-b3-spanid'), [])
})

t.test('sampling: ratio 0 exports nothing for an unsampled caller (its trace still propagates), a sampled caller is honoured', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { sampler: { ratio: 0 } } } }), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const unsampled = traceId(5)
  const echo = (await (await request(`${gw.url}/headers`, { headers: { traceparent: `00-${unsampled}-${CALLER_SPAN}-00`, tracestate: 'vendor=x' } })).body.json()) as HeadersEcho
  const [forwarded] = rawValues(echo, 'traceparent')
  t.match(forwarded, new RegExp(`^00-${unsampled}-[0-9a-f]{16}-00$`), 'the upstream continues the trace, unsampled')
  t.not(forwarded, `00-${unsampled}-${CALLER_SPAN}-00`, 'with the gateway\'s span id')
  t.same(rawValues(echo, 'traceparent').length, 1)
  t.same(rawValues(echo, 'tracestate'), ['vendor=x'], 'and the caller\'s tracestate')
  const rootless = (await (await request(`${gw.url}/headers`)).body.json()) as HeadersEcho
  t.match(rawValues(rootless, 'traceparent')[0], /-00$/, 'a new trace at ratio 0 is not sampled')

  const sampled = traceId(6)
  await (await request(`${gw.url}/headers`, { headers: { traceparent: `00-${sampled}-${CALLER_SPAN}-01` } })).body.dump()
  // Spans are exported in the order they end: once the sampled trace has arrived, the others would have too.
  await traceOf(otlp, sampled)
  await sleep(100)
  t.same(ofTrace(otlp.spans, unsampled), [], 'nothing of the unsampled trace')
  t.equal(new Set(otlp.spans.map((span) => span.traceId)).size, 1, 'only the sampled caller\'s trace was exported')
})

t.test('OTEL_TRACES_SAMPLER wins over the file; OTEL_SERVICE_NAME over tracing.serviceName', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { serviceName: 'from-file', sampler: { ratio: 1 } } } }), {
    environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_TRACES_SAMPLER: 'always_on', OTEL_SERVICE_NAME: 'checkout-sidecar', ...FAST_EXPORT },
  })
  t.teardown(() => gw.close())
  // always_on is not parent-based: an unsampled caller's request is sampled anyway.
  const trace = traceId(7)
  await (await request(`${gw.url}/headers`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-00` } })).body.dump()
  const { server } = await traceOf(otlp, trace)
  t.equal(server.resource['service.name'], 'checkout-sidecar')
})

t.test('the policy file alone turns tracing on; a base endpoint gets /v1/traces; traceresponse names the server span', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { enabled: true, endpoint: otlp.url, serviceName: 'edge', traceResponse: true } } }), { environment: FAST_EXPORT })
  t.teardown(() => gw.close())
  const trace = traceId(8)
  const response = await request(`${gw.url}/status/404`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` } })
  await response.body.dump()
  const { server } = await traceOf(otlp, trace)
  t.equal(response.headers.traceresponse, `00-${trace}-${server.spanId}-01`)
  t.equal(server.resource['service.name'], 'edge')
  t.equal(server.attributes['http.response.status_code'], 404)
  t.equal(server.statusCode, 0, 'a 4xx leaves a server span unset, not in error')
  const refused = await request(`${gw.url}/x`, { method: 'TRACE', headers: { traceparent: `00-${traceId(9)}-${CALLER_SPAN}-01` } })
  await refused.body.dump()
  t.equal(refused.statusCode, 405)
  const local = await traceOf(otlp, traceId(9), 0)
  t.match(local.server.attributes, { 'waypost.reason': 'method-not-allowed', 'http.response.status_code': 405 }, 'local answers have server spans too')
  t.ok(refused.headers.traceresponse, 'and a traceresponse')
})

t.test('policy decisions are events on the server span: rate limit, breaker, cache', async (t) => {
  const otlp = await receiver(t)
  const policies = { rateLimit: { rate: 1, burst: 2 }, breaker: {}, cache: { defaultTtl: '1m' } }
  const gw = await startGateway(catchAllConfig(stub.url, { policies }), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) {
    const response = await request(`${gw.url}/cache/60`, { headers: { traceparent: `00-${traceId(20 + i)}-${CALLER_SPAN}-01` } })
    statuses.push(response.statusCode)
    await response.body.dump()
  }
  t.same(statuses, [200, 200, 429])
  const first = (await traceOf(otlp, traceId(20))).server
  const second = (await traceOf(otlp, traceId(21), 0)).server
  const third = (await traceOf(otlp, traceId(22), 0)).server
  const eventsOf = (span: ReceivedSpan): Array<[string, unknown]> => span.events.map((event) => [event.name, event.attributes])
  t.same(eventsOf(first), [
    ['waypost.rate_limit', { 'waypost.rate_limit.result': 'allowed', 'waypost.rate_limit.remaining': 1 }],
    ['waypost.breaker', { 'waypost.breaker.state': 'closed', 'waypost.breaker.decision': 'pass' }],
    // A miss is known once the upstream has answered (the layer order is rate limit, cache, breaker).
    ['waypost.cache', { 'waypost.cache.result': 'miss' }],
  ])
  t.same(eventsOf(second), [
    ['waypost.rate_limit', { 'waypost.rate_limit.result': 'allowed', 'waypost.rate_limit.remaining': 0 }],
    ['waypost.cache', { 'waypost.cache.result': 'hit' }],
  ], 'a hit never reaches the breaker')
  t.equal(second.attributes['waypost.cache.result'], 'hit')
  t.same(eventsOf(third), [['waypost.rate_limit', { 'waypost.rate_limit.result': 'limited', 'waypost.rate_limit.remaining': 0 }]])
  t.equal(third.attributes['waypost.reason'], 'rate-limited')
  t.equal(ofTrace(otlp.spans, traceId(21)).filter((span) => span.kind === SPAN_KIND.client).length, 0, 'a cache hit has no client span')
})

t.test('an open breaker is an event on the rejected request\'s span', async (t) => {
  const otlp = await receiver(t)
  const policies = { breaker: { minRequests: 2, failureRatio: 0.5, openFor: '1m' } }
  const gw = await startGateway(catchAllConfig(stub.url, { policies }), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  for (let i = 0; i < 3; i++) await (await request(`${gw.url}/status/503`)).body.dump()
  const trace = traceId(30)
  const response = await request(`${gw.url}/status/200`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` } })
  await response.body.dump()
  t.equal(response.statusCode, 503)
  const { server } = await traceOf(otlp, trace, 0)
  t.same(server.events.map((event) => event.attributes), [{ 'waypost.breaker.state': 'open', 'waypost.breaker.decision': 'reject' }])
  t.match(server.attributes, { 'waypost.reason': 'breaker-open', 'error.type': 'breaker-open' })
})

t.test('a WebSocket handshake: server span and client span, one traceparent upstream, the span ends at the 101', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, ...FAST_EXPORT } })
  t.teardown(() => gw.close())
  const trace = traceId(40)
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws`, { headers: { traceparent: `00-${trace}-${CALLER_SPAN}-01` } })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  const { server, clients } = await traceOf(otlp, trace)
  t.equal(server.parentSpanId, CALLER_SPAN)
  t.equal(server.attributes['http.response.status_code'], 101)
  t.equal(clients[0]!.parentSpanId, server.spanId)
  t.equal(clients[0]!.attributes['http.response.status_code'], 101)
  ws.close()
})

t.test('a collector that is down: requests are unaffected', async (t) => {
  const closedPort = await freePort()
  // A short export timeout: the exporter does not retry a refused connection past it.
  const gw = await startGateway(catchAllConfig(stub.url), {
    environment: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${closedPort}`, OTEL_EXPORTER_OTLP_TIMEOUT: '200', ...FAST_EXPORT },
  })
  t.teardown(() => gw.close())
  const failures = (): number => gw.logs.filter((line) => line.msg.startsWith('trace export failed')).length
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 25; i++) {
      const started = performance.now()
      const response = await request(`${gw.url}/bytes/16`)
      t.equal(response.statusCode, 200)
      await response.body.dump()
      t.ok(performance.now() - started < 1000, 'answered at once')
    }
    // Each round's spans are one batch, refused.
    for (let waited = 0; failures() === 0 && waited < 5000; waited += 20) await sleep(20)
    await sleep(300)
  }
  t.match(gw.logs.find((line) => line.msg.startsWith('trace export failed')), { level: 40, endpoint: `http://127.0.0.1:${closedPort}/v1/traces` }, 'the failed export is logged')
  t.equal(failures(), 1, 'once a minute at most, not per batch')
})

t.test('a collector that never answers: requests are unaffected and shutdown waits no longer than flushTimeout', async (t) => {
  const silent = await startOtlpReceiver({ mode: 'silent' })
  t.teardown(() => silent.close())
  // Spans wait in the queue (a long batch delay), so the shutdown's flush is what meets the silent collector.
  const gw = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { flushTimeout: '300ms' } } }), {
    environment: { OTEL_EXPORTER_OTLP_ENDPOINT: silent.url, OTEL_BSP_SCHEDULE_DELAY: '60000' },
  })
  for (let i = 0; i < 20; i++) {
    const started = performance.now()
    const response = await request(`${gw.url}/bytes/16`)
    await response.body.dump()
    t.equal(response.statusCode, 200)
    t.ok(performance.now() - started < 1000, 'answered at once')
  }
  const started = performance.now()
  await gw.close()
  const took = performance.now() - started
  t.ok(silent.requests >= 1, 'the shutdown did try to export')
  t.ok(took < 1500, `shutdown took ${Math.round(took)} ms (flushTimeout 300ms; the exporter's own timeout is 10 s)`)
  t.ok(gw.logs.some((line) => line.msg.startsWith('trace flush timed out at shutdown')), 'the lost spans are logged')
})

t.test('SIGTERM: the real process exits promptly with a collector that never answers', async (t) => {
  const silent = await startOtlpReceiver({ mode: 'silent' })
  t.teardown(() => silent.close())
  const file = tempConfig(catchAllConfig(stub.url, { extra: { tracing: { flushTimeout: '500ms' } } }))
  const gw = await spawnGateway(file, { OTEL_EXPORTER_OTLP_ENDPOINT: silent.url, OTEL_BSP_SCHEDULE_DELAY: '60000' })
  t.teardown(() => gw.stop())
  await gw.waitForLog((line) => line.msg === 'tracing on')
  for (let i = 0; i < 5; i++) await (await request(`${gw.url}/bytes/16`)).body.dump()
  const started = performance.now()
  gw.child.kill('SIGTERM')
  const exit = await gw.exited
  const took = performance.now() - started
  t.equal(exit.code, 0)
  t.ok(took < 3000, `exited ${Math.round(took)} ms after SIGTERM`)
})

t.test('tracing off: no span, no header change; the caller\'s traceparent passes through as it came', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { traceResponse: true } } }))
  t.teardown(() => gw.close())
  t.equal(gw.gateway.tracing, undefined)
  const caller = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`
  const response = await request(`${gw.url}/headers`, { headers: { traceparent: caller, tracestate: 'vendor=abc', 'x-b3-traceid': CALLER_TRACE, 'x-b3-spanid': CALLER_SPAN } })
  const echo = (await response.body.json()) as HeadersEcho
  t.same(rawValues(echo, 'traceparent'), [caller], 'forwarded as-is, like any header')
  t.same(rawValues(echo, 'tracestate'), ['vendor=abc'])
  t.same(rawValues(echo, 'x-b3-spanid'), [CALLER_SPAN])
  t.equal(response.headers.traceresponse, undefined)
  const plain = (await (await request(`${gw.url}/headers`)).body.json()) as HeadersEcho
  t.same(rawValues(plain, 'traceparent'), [], 'none added')
  const line = gw.accessLines().find((entry) => entry.path === '/headers')
  t.equal(line?.trace_id, undefined)
  t.notOk(gw.logs.some((entry) => entry.msg === 'tracing on'))
})

t.test('tracing.enabled: false wins over an endpoint in the environment; OTEL_SDK_DISABLED over the file', async (t) => {
  const off = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { enabled: false } } }), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' } })
  t.teardown(() => off.close())
  t.equal(off.gateway.tracing, undefined)
  const disabled = await startGateway(catchAllConfig(stub.url, { extra: { tracing: { enabled: true } } }), { environment: { OTEL_SDK_DISABLED: 'true' } })
  t.teardown(() => disabled.close())
  t.equal(disabled.gateway.tracing, undefined)
  const bad = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' } })
  t.teardown(() => bad.close())
  t.equal(bad.gateway.tracing, undefined, 'an endpoint that is not a URL: off, and said so')
  t.match(bad.logs.find((line) => line.msg === 'tracing off'), { why: /OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318" is not an http\(s\) URL/ })
  t.equal((await request(`${bad.url}/status/200`)).statusCode, 200, 'and it serves')
})

t.test('a reload that changes tracing warns that it takes a restart', async (t) => {
  const otlp = await receiver(t)
  const gw = await startGateway(catchAllConfig(stub.url), { environment: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url } })
  t.teardown(() => gw.close())
  const { writeFileSync } = await import('node:fs')
  writeFileSync(gw.configFile, catchAllConfig(stub.url, { extra: { tracing: { sampler: { ratio: 0.5 } } } }))
  const result = await gw.gateway.reload('test')
  t.ok(result.ok)
  t.ok(gw.logs.some((line) => line.msg === 'tracing changes only on restart'))
})
