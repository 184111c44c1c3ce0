// A retry budget in the manner of Finagle and Linkerd: over a sliding window, retries may add at
// most `ratio` of the requests seen plus `minPerSecond` each second. When an upstream fails
// everything, retries therefore add a bounded fraction of load instead of multiplying it (the
// retry storm), while a quiet route still gets its few retries.
import { Type, type Static } from '@sinclair/typebox'
import { duration, toMs } from '../../core/units.js'
import { withDefaults } from '../../core/schema-defaults.js'
import type { Defaulted } from '../../core/schema-defaults.js'

export const RetryBudgetConfig = Type.Object(
  {
    ratio: Type.Optional(Type.Number({ minimum: 0, maximum: 10, default: 0.2, description: 'Retries allowed per request seen in the window.' })),
    minPerSecond: Type.Optional(Type.Number({ minimum: 0, default: 10, description: 'Retries always allowed per second, so low-traffic routes can retry.' })),
    window: Type.Optional(duration({ default: '10s', description: 'The sliding window, kept in one-second slots.' })),
  },
  { additionalProperties: false, description: 'Retry budget: at most `ratio` × requests + `minPerSecond` × seconds retries over `window`.' },
)
export type RetryBudgetConfig = Static<typeof RetryBudgetConfig>

/** Counts per one-second slot in a ring; a slot is zeroed when its second comes round again. */
export class RetryBudget {
  private readonly slots: number
  private readonly requests: Float64Array
  private readonly retries: Float64Array
  /** The second each slot currently counts. */
  private readonly slotSecond: Float64Array
  private readonly allowance: number

  constructor(readonly ratio: number, readonly minPerSecond: number, windowMs: number) {
    this.slots = Math.max(1, Math.round(windowMs / 1000))
    this.requests = new Float64Array(this.slots)
    this.retries = new Float64Array(this.slots)
    this.slotSecond = new Float64Array(this.slots).fill(-1)
    this.allowance = minPerSecond * this.slots
  }

  static from(section: RetryBudgetConfig): RetryBudget {
    const config = withDefaults(RetryBudgetConfig, section) as Defaulted<RetryBudgetConfig, 'ratio' | 'minPerSecond' | 'window'>
    return new RetryBudget(config.ratio, config.minPerSecond, toMs(config.window))
  }

  /** A first attempt: deposits `ratio` of a retry. */
  recordRequest(now = Date.now()): void {
    this.requests[this.slot(now)]!++
  }

  /** Spends one retry when the budget allows it. */
  tryWithdraw(now = Date.now()): boolean {
    const current = this.slot(now)
    const second = Math.floor(now / 1000)
    let requests = 0
    let retries = 0
    for (let i = 0; i < this.slots; i++) {
      // Slots not touched within the window hold stale counts: skip them.
      if (second - this.slotSecond[i]! >= this.slots) continue
      requests += this.requests[i]!
      retries += this.retries[i]!
    }
    if (retries + 1 > this.allowance + this.ratio * requests) return false
    this.retries[current]!++
    return true
  }

  private slot(now: number): number {
    const second = Math.floor(now / 1000)
    const index = second % this.slots
    if (this.slotSecond[index] !== second) {
      this.slotSecond[index] = second
      this.requests[index] = 0
      this.retries[index] = 0
    }
    return index
  }
}
