import t from 'tap'
import { GradientLimit, type GradientSettings } from './gradient.js'

const SETTINGS: GradientSettings = { initialLimit: 20, minLimit: 4, maxLimit: 1000, tolerance: 1.5, smoothing: 0.2, windowMs: 100, minSamples: 10, baselineWindows: 600 }

/** Runs `windows` saturated windows (in flight = the limit) of an upstream whose latency is `latencyOf(inFlight)`. */
function run(limit: GradientLimit, windows: number, latencyOf: (inFlight: number) => number, startMs = 0): number {
  let now = startMs
  for (let w = 0; w < windows; w++) {
    const inFlight = Math.floor(limit.limit)
    for (let i = 0; i < 10; i++) limit.sample(latencyOf(inFlight), inFlight, now + (i * 100) / 9)
    now += 101
  }
  return now
}

t.test('an upstream whose latency does not change with load: the limit grows to the maximum', async (t) => {
  const limit = new GradientLimit(SETTINGS)
  run(limit, 400, () => 20)
  t.equal(limit.limit, 1000)
})

t.test('an upstream whose latency grows with concurrency: the limit stays where latency stays near its baseline', async (t) => {
  const limit = new GradientLimit(SETTINGS)
  const latencyOf = (inFlight: number): number => 5 + 2 * inFlight
  run(limit, 400, latencyOf)
  // The baseline is a long moving average, so sustained load lets it (and the limit) drift up slowly,
  // as in Gradient2; what matters is that latency, not the maximum, bounds the limit.
  t.ok(limit.limit < 200, `limit ${limit.limit.toFixed(1)} stays bounded (the maximum is 1000)`)
  t.ok(latencyOf(Math.floor(limit.limit)) < 3 * limit.baselineMs, `latency ${latencyOf(Math.floor(limit.limit))} ms stays within a few baselines (${limit.baselineMs.toFixed(1)} ms)`)
})

t.test('a sudden slowdown shrinks the limit', async (t) => {
  const limit = new GradientLimit(SETTINGS)
  const now = run(limit, 50, () => 20)
  const before = limit.limit
  run(limit, 10, () => 100, now)
  t.ok(limit.limit < before / 2, `limit went from ${before.toFixed(1)} to ${limit.limit.toFixed(1)}`)
  t.ok(limit.limit >= SETTINGS.minLimit)
})

t.test('light traffic (under half the limit) leaves the limit alone', async (t) => {
  const limit = new GradientLimit(SETTINGS)
  for (let i = 0; i < 200; i++) limit.sample(i % 2 === 0 ? 10 : 500, 3, i * 20)
  t.equal(limit.limit, 20)
})
