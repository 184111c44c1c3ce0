import t from 'tap'
import { RetryBudget } from './budget.js'
import { retryAfterMs } from './retry.js'

t.test('retries are limited to ratio × requests + minPerSecond × window', async (t) => {
  const budget = new RetryBudget(0.2, 1, 10_000)
  const now = 1_000_000
  for (let i = 0; i < 100; i++) budget.recordRequest(now)
  let granted = 0
  while (budget.tryWithdraw(now)) granted++
  t.equal(granted, 30, '20 from the ratio and 10 from the per-second minimum over 10 s')
})

t.test('counts older than the window are forgotten', async (t) => {
  const budget = new RetryBudget(0.5, 0, 3_000)
  const start = 5_000_000
  for (let i = 0; i < 10; i++) budget.recordRequest(start)
  let granted = 0
  while (budget.tryWithdraw(start)) granted++
  t.equal(granted, 5)
  t.notOk(budget.tryWithdraw(start + 2_000), 'still spent within the window')
  t.notOk(budget.tryWithdraw(start + 3_000), 'nothing deposited in the new window')
  budget.recordRequest(start + 3_000)
  budget.recordRequest(start + 3_000)
  t.ok(budget.tryWithdraw(start + 3_000), 'fresh requests deposit again; old retries no longer count')
})

t.test('a quiet route still gets its minimum', async (t) => {
  const budget = new RetryBudget(0.2, 2, 1_000)
  t.ok(budget.tryWithdraw(42_000))
  t.ok(budget.tryWithdraw(42_000))
  t.notOk(budget.tryWithdraw(42_000))
})

t.test('Retry-After: seconds or an HTTP date', async (t) => {
  t.equal(retryAfterMs('3'), 3000)
  t.equal(retryAfterMs('Wed, 21 Oct 2015 07:28:10 GMT', Date.parse('Wed, 21 Oct 2015 07:28:00 GMT')), 10_000)
  t.equal(retryAfterMs('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:29:00 GMT')), 0, 'a past date means now')
  t.equal(retryAfterMs('soon'), undefined)
  t.equal(retryAfterMs(undefined), undefined)
})
