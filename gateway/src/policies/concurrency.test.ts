import t from 'tap'
import { ConcurrencyLimiter } from './concurrency.js'
import { ExchangeSignal } from '../core/exchange.js'
import { systemClock } from '../core/clock.js'

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
  const limiter = new ConcurrencyLimiter(1, 1, 30, systemClock)
  limiter.tryAcquire()
  const started = Date.now()
  t.equal(await limiter.wait(new ExchangeSignal()), false)
  t.ok(Date.now() - started >= 25)
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
