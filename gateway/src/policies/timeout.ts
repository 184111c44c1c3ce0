// Deadlines, enforced with the exchange's signal and our own timer (undici's timers tick about once a
// second, too coarse for a 50 ms promise). `request` bounds the whole exchange up to the response
// headers, queueing and retries included; `perTry` bounds each upstream attempt. Once headers
// have arrived the body streams under the upstream's `bodyIdleTimeout` instead, so long downloads
// are not cut off mid-stream.
import { Type } from '@sinclair/typebox'
import { duration, toMs } from '../core/units.js'
import type { Clock } from '../core/clock.js'
import type { Reason } from '../core/reasons.js'
import { callNext, DeadlineExceeded, ExchangeSignal, localResponse, type Layer } from '../core/exchange.js'
import { definePolicy } from './policy.js'

export const TimeoutConfig = Type.Object(
  {
    request: Type.Optional(duration({ description: 'The whole exchange up to the response headers: queueing, retries and backoff included.' })),
    perTry: Type.Optional(duration({ description: 'Each upstream attempt; a retry around it may try again.' })),
  },
  { additionalProperties: false, description: 'Deadlines: `request` for the whole exchange up to response headers, `perTry` for each upstream attempt.' },
)

/** `request` is outermost, so time spent queueing and retrying counts against it; `perTry` is around each attempt. */
export const timeout = definePolicy({
  name: 'timeout',
  schema: TimeoutConfig,
  localReasons: (config) => [...(config.request === undefined ? [] : ['timeout' as const]), ...(config.perTry === undefined ? [] : ['attempt-timeout' as const])],
  build: (config, deps) => (config.request === undefined ? null : exchangeDeadline(toMs(config.request), deps.clock)),
  buildAttempt: (config, deps) => (config.perTry === undefined ? null : attemptDeadline(toMs(config.perTry), deps.clock)),
})

function isDeadline(cause: unknown, reason: Reason): boolean {
  return cause instanceof DeadlineExceeded && cause.reason === reason
}

function abortOnDeadline(signal: ExchangeSignal, reason: Reason, ms: number): void {
  signal.abort(new DeadlineExceeded(reason, ms))
}

/** Aborts the whole exchange when the deadline passes: no signal or listener of its own on the hot path. */
function exchangeDeadline(ms: number, clock: Clock): Layer {
  return (next) => (exchange) => {
    const timer = clock.setTimeout(abortOnDeadline, ms, exchange.signal, 'timeout', ms)
    return callNext(next, exchange).then(
      (response) => {
        clock.clearTimeout(timer)
        return response
      },
      (error: unknown) => {
        clock.clearTimeout(timer)
        if (isDeadline(exchange.signal.reason, 'timeout')) return localResponse(504, 'timeout', exchange)
        throw error
      },
    )
  }
}

/** Aborts one attempt, not the exchange: a retry around it may try again. */
function attemptDeadline(ms: number, clock: Clock): Layer {
  return (next) => async (exchange) => {
    const parent = exchange.signal
    if (parent.aborted) throw parent.reason
    const attempt = new ExchangeSignal()
    parent.subscribe(attempt)
    const timer = clock.setTimeout(abortOnDeadline, ms, attempt, 'attempt-timeout', ms)
    try {
      return await next({ ...exchange, signal: attempt })
    } catch (error) {
      if (isDeadline(attempt.reason, 'attempt-timeout') && !parent.aborted) return localResponse(504, 'attempt-timeout', exchange)
      throw error
    } finally {
      clock.clearTimeout(timer)
      parent.unsubscribe(attempt)
    }
  }
}
