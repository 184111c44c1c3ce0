// Fault injection through the layer harness; gateway/test/fault.test.ts keeps one of each end to end.
import t from 'tap'
import { fakeExchange, runLayer, scriptedUpstream, stateOf } from '../../test/layer-harness.js'
import { fault } from './fault.js'

t.test('abort 100% answers every request with its status, without the upstream', async (t) => {
  const next = scriptedUpstream(200)
  const layer = runLayer(fault, { abort: { percent: 100, status: 503 } }, { next })
  for (let i = 0; i < 10; i++) t.equal((await layer.call()).headers['x-waypost-reason'], 'fault-abort route=test upstream=app')
  t.equal(next.calls.length, 0)
  t.match(await layer.metrics.metrics(), /waypost_faults_injected_total\{route="test",kind="abort"\} 10/)
})

t.test('percent 0 builds no layer', async (t) => {
  const next = scriptedUpstream(200)
  t.equal(runLayer(fault, { abort: { percent: 0, status: 500 }, delay: { percent: 0, duration: '5s' } }, { next }).handler, next)
})

t.test('with a header, only requests carrying it are eligible', async (t) => {
  const layer = runLayer(fault, { header: 'X-Waypost-Fault', abort: { percent: 100, status: 502 } }, { next: scriptedUpstream(200) })
  t.equal((await layer.call()).status, 200, 'ordinary traffic is left alone')
  t.equal((await layer.call({ headers: { 'x-waypost-fault': '1' } })).status, 502)
})

t.test('the header is honoured only from `from` (loopback by default): nobody else can trigger faults', async (t) => {
  const section = { header: 'X-Waypost-Fault', abort: { percent: 100, status: 502 } }
  const byDefault = runLayer(fault, section, { next: scriptedUpstream(200) })
  t.equal((await byDefault.call({ headers: { 'x-waypost-fault': '1' }, remoteAddress: '10.0.0.5' })).status, 200, 'a remote client is ignored')
  t.equal((await byDefault.call({ headers: { 'x-waypost-fault': '1' }, remoteAddress: '::ffff:127.0.0.1' })).status, 502, 'loopback is honoured')
  const fromCluster = runLayer(fault, { ...section, from: ['10.0.0.0/8'] }, { next: scriptedUpstream(200) })
  t.equal((await fromCluster.call({ headers: { 'x-waypost-fault': '1' }, remoteAddress: '10.0.0.5' })).status, 502)
  t.equal((await fromCluster.call({ headers: { 'x-waypost-fault': '1' } })).status, 200, 'and loopback no longer, once from is set')
  t.same(fault.validate!({ from: ['10.0.0.0/8', 'nope'] }, { upstreams: new Set(), redis: false }), [{ path: '/from/1', message: 'not an IP address or CIDR: "nope"' }])
})

t.test('a delay holds the request for its duration; an abort of the exchange cuts it short', async (t) => {
  const next = scriptedUpstream(200)
  const layer = runLayer(fault, { delay: { percent: 100, duration: '300ms' } }, { next })
  const answer = layer.call()
  await layer.clock.advance(299)
  t.equal(await stateOf(answer), 'pending')
  t.equal(next.calls.length, 0)
  await layer.clock.advance(1)
  t.equal((await answer).status, 200)

  const exchange = fakeExchange()
  const cut = layer.send(exchange)
  await layer.clock.advance(10)
  exchange.signal.abort(new Error('deadline'))
  await t.rejects(cut, { message: 'deadline' })
  t.equal(next.calls.length, 1, 'the cancelled request never went upstream')
  t.equal(layer.clock.pending, 0, 'and left no timer')
})
