// Time as the layers see it. Production uses the system clock; the layer harness passes a manual
// clock, so deadlines, backoff and open periods are tested without real sleeps.

/** What `setTimeout` returns on the clock in use; opaque to callers. */
export type TimerHandle = unknown

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
  /** Extra arguments go to `callback`, so a caller on the hot path needs no closure. */
  setTimeout<A extends unknown[]>(callback: (...args: A) => void, ms: number, ...args: A): TimerHandle
  clearTimeout(timer: TimerHandle): void
}

/** Node's own functions, not wrappers: the hot path pays nothing for the indirection. */
export const systemClock: Clock = {
  now: Date.now,
  setTimeout: setTimeout as Clock['setTimeout'],
  clearTimeout: clearTimeout as Clock['clearTimeout'],
}

/** Lets a long timer (a breaker's open period) not hold the process open; a no-op on a manual clock. */
export function unrefTimer(timer: TimerHandle): void {
  const unref = (timer as { unref?: unknown } | null)?.unref
  if (typeof unref === 'function') unref.call(timer)
}
