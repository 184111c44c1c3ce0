// Deadlines through the layer harness: a hung upstream and a manual clock, so each deadline is
// checked to the millisecond without waiting. gateway/test/policies.test.ts keeps the end-to-end
// deadline (the upstream request really aborted) and the streaming body that outlives it.
import t from 'tap'
import { fakeExchange, hungUpstream, runLayer, scriptedUpstream, stateOf } from '../../test/layer-harness.js'
import { timeout } from './timeout.js'

t.test('request: 504 timeout at the deadline, not before, and the exchange is aborted', async (t) => {
  const layer = runLayer(timeout, { request: '300ms' }, { next: hungUpstream() })
  const exchange = fakeExchange()
  const answer = layer.send(exchange)
  await layer.clock.advance(299)
  t.equal(await stateOf(answer), 'pending', 'not before the deadline')
  await layer.clock.advance(1)
  const response = await answer
  t.equal(response.status, 504)
  t.equal(response.headers['x-waypost-reason'], 'timeout route=test upstream=app')
  t.ok(exchange.signal.aborted, 'the signal tells the layers below (and the dispatch) to stop')
})

t.test('exchanges in flight together each time out on their own deadline; a fast one is untouched', async (t) => {
  const layer = runLayer(timeout, { request: '200ms' }, { next: hungUpstream() })
  const first = layer.call()
  await layer.clock.advance(70)
  const second = layer.call()
  await layer.clock.advance(129)
  t.equal(await stateOf(first), 'pending')
  await layer.clock.advance(1)
  t.equal((await first).status, 504, 'the first at 200 ms')
  t.equal(await stateOf(second), 'pending', 'the second is not cut short by the first')
  await layer.clock.advance(70)
  t.equal((await second).status, 504, 'the second at its own 200 ms')
  const fast = runLayer(timeout, { request: '200ms' }, { next: scriptedUpstream(200) })
  t.equal((await fast.call()).status, 200)
  t.equal(fast.clock.pending, 0, 'an answered exchange leaves no timer behind')
})

t.test('perTry: 504 attempt-timeout for the attempt, the exchange itself not aborted', async (t) => {
  const layer = runLayer(timeout, { perTry: '200ms' }, { next: hungUpstream() })
  const exchange = fakeExchange()
  const answer = layer.send(exchange)
  await layer.clock.advance(200)
  const response = await answer
  t.equal(response.status, 504)
  t.equal(exchange.record.reason, 'attempt-timeout')
  t.notOk(exchange.signal.aborted, 'a retry around it may try again')
})

t.test('the request deadline ends a per-try attempt as a timeout, not an attempt-timeout', async (t) => {
  const layer = runLayer(timeout, { request: '100ms', perTry: '500ms' }, { next: hungUpstream() })
  const answer = layer.call()
  await layer.clock.advance(100)
  t.equal((await answer).headers['x-waypost-reason'], 'timeout route=test upstream=app')
})

t.test('no deadline configured: no layer', async (t) => {
  const next = scriptedUpstream(200)
  t.equal(runLayer(timeout, {}, { next }).handler, next)
})
