import t from 'tap'
import { ExchangeSignal } from '../core/exchange.js'
import { systemClock } from '../core/clock.js'
import { ManualClock, runLayer, scriptedUpstream, stateOf, upstreamResponse } from '../../test/layer-harness.js'
import { concurrency, ConcurrencyLimiter } from './concurrency.js'

t.test('grants up to max, queues in order, hands released slots to the oldest waiter', async (t) => {
  const limiter = new ConcurrencyLimiter(1, 2, 1000, systemClock)
  t.ok(limiter.tryAcquire())
  t.notOk(limiter.tryAcquire())
  const signal = new ExchangeSignal()
  const order: string[] = []
  const first = (limiter.wait(signal) as Promise<boolean>).then((granted) => order.push(`first:${granted}`))
  const second = (limiter.wait(signal) as Promise<boolean>).then((granted) => order.push(`second:${granted}`))
  t.equal(typeof limiter.wait(signal), 'symbol', 'a third waiter finds the queue full')
  t.equal(limiter.queued, 2)
  limiter.release()
  await first
  limiter.release()
  await second
  t.same(order, ['first:true', 'second:true'])
  t.equal(limiter.inFlight, 1, 'slots were handed over, not freed')
  limiter.release()
  t.equal(limiter.inFlight, 0)
})

t.test('queue timeout resolves false and leaves the queue', async (t) => {
  const clock = new ManualClock()
  const limiter = new ConcurrencyLimiter(1, 1, 30, clock)
  limiter.tryAcquire()
  const waiting = limiter.wait(new ExchangeSignal()) as Promise<boolean>
  await clock.advance(29)
  t.equal(await stateOf(waiting), 'pending')
  await clock.advance(1)
  t.equal(await waiting, false)
  t.equal(limiter.queued, 0)
})

t.test('abort rejects with the signal reason and leaves the queue', async (t) => {
  const limiter = new ConcurrencyLimiter(1, 1, 10_000, systemClock)
  limiter.tryAcquire()
  const signal = new ExchangeSignal()
  const waiting = limiter.wait(signal) as Promise<boolean>
  signal.abort(new Error('client gone'))
  await t.rejects(waiting, { message: 'client gone' })
  t.equal(limiter.queued, 0)
  limiter.release()
  t.equal(limiter.inFlight, 0)
})

t.test('the layer: overflow answers 503 concurrency-limit, the queue times out, a slot is held until the body is delivered', async (t) => {
  let finishBody!: () => void
  const streaming = {
    pipe() {},
    resume() {},
    cancel() {},
    onDone(listener: () => void) {
      finishBody = listener
    },
  }
  let answerFirst!: () => void
  const first = new Promise<void>((resolve) => (answerFirst = resolve))
  const next = scriptedUpstream(() => first.then(() => ({ ...upstreamResponse(200), body: streaming })), 200)
  const layer = runLayer(concurrency, { max: 1, queue: 1, queueTimeout: '300ms' }, { next })
  const holder = layer.call()
  const queued = layer.call()
  const refused = await layer.call()
  t.equal(refused.headers['x-waypost-reason'], 'concurrency-limit route=test upstream=app', 'beyond max and the queue: refused at once')
  answerFirst()
  t.equal((await holder).status, 200)
  t.equal(await stateOf(queued), 'pending', 'headers are not enough: the slot is held while the body streams')
  await layer.clock.advance(300)
  t.equal((await queued).headers['x-waypost-reason'], 'concurrency-queue-timeout route=test upstream=app')
  finishBody()
  t.equal((await layer.call()).status, 200, 'the slot came back once the body was delivered')
})
