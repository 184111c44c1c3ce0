// Deadlines, enforced with the exchange's signal and our own timer (undici's timers tick about once a
// second, too coarse for a 50 ms promise). `request` bounds the whole exchange up to the response
// headers, queueing and retries included; `perTry` bounds each upstream attempt. Once headers
// have arrived the body streams under the upstream's `bodyIdleTimeout` instead, so long downloads
// are not cut off mid-stream.
import { Type } from '@sinclair/typebox'
import { Duration, toMs } from '../config/units.js'
import { callNext, DeadlineExceeded, ExchangeSignal, localResponse, type Layer, type Policy } from './policy.js'

export const TimeoutConfig = Type.Object(
  {
    request: Type.Optional(Duration),
    perTry: Type.Optional(Duration),
  },
  { additionalProperties: false, description: 'Deadlines: `request` for the whole exchange up to response headers, `perTry` for each upstream attempt.' },
)

/** The overall deadline: outermost, so time spent queueing and retrying counts against it. */
export const requestTimeout: Policy<typeof TimeoutConfig> = {
  name: 'timeout',
  schema: TimeoutConfig,
  build: (config) => (config.request === undefined ? null : exchangeDeadline(toMs(config.request))),
}

/** The per-attempt deadline: innermost, just around the upstream dispatch. */
export const attemptTimeout: Policy<typeof TimeoutConfig> = {
  name: 'timeout',
  schema: TimeoutConfig,
  build: (config) => (config.perTry === undefined ? null : attemptDeadline(toMs(config.perTry))),
}

function isDeadline(cause: unknown, reason: string): boolean {
  return cause instanceof DeadlineExceeded && cause.reason === reason
}

function abortOnDeadline(signal: ExchangeSignal, reason: string, ms: number): void {
  signal.abort(new DeadlineExceeded(reason, ms))
}

/** Aborts the whole exchange when the deadline passes: no signal or listener of its own on the hot path. */
function exchangeDeadline(ms: number): Layer {
  return (next) => (exchange) => {
    const timer = setTimeout(abortOnDeadline, ms, exchange.signal, 'timeout', ms)
    return callNext(next, exchange).then(
      (response) => {
        clearTimeout(timer)
        return response
      },
      (error: unknown) => {
        clearTimeout(timer)
        if (isDeadline(exchange.signal.reason, 'timeout')) return localResponse(504, 'timeout', exchange)
        throw error
      },
    )
  }
}

/** Aborts one attempt, not the exchange: a retry around it may try again. */
function attemptDeadline(ms: number): Layer {
  return (next) => async (exchange) => {
    const parent = exchange.signal
    if (parent.aborted) throw parent.reason
    const attempt = new ExchangeSignal()
    parent.subscribe(attempt)
    const timer = setTimeout(abortOnDeadline, ms, attempt, 'attempt-timeout', ms)
    try {
      return await next({ ...exchange, signal: attempt })
    } catch (error) {
      if (isDeadline(attempt.reason, 'attempt-timeout') && !parent.aborted) return localResponse(504, 'attempt-timeout', exchange)
      throw error
    } finally {
      clearTimeout(timer)
      parent.unsubscribe(attempt)
    }
  }
}
