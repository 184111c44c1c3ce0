// The breaker's logic through the layer harness: a scripted upstream and a manual clock, so the
// open period passes without waiting. gateway/test/breaker.test.ts keeps the wiring end to end.
import t from 'tap'
import { DeadlineExceeded, type ProxyResponse, type StreamingBody } from '../core/exchange.js'
import { fakeExchange, hungUpstream, readBody, runLayer, streamingBody, scriptedUpstream, settle, upstreamError, upstreamResponse, type Step } from '../../test/layer-harness.js'
import { breaker, RollingWindow } from './breaker.js'
import type { RouteBreaker } from './breaker.js'

function stateOf(layer: { exposed: RouteBreaker[] }): string {
  return layer.exposed[0]!.state
}

/** A script step that answers `status` once `release` is called: a probe that is still in flight. */
function gated(status: number): { step: Step; release: () => void } {
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  return { step: () => gate.then(() => upstreamResponse(status)), release }
}

t.test('opens once more than failureRatio of at least minRequests calls failed, then answers without the upstream', async (t) => {
  const next = scriptedUpstream(200, 503, 503, 200, 503, 200)
  const layer = runLayer(breaker, { minRequests: 4, failureRatio: 0.5, openFor: '10s' }, { next })
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) statuses.push((await layer.call()).status)
  t.same(statuses, [200, 503, 503, 200, 503], 'failing answers still reach the client')
  t.equal(stateOf(layer), 'open', '3 of 5 failed')
  const refused = await layer.call()
  t.equal(refused.status, 503)
  t.equal(refused.origin, 'local')
  t.match(refused.headers['x-waypost-reason'], /^breaker-open route=test upstream=app$/)
  t.equal(next.calls.length, 5, 'the upstream saw nothing while open')
  const snapshot = layer.exposed[0]!.snapshot() as { halfOpenAt: string; openedAt: string }
  t.equal(Date.parse(snapshot.halfOpenAt) - Date.parse(snapshot.openedAt), 10_000, 'half-open is due openFor after opening')
})

t.test('the window forgets outcomes older than `window`, a tenth of it at a time; a call counts from its start', async (t) => {
  const next = scriptedUpstream(503, 503, 503, 200, 503, hungUpstream(), 503)
  const layer = runLayer(breaker, { minRequests: 4, failureRatio: 0.4, window: '1s', openFor: '10s' }, { next })
  const window = (): unknown => (layer.exposed[0]!.snapshot() as { stats: unknown }).stats
  for (let i = 0; i < 3; i++) await layer.call()
  t.equal(stateOf(layer), 'closed', '3 failures are below minRequests')
  await layer.clock.advance(900)
  t.match(window(), { fires: 3, failures: 3 }, 'still in the window 900 ms later (its tenth slices)')
  await layer.clock.advance(100)
  t.match(window(), { fires: 0, failures: 0 }, 'gone a whole window later')
  await layer.call()
  await layer.call()
  t.equal(stateOf(layer), 'closed', '1 failure of 2: had the old 3 counted, 4 of 5 would have opened it')
  const inFlight = layer.call()
  t.match(window(), { fires: 3, successes: 1, failures: 1 }, 'a call in flight counts toward minRequests')
  await layer.call()
  t.equal(stateOf(layer), 'open', '2 failed of the 4 started (one still in flight): more than 40%, at minRequests')
  t.equal((await layer.call()).status, 503)
  t.match(window(), { fires: 4, failures: 2, rejects: 1 }, 'a refused request counts as a reject, not a fire')
  void inFlight.catch(() => undefined)
})

t.test('the rolling window: a clock stepped back keeps counting in the current slice; a long gap empties it', async (t) => {
  let now = 1_700_000_000_050
  const clock = { now: () => now, setTimeout: () => undefined, clearTimeout: () => undefined }
  const window = new RollingWindow(100, clock)
  window.now().fires++
  now -= 5_000
  window.now().fires++
  t.match(window.totals(), { fires: 2 }, 'stepping back clears nothing')
  now += 5_000 + 900
  window.now().failures++
  t.match(window.totals(), { fires: 2, failures: 1 }, 'both counts still in the window 900 ms on')
  now += 3_600_000
  t.match(window.totals(), { fires: 0, failures: 0 }, 'an hour later: empty')
  window.now().successes++
  t.match(window.totals(), { successes: 1 })
})

t.test('after openFor, exactly halfOpenProbes requests go through; their success closes it with a fresh window', async (t) => {
  const probeA = gated(200)
  const probeB = gated(200)
  const next = scriptedUpstream(503, 503, probeA.step, probeB.step, 503, 200)
  const layer = runLayer(breaker, { minRequests: 2, openFor: '300ms', halfOpenProbes: 2 }, { next })
  await layer.call()
  await layer.call()
  t.equal(stateOf(layer), 'open')
  await layer.clock.advance(299)
  t.equal(stateOf(layer), 'open', 'not before openFor')
  await layer.clock.advance(1)
  t.equal(stateOf(layer), 'half-open')

  const probes = [layer.call(), layer.call()]
  const others = await Promise.all([layer.call(), layer.call(), layer.call()])
  for (const answer of others) t.match(answer.headers['x-waypost-reason'], /^breaker-open/, 'beyond the probes: refused')
  t.equal(next.calls.length, 4, 'the upstream saw exactly the two probes')
  probeA.release()
  await probes[0]
  t.equal(stateOf(layer), 'half-open', 'one probe of two is not enough')
  probeB.release()
  await probes[1]
  t.equal(stateOf(layer), 'closed')
  const transitions = (await layer.metrics.getSingleMetricAsString('waypost_breaker_transitions_total')).split('\n')
  for (const to of ['open', 'half-open', 'closed']) t.ok(transitions.includes(`waypost_breaker_transitions_total{route="test",upstream="app",to="${to}"} 1`), `one transition to ${to}`)
  t.equal((await layer.call()).status, 503, 'one failure after closing...')
  t.equal(stateOf(layer), 'closed', '...is below minRequests again: the old failures were forgotten')
})

t.test('a failed probe reopens it; its answer still reaches the client', async (t) => {
  const next = scriptedUpstream(503, 503, 502, 200)
  const layer = runLayer(breaker, { minRequests: 2, openFor: '300ms' }, { next })
  await layer.call()
  await layer.call()
  await layer.clock.advance(300)
  const probe = await layer.call()
  t.equal(probe.status, 502)
  t.equal(probe.origin, 'upstream')
  t.equal(stateOf(layer), 'open')
  await layer.clock.advance(300)
  t.equal((await layer.call()).status, 200)
  t.equal(stateOf(layer), 'closed')
})

t.test('a call from before the breaker opened that ends while half-open changes nothing', async (t) => {
  const next = scriptedUpstream(hungUpstream(), 503, 503, 200)
  const layer = runLayer(breaker, { minRequests: 2, openFor: '300ms' }, { next })
  const stale = fakeExchange()
  const staleAnswer = layer.send(stale)
  await layer.call()
  await layer.call()
  t.equal(stateOf(layer), 'open', '2 of the 3 calls failed')
  await layer.clock.advance(300)
  stale.signal.abort(new Error('client gone'))
  await t.rejects(staleAnswer)
  await settle()
  t.equal(stateOf(layer), 'half-open', 'a client leaving is no evidence the upstream recovered')
  t.equal((await layer.call()).status, 200, 'the probe is still available')
  t.equal(stateOf(layer), 'closed')
})

t.test('failOn decides what counts: statuses, per-try timeouts, connection errors; never client aborts or the request deadline', async (t) => {
  const strict = { minRequests: 2, failureRatio: 0, openFor: '10s' }
  const opens = async (section: object, ...script: Step[]): Promise<boolean> => {
    const layer = runLayer(breaker, section, { next: scriptedUpstream(...script) })
    for (let i = 0; i < 2; i++) await layer.call().catch(() => undefined)
    return stateOf(layer) === 'open'
  }
  t.ok(await opens(strict, 500), '500 is a failure by default')
  t.notOk(await opens(strict, 404), '404 is not')
  t.ok(await opens({ ...strict, failOn: { statuses: [404] } }, 404), 'unless listed')
  t.ok(await opens(strict, upstreamError('ECONNREFUSED')), 'a refused connection is')
  t.notOk(await opens({ ...strict, failOn: { connectionErrors: false } }, upstreamError('ECONNREFUSED')), 'unless connectionErrors is off')
  t.ok(await opens(strict, upstreamError('UND_ERR_HEADERS_TIMEOUT')), 'an upstream timeout is')
  t.notOk(await opens({ ...strict, failOn: { timeouts: false } }, upstreamError('UND_ERR_HEADERS_TIMEOUT')), 'unless timeouts is off')
  const perTry = (exchange: { record: { reason: string } }): ProxyResponse => {
    exchange.record.reason = 'attempt-timeout'
    return { status: 504, headers: {}, body: null, origin: 'local' }
  }
  t.ok(await opens(strict, perTry), 'a per-try timeout (answered locally below) is')

  // The exchange's own signal aborted: the client left, or the whole-exchange deadline passed.
  const layer = runLayer(breaker, strict, { next: hungUpstream() })
  for (const reason of [new Error('client gone'), new DeadlineExceeded('timeout', 50)]) {
    for (let i = 0; i < 2; i++) {
      const exchange = fakeExchange()
      const answer = layer.send(exchange)
      exchange.signal.abort(reason)
      await t.rejects(answer)
    }
  }
  t.equal(stateOf(layer), 'closed', 'aborts and the request deadline never count')
})

/**
 * A 200 whose body the upstream cuts off (as the dispatch reports one: the record's reason, then the
 * sink's fail) once `cut` is called. Until then the body is open, as a slow download would be.
 */
function cutOffLater(): { step: Step; cut: () => void } {
  let cut: () => void = () => undefined
  const step: Step = (exchange) => {
    const done: Array<() => void> = []
    const body: StreamingBody = {
      pipe(sink) {
        sink.write(Buffer.from('partial'))
        cut = () => {
          exchange.record.reason = 'upstream-reset-body'
          sink.fail(new Error('other side closed'))
          for (const listener of done.splice(0)) listener()
        }
      },
      resume() {},
      cancel() {},
      onDone(listener) {
        done.push(listener)
      },
    }
    return { status: 200, headers: {}, body, origin: 'upstream' }
  }
  return { step, get cut() { return cut } }
}

t.test('a 200 whose body the upstream cuts off is a failure, decided when the body ends; the client had its headers at once', async (t) => {
  const first = cutOffLater()
  const second = cutOffLater()
  const layer = runLayer(breaker, { minRequests: 2, failureRatio: 0.5, openFor: '10s' }, { next: scriptedUpstream(first.step, second.step, 200) })
  const answers = [await layer.call(), await layer.call()]
  t.same(answers.map((answer) => answer.status), [200, 200], 'headers reached the client before the bodies ended')
  const sink = { write: () => true, end: () => undefined, fail: () => undefined }
  for (const answer of answers) (answer.body as StreamingBody).pipe(sink)
  t.equal(stateOf(layer), 'closed', 'nothing decided while the bodies stream')
  first.cut()
  second.cut()
  await settle()
  t.equal(stateOf(layer), 'open', 'two cut-off bodies out of two opened it')

  const streamed: Step = () => ({ status: 200, headers: {}, body: streamingBody('whole'), origin: 'upstream' })
  const whole = runLayer(breaker, { minRequests: 2, failureRatio: 0.5, openFor: '10s' }, { next: scriptedUpstream(streamed) })
  for (let i = 0; i < 2; i++) t.equal((await readBody(await whole.call())).toString(), 'whole')
  await settle()
  t.equal(stateOf(whole), 'closed', 'bodies that end whole are successes')
  t.match(whole.exposed[0]!.snapshot(), { stats: { successes: 2, failures: 0 } })
})

t.test('fallback: a static response, or another upstream, while open', async (t) => {
  const staticFallback = runLayer(breaker, { minRequests: 1, failureRatio: 0, fallback: { status: 200, body: 'cached copy', headers: { 'Content-Type': 'text/plain' } } }, { next: scriptedUpstream(503) })
  await staticFallback.call()
  const answer = await staticFallback.call()
  t.equal(answer.status, 200)
  t.equal(String(answer.body), 'cached copy')
  t.equal(answer.headers['content-type'], 'text/plain')
  t.match(answer.headers['x-waypost-reason'], /^breaker-open/)

  const backup = scriptedUpstream(200)
  const toBackup = runLayer(breaker, { minRequests: 1, failureRatio: 0, fallback: { upstream: 'backup' } }, { next: scriptedUpstream(503), upstreams: { backup } })
  await toBackup.call()
  const exchange = fakeExchange()
  const routed = await toBackup.send(exchange)
  t.equal(routed.status, 200)
  t.equal(backup.calls.length, 1)
  t.equal(exchange.record.reason, 'breaker-fallback')
  t.equal(routed.headers['x-waypost-reason'], 'breaker-fallback route=test upstream=app fallback=backup')
})

t.test('kept across a rebuild while its config is unchanged; a changed config starts closed', async (t) => {
  const kept = new Map<string, unknown>()
  const section = { minRequests: 1, failureRatio: 0, openFor: '10s' }
  const first = runLayer(breaker, section, { next: scriptedUpstream(503), kept })
  await first.call()
  t.equal(stateOf(first), 'open')
  const same = runLayer(breaker, section, { next: scriptedUpstream(200), kept })
  t.equal(stateOf(same), 'open', 'the same config keeps the open breaker')
  const changed = runLayer(breaker, { ...section, openFor: '5s' }, { next: scriptedUpstream(200), kept })
  t.equal(stateOf(changed), 'closed')
})

t.test('validate: a fallback upstream must exist; the window needs some length, the open period a timer can hold', async (t) => {
  const context = { upstreams: new Set(['app']), redis: false }
  t.same(breaker.validate!({ fallback: { upstream: 'ghost' } }, context), [{ path: '/fallback/upstream', message: 'unknown upstream "ghost"; defined: app' }])
  t.same(breaker.validate!({ window: '50ms' }, context), [{ path: '/window', message: 'expected at least 100ms' }])
  t.same(breaker.validate!({ openFor: '597h' }, context), [{ path: '/openFor', message: 'expected at most 596h (24.8 days)' }], 'a longer timer would fire at once')
  t.same(breaker.validate!({ openFor: '596h' }, context), [])
  t.same(breaker.validate!({ fallback: { upstream: 'app' }, window: '1s' }, context), [])
})
