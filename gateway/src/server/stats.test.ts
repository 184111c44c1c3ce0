// The percentile arithmetic of /stats: histogram_quantile's linear interpolation within a bucket.
import t, { type Test } from 'tap'
import { quantile, worst } from './stats.js'

const bounds = [0.1, 0.2, 0.5, 1]

function near(t: Test, actual: number | null, expected: number, message?: string): void {
  t.ok(actual !== null && Math.abs(actual - expected) < 1e-9, `${message ?? ''} ${actual} ≈ ${expected}`)
}

t.test('interpolates within the bucket that holds the rank, as histogram_quantile does', async (t) => {
  // 10 observations in (0.1, 0.2]: the median is halfway through that bucket.
  near(t, quantile(0.5, bounds, [0, 10, 0, 0, 0]), 0.15)
  // 90 in the first bucket, 10 in (0.2, 0.5]: p95 is half of the way through the third bucket.
  near(t, quantile(0.95, bounds, [90, 0, 10, 0, 0]), 0.35)
  near(t, quantile(0.5, bounds, [4, 0, 0, 0, 0]), 0.05, 'the first bucket starts at 0')
})

t.test('past the last bound, the last bound; no observations, no answer', async (t) => {
  t.equal(quantile(0.99, bounds, [0, 0, 0, 0, 5]), 1)
  t.equal(quantile(0.5, bounds, [0, 0, 0, 0, 0]), null)
})

t.test('the worst of several healths', async (t) => {
  t.equal(worst([]), 'green')
  t.equal(worst(['green', 'amber', 'green']), 'amber')
  t.equal(worst(['amber', 'red', 'green']), 'red')
})
