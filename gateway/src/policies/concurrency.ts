// Caps in-flight exchanges per route, with a bounded FIFO queue and a queue timeout. A slot is held
// until the response body has been delivered, not just until headers, because that is the load the
// upstream and this process carry. The limiter survives reloads while its config is unchanged, so
// requests in flight across a reload are still counted.
import { Type, type Static } from '@sinclair/typebox'
import { duration, toMs } from '../core/units.js'
import type { Clock, TimerHandle } from '../core/clock.js'
import { callNext, localResponse, onResponseDone, type Exchange, type ExchangeSignal, type ProxyResponse } from '../core/exchange.js'
import { definePolicy } from './policy.js'
import type { Defaulted } from '../core/schema-defaults.js'
import { perWorkerShare } from '../core/per-worker.js'

export const ConcurrencyConfig = Type.Object(
  {
    max: Type.Integer({ minimum: 1, description: 'Most exchanges in flight on this route at once.' }),
    queue: Type.Optional(Type.Integer({ minimum: 0, default: 0, description: 'Most exchanges waiting for a slot; beyond it, 503 at once.' })),
    queueTimeout: Type.Optional(duration({ default: '1s', description: 'Longest an exchange waits in the queue before a 503.' })),
  },
  { additionalProperties: false, description: 'Concurrency limit: `max` in flight, up to `queue` waiting at most `queueTimeout`.' },
)
type ResolvedConcurrencyConfig = Defaulted<Static<typeof ConcurrencyConfig>, 'queue' | 'queueTimeout'>

const QUEUE_FULL = Symbol('queue-full')

export class ConcurrencyLimiter {
  inFlight = 0
  /** Each waiter's grant function; a waiter removes itself on timeout or abort. */
  private readonly waiters: Array<() => void> = []

  constructor(readonly max: number, readonly queueSize: number, readonly queueTimeoutMs: number, private readonly clock: Clock) {}

  get queued(): number {
    return this.waiters.length
  }

  tryAcquire(): boolean {
    if (this.inFlight >= this.max) return false
    this.inFlight++
    return true
  }

  /** Waits for a slot: true when granted, false on queue timeout; rejects with the signal's reason on abort. */
  wait(signal: ExchangeSignal): Promise<boolean> | typeof QUEUE_FULL {
    if (this.waiters.length >= this.queueSize) return QUEUE_FULL
    return new Promise<boolean>((resolve, reject) => {
      const leave = (): void => {
        this.clock.clearTimeout(timer)
        signal.unsubscribe(listener)
        const index = this.waiters.indexOf(grant)
        if (index !== -1) this.waiters.splice(index, 1)
      }
      const grant = (): void => {
        leave()
        resolve(true)
      }
      const listener = {
        onAbort: (reason: unknown): void => {
          leave()
          reject(reason)
        },
      }
      const timer: TimerHandle = this.clock.setTimeout(() => {
        leave()
        resolve(false)
      }, this.queueTimeoutMs)
      this.waiters.push(grant)
      signal.subscribe(listener)
    })
  }

  /** Frees a slot, handing it straight to the oldest waiter so a newcomer cannot take it first. */
  readonly release = (): void => {
    const grant = this.waiters[0]
    if (grant === undefined) this.inFlight--
    else grant()
  }
}

export const concurrency = definePolicy({
  name: 'concurrency',
  schema: ConcurrencyConfig,
  localReasons: (config) => ((config as ResolvedConcurrencyConfig).queue > 0 ? ['concurrency-limit', 'concurrency-queue-timeout'] : ['concurrency-limit']),
  // Each worker holds its own slots: the route's `max` and `queue` are shared out among them.
  perWorker(section, workers) {
    const config = section as ResolvedConcurrencyConfig
    const max = perWorkerShare(config.max, workers)
    const queue = config.queue === 0 ? 0 : perWorkerShare(config.queue, workers)
    return {
      config: { ...config, max, queue },
      divided: [
        { field: 'max', configured: config.max, perWorker: max },
        ...(config.queue === 0 ? [] : [{ field: 'queue', configured: config.queue, perWorker: queue }]),
      ],
    }
  },
  build(section, deps) {
    const config = section as ResolvedConcurrencyConfig
    const limiter = deps.keep('concurrency', config, () => new ConcurrencyLimiter(config.max, config.queue, toMs(config.queueTimeout), deps.clock))
    deps.report(() => {
      const full = limiter.inFlight >= limiter.max
      return {
        health: limiter.queued > 0 || full ? 'amber' : 'green',
        summary: `${limiter.inFlight} of ${limiter.max} in flight${limiter.queueSize > 0 ? `, ${limiter.queued} of ${limiter.queueSize} queued` : ''}`,
        inFlight: limiter.inFlight,
        max: limiter.max,
        queued: limiter.queued,
        queueSize: limiter.queueSize,
      }
    })
    return (next) => {
      const admitted = (response: ProxyResponse): ProxyResponse => {
        onResponseDone(response, limiter.release)
        return response
      }
      const failed = (error: unknown): never => {
        limiter.release()
        throw error
      }
      const proceed = (exchange: Exchange): Promise<ProxyResponse> => callNext(next, exchange).then(admitted, failed)
      const queued = async (exchange: Exchange): Promise<ProxyResponse> => {
        const waiting = limiter.wait(exchange.signal)
        if (waiting === QUEUE_FULL) return localResponse(503, 'concurrency-limit', exchange)
        if (!(await waiting)) return localResponse(503, 'concurrency-queue-timeout', exchange)
        return proceed(exchange)
      }
      return (exchange) => (limiter.tryAcquire() ? proceed(exchange) : queued(exchange))
    }
  },
})
