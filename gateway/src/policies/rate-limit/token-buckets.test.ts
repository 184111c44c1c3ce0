import t from 'tap'
import { TokenBuckets } from './token-buckets.js'

t.test('burst, then refill at the rate', async (t) => {
  const buckets = new TokenBuckets(2, 3, 100)
  const now = 1_000_000
  t.same([now, now, now, now].map((at) => buckets.take('a', at).allowed), [true, true, true, false])
  t.equal(buckets.take('a', now).retryAfterSeconds, 1, 'half a second to the next token, rounded up')
  t.notOk(buckets.take('a', now + 400).allowed)
  t.ok(buckets.take('a', now + 600).allowed, 'one token after 500 ms at 2/s (1.2 by now)')
  t.match(buckets.take('a', now + 10_000), { allowed: true, remaining: 2, resetSeconds: 1 }, 'never more than the burst')
})

t.test('memory is bounded by maxKeys', async (t) => {
  const buckets = new TokenBuckets(1, 1, 50)
  for (let i = 0; i < 1000; i++) buckets.take(`client-${i}`, 0)
  t.equal(buckets.size, 50)
})
