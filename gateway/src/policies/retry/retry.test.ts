// Retry's logic through the layer harness: which outcomes are retried, how long it waits (on the
// manual clock), what the budget refuses, what the client finally gets. gateway/test/retry.test.ts
// keeps body replay over real sockets, 100-continue, the per-try timeout chain and endpoints.
import t from 'tap'
import { fakeExchange, ManualClock, runLayer, scriptedUpstream, upstreamError, upstreamResponse } from '../../../test/layer-harness.js'
import { retry } from './retry.js'

const quick = { backoff: { base: '1ms', max: '1ms' } }

t.test('a GET is retried on 503 until it succeeds; every attempt is visible', async (t) => {
  const next = scriptedUpstream(503, 503, 200)
  const layer = runLayer(retry, { attempts: 3, ...quick }, { next })
  const exchange = fakeExchange()
  const response = await layer.clock.until(layer.send(exchange))
  t.equal(response.status, 200)
  t.equal(response.headers['x-waypost-attempts'], '3')
  t.equal(exchange.record.tries, '503,503,200')
  t.same(next.calls.map((call) => call.attempt), [0, 1, 2], 'each attempt knows its number')
  t.match(await layer.metrics.metrics(), /waypost_retries_total\{route="test",cause="503"\} 2/)
})

t.test('attempts are bounded: the last failure goes back to the client as the upstream gave it', async (t) => {
  const next = scriptedUpstream(503)
  const layer = runLayer(retry, { attempts: 2, ...quick }, { next })
  const response = await layer.clock.until(layer.call())
  t.equal(response.status, 503)
  t.equal(response.origin, 'upstream', 'the upstream\'s own answer, not a local one with a reason')
  t.equal(response.headers['x-waypost-reason'], undefined)
  t.equal(response.headers['x-waypost-attempts'], '2')
  t.equal(next.calls.length, 2)
})

t.test('only the listed statuses and failures are retried', async (t) => {
  const notListed = scriptedUpstream(500)
  const notListedLayer = runLayer(retry, quick, { next: notListed })
  t.equal((await notListedLayer.clock.until(notListedLayer.call())).status, 500)
  t.equal(notListed.calls.length, 1, '500 is not in the default statuses')

  const refused = scriptedUpstream(upstreamError('ECONNREFUSED'))
  const layer = runLayer(retry, quick, { next: refused })
  const exchange = fakeExchange()
  await t.rejects(layer.clock.until(layer.send(exchange)), { code: 'ECONNREFUSED' }, 'the last error reaches the client')
  t.equal(exchange.record.tries, 'connect-refused,connect-refused,connect-refused')

  const reset = scriptedUpstream(upstreamError('ECONNRESET'), 200)
  const resetLayer = runLayer(retry, { ...quick, retryOn: ['connect-failure'] }, { next: reset })
  await t.rejects(resetLayer.clock.until(resetLayer.call()), { code: 'ECONNRESET' }, 'a reset is not retried when only connect-failure is listed')
  t.equal(reset.calls.length, 1)
})

t.test('a POST is retried only with nonIdempotent or an Idempotency-Key, its body replayed intact', async (t) => {
  for (const method of ['POST', 'PATCH']) {
    const plain = scriptedUpstream(503, 200)
    const plainLayer = runLayer(retry, quick, { next: plain })
    t.equal((await plainLayer.clock.until(plainLayer.call({ method, body: 'payload' }))).status, 503)
    t.equal(plain.calls.length, 1, `${method} without opt-in: one attempt`)
  }

  const keyed = scriptedUpstream(503, 200)
  const layer = runLayer(retry, quick, { next: keyed })
  const response = await layer.clock.until(layer.call({ method: 'POST', body: 'payload', headers: { 'Idempotency-Key': 'k1' } }))
  t.equal(response.status, 200)
  t.same(keyed.calls.map((call) => call.request.body?.toString()), ['payload', 'payload'])

  const optedIn = scriptedUpstream(503, 200)
  const opted = runLayer(retry, { ...quick, nonIdempotent: true }, { next: optedIn })
  t.equal((await opted.clock.until(opted.call({ method: 'PATCH', body: 'x' }))).status, 200)
})

t.test('a body over bodyLimit is sent once and not retried', async (t) => {
  const next = scriptedUpstream(503, 200)
  const layer = runLayer(retry, { ...quick, bodyLimit: '4B' }, { next })
  const response = await layer.clock.until(layer.call({ method: 'PUT', body: 'hello' }))
  t.equal(response.status, 503)
  t.equal(next.calls.length, 1)
  t.equal(next.calls[0]!.request.body, undefined, 'streamed, not kept')
})

t.test('backoff waits a jittered time up to min(max, base × 2^(n-1))', async (t) => {
  // Full jitter draws from [0, ceiling): pin the draw near its top so each wait shows its ceiling.
  const random = Math.random
  Math.random = () => 0.999
  t.teardown(() => void (Math.random = random))
  const sentAt: number[] = []
  const clock = new ManualClock()
  const next = scriptedUpstream(503, 503, 503, 503, 200)
  const timed = scriptedUpstream((exchange) => {
    sentAt.push(clock.now())
    return next(exchange)
  })
  const layer = runLayer(retry, { attempts: 5, backoff: { base: '100ms', max: '300ms' } }, { next: timed, clock })
  t.equal((await layer.clock.until(layer.call())).status, 200)
  const waits = sentAt.slice(1).map((at, index) => at - sentAt[index]!)
  t.same(waits.map((wait) => Math.round(wait)), [100, 200, 300, 300], 'doubling from base, capped at max')
})

t.test('Retry-After is honoured up to retryAfterMax; a longer one is not waited for', async (t) => {
  const next = scriptedUpstream(() => upstreamResponse(503, { 'retry-after': '1' }), 200)
  const layer = runLayer(retry, { attempts: 2, retryAfterMax: '2s', ...quick }, { next })
  const started = layer.clock.now()
  t.equal((await layer.clock.until(layer.call())).status, 200)
  t.ok(layer.clock.now() - started >= 1000, `waited ${layer.clock.now() - started} ms of clock time for Retry-After: 1`)

  const tooLong = scriptedUpstream(() => upstreamResponse(503, { 'retry-after': '30' }), 200)
  const exchange = fakeExchange()
  const tooLongLayer = runLayer(retry, { attempts: 2, retryAfterMax: '2s', ...quick }, { next: tooLong })
  const refused = await tooLongLayer.clock.until(tooLongLayer.send(exchange))
  t.equal(refused.status, 503)
  t.equal(refused.headers['retry-after'], '30', "the upstream's Retry-After reaches the client")
  t.equal(exchange.record.tries, '503,retry-after-too-long')
})

t.test('the retry budget stops a retry storm; without it every request is tried attempts times', async (t) => {
  const offered = 300
  const storm = async (section: object): Promise<{ calls: number; metrics: string }> => {
    const next = scriptedUpstream(503)
    const layer = runLayer(retry, { attempts: 3, ...quick, ...section }, { next })
    for (let i = 0; i < offered; i++) await layer.clock.until(layer.call())
    return { calls: next.calls.length, metrics: await layer.metrics.metrics() }
  }
  const budgeted = await storm({ budget: { ratio: 0.2, minPerSecond: 0 } })
  t.ok(budgeted.calls <= offered * 1.2 + 1, `upstream load ${budgeted.calls} stays within (1 + ratio) × ${offered} offered`)
  t.ok(budgeted.calls > offered, `some retries were still made (${budgeted.calls - offered})`)
  t.match(budgeted.metrics, /waypost_retry_budget_exhausted_total\{route="test"\} [1-9]/, 'refused retries are counted')
  t.equal((await storm({ budget: false })).calls, offered * 3)
})

t.test('the budget refills as its window slides past the storm', async (t) => {
  const next = scriptedUpstream(503)
  const layer = runLayer(retry, { attempts: 2, ...quick, budget: { ratio: 0, minPerSecond: 1, window: '10s' } }, { next })
  for (let i = 0; i < 20; i++) await layer.clock.until(layer.call())
  t.equal(next.calls.length, 20 + 10, 'ten retries in a ten-second window of one per second')
  await layer.clock.advance(10_000)
  await layer.clock.until(layer.call())
  t.equal(next.calls.length, 32, 'a retry again once the window has moved on')
})

t.test('attempts: 1 builds no layer', async (t) => {
  const next = scriptedUpstream(503)
  const layer = runLayer(retry, { attempts: 1 }, { next })
  t.equal(layer.handler, next)
})

t.test('validate: backoff base longer than max, the default max included', async (t) => {
  const context = { upstreams: new Set<string>(), redis: false }
  t.same(retry.validate!({ backoff: { base: '2s', max: '100ms' } }, context), [{ path: '/backoff/base', message: 'base (2s) is longer than max (100ms)' }])
  t.same(retry.validate!({ backoff: { base: '1s' } }, context), [{ path: '/backoff/base', message: 'base (1s) is longer than max (250ms)' }], 'a base alone against the default max')
  t.same(retry.validate!({ backoff: { base: '10ms' } }, context), [])
})
