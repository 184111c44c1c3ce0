// Deadlines, enforced with AbortSignal and our own timer (undici's timers tick about once a
// second, too coarse for a 50 ms promise). `request` bounds the whole exchange up to the response
// headers, queueing and retries included; `perTry` bounds each upstream attempt. Once headers
// have arrived the body streams under the upstream's `bodyIdleTimeout` instead, so long downloads
// are not cut off mid-stream.
import { Type } from '@sinclair/typebox'
import { Duration, toMs } from '../config/units.js'
import { DeadlineExceeded, localResponse, type Layer, type Policy } from './policy.js'

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
  build: (config) => (config.request === undefined ? null : deadline('timeout', toMs(config.request))),
}

/** The per-attempt deadline: innermost, just around the upstream dispatch. */
export const attemptTimeout: Policy<typeof TimeoutConfig> = {
  name: 'timeout',
  schema: TimeoutConfig,
  build: (config) => (config.perTry === undefined ? null : deadline('attempt-timeout', toMs(config.perTry))),
}

function abortAfterDeadline(controller: AbortController, reason: string, ms: number): void {
  controller.abort(new DeadlineExceeded(reason, ms))
}

function deadline(reason: string, ms: number): Layer {
  return (next) => async (exchange) => {
    const parent = exchange.signal
    if (parent.aborted) throw parent.reason
    const controller = new AbortController()
    const forwardAbort = (): void => controller.abort(parent.reason)
    parent.addEventListener('abort', forwardAbort, { once: true })
    const timer = setTimeout(abortAfterDeadline, ms, controller, reason, ms)
    try {
      return await next({ ...exchange, signal: controller.signal })
    } catch (error) {
      const cause: unknown = controller.signal.reason
      if (cause instanceof DeadlineExceeded && cause.reason === reason && !parent.aborted) {
        exchange.log.debug({ route: exchange.route.name, reason, afterMs: ms }, 'deadline exceeded')
        return localResponse(504, reason, exchange)
      }
      throw error
    } finally {
      clearTimeout(timer)
      parent.removeEventListener('abort', forwardAbort)
    }
  }
}
