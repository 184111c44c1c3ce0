// A gradient controller for the concurrency limit, in the spirit of Netflix's concurrency-limits
// (Gradient2) and Envoy's adaptive concurrency filter: compare the latency measured now (short
// window) with the latency the upstream has when it is not overloaded (a long moving average).
// While they agree the limit grows by a small headroom (√limit), probing for more capacity; when
// the short latency rises above `tolerance` × the long one, the limit shrinks in proportion, so
// requests queue in front of the upstream less and latency stops climbing. Updated once per window.

export interface GradientSettings {
  readonly initialLimit: number
  readonly minLimit: number
  readonly maxLimit: number
  /** How much slower than its baseline the upstream may get before the limit shrinks (1.5 = 50%). */
  readonly tolerance: number
  /** Share of each new estimate taken into the limit: damps oscillation. */
  readonly smoothing: number
  /** Length of a measurement window, in ms... */
  readonly windowMs: number
  /** ...which must also hold at least this many samples. */
  readonly minSamples: number
  /** Windows averaged into the baseline latency (an exponential average after a plain-average warm-up). */
  readonly baselineWindows: number
}

export class GradientLimit {
  /** The current limit, fractional; callers compare in-flight against its floor. */
  limit: number
  /** The baseline latency in ms; NaN until the first window closes. */
  baselineMs = Number.NaN
  private windows = 0
  private windowStart = 0
  private sampleSum = 0
  private samples = 0
  private maxInFlight = 0

  constructor(readonly settings: GradientSettings) {
    this.limit = settings.initialLimit
  }

  /** One successful exchange: its latency to response headers and how many were in flight when it started. */
  sample(latencyMs: number, inFlight: number, now: number): void {
    if (this.samples === 0) this.windowStart = now
    this.sampleSum += latencyMs
    this.samples++
    if (inFlight > this.maxInFlight) this.maxInFlight = inFlight
    if (now - this.windowStart >= this.settings.windowMs && this.samples >= this.settings.minSamples) this.update()
  }

  private update(): void {
    const { tolerance, smoothing, minLimit, maxLimit, baselineWindows } = this.settings
    const shortMs = Math.max(this.sampleSum / this.samples, 0.001)
    const maxInFlight = this.maxInFlight
    this.sampleSum = 0
    this.samples = 0
    this.maxInFlight = 0

    this.windows++
    if (Number.isNaN(this.baselineMs)) this.baselineMs = shortMs
    else if (this.windows <= 10) this.baselineMs += (shortMs - this.baselineMs) / this.windows
    else this.baselineMs += ((shortMs - this.baselineMs) * 2) / (baselineWindows + 1)
    // After a spell of overload the baseline has drifted up; let it come down faster once latency does.
    if (this.baselineMs / shortMs > 2) this.baselineMs *= 0.95

    // Traffic that never fills half the limit says nothing about the upstream's capacity.
    if (maxInFlight < this.limit / 2) return
    const gradient = Math.max(0.5, Math.min(1, (tolerance * this.baselineMs) / shortMs))
    const estimate = this.limit * gradient + Math.sqrt(this.limit)
    this.limit = Math.min(maxLimit, Math.max(minLimit, this.limit * (1 - smoothing) + estimate * smoothing))
  }
}
