// Adaptive concurrency: a concurrency limit that sets itself from measured latency (gradient.ts),
// shedding excess load with 503 before the upstream's latency explodes. Unlike `concurrency`, it
// does not queue: waiting is exactly what an overloaded upstream's clients should not do. Use it
// alone or inside a static `concurrency` cap (which then acts as the ceiling for queued work).
import { Type, type Static } from '@sinclair/typebox'
import { duration, toMs } from '../../core/units.js'
import { sharedGauge } from '../../telemetry/metrics.js'
import { localResponse, onResponseDone, type Exchange, type Upstream } from '../../core/exchange.js'
import { definePolicy } from '../policy.js'
import type { Defaulted } from '../../core/schema-defaults.js'
import { GradientLimit } from './gradient.js'

export const AdaptiveConcurrencyConfig = Type.Object(
  {
    initialLimit: Type.Optional(Type.Integer({ minimum: 1, default: 20, description: 'The limit before anything is measured.' })),
    minLimit: Type.Optional(Type.Integer({ minimum: 1, default: 4, description: 'The limit never goes below this.' })),
    maxLimit: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'The limit never goes above this.' })),
    tolerance: Type.Optional(Type.Number({ minimum: 1, maximum: 10, default: 1.5, description: 'Latency may grow to this multiple of its baseline before the limit shrinks.' })),
    smoothing: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.2, description: 'Share of each new estimate taken into the limit.' })),
    window: Type.Optional(duration({ default: '250ms', description: 'How often the limit adjusts (each window needs at least 10 samples).' })),
  },
  {
    additionalProperties: false,
    description:
      'A concurrency limit adjusted from measured latency: grows while latency stays within `tolerance` × its baseline, shrinks when it does not. ' +
      'Over the limit: 503 adaptive-concurrency-limit at once.',
  },
)
export type AdaptiveConcurrencyConfig = Static<typeof AdaptiveConcurrencyConfig>
type ResolvedAdaptiveConcurrencyConfig = Defaulted<AdaptiveConcurrencyConfig, 'initialLimit' | 'minLimit' | 'maxLimit' | 'tolerance' | 'smoothing' | 'window'>

/** The limiter of one route: the controller plus the in-flight count it is compared with. */
class AdaptiveLimiter {
  inFlight = 0
  constructor(readonly gradient: GradientLimit) {}
}

export const adaptiveConcurrency = definePolicy({
  name: 'adaptiveConcurrency',
  localReasons: () => ['adaptive-concurrency-limit'],
  schema: AdaptiveConcurrencyConfig,
  build(section, deps) {
    const config = section as ResolvedAdaptiveConcurrencyConfig
    const minLimit = config.minLimit
    const limiter = deps.keep('adaptive-concurrency', config, () =>
      new AdaptiveLimiter(
        new GradientLimit({
          initialLimit: Math.max(minLimit, config.initialLimit),
          minLimit,
          maxLimit: config.maxLimit,
          tolerance: config.tolerance,
          smoothing: config.smoothing,
          windowMs: toMs(config.window),
          minSamples: 10,
          baselineWindows: 600,
        }),
      ))
    const gradient = limiter.gradient
    const limitGauge = sharedGauge(deps.metrics, 'waypost_adaptive_concurrency_limit', 'The adaptive concurrency limit in force, by route.', ['route']).labels(deps.route.name)
    const baselineGauge = sharedGauge(deps.metrics, 'waypost_adaptive_concurrency_baseline_seconds', 'The baseline latency the adaptive limit compares with, by route.', ['route'], 'average').labels(deps.route.name)
    limitGauge.set(Math.floor(gradient.limit))
    deps.report(() => {
      const limit = Math.floor(gradient.limit)
      const baselineMs = Number.isNaN(gradient.baselineMs) ? null : Math.round(gradient.baselineMs * 10) / 10
      return {
        health: limiter.inFlight >= limit ? 'amber' : 'green',
        summary: `${limiter.inFlight} of ${limit} in flight${baselineMs === null ? '' : `, baseline ${baselineMs} ms`}`,
        inFlight: limiter.inFlight,
        limit,
        baselineMs,
      }
    })
    const release = (): void => {
      limiter.inFlight--
    }

    return (next: Upstream) => async (exchange: Exchange) => {
      if (limiter.inFlight >= Math.floor(gradient.limit)) return localResponse(503, 'adaptive-concurrency-limit', exchange)
      const inFlight = ++limiter.inFlight
      const started = performance.now()
      let response
      try {
        response = await next(exchange)
      } catch (error) {
        release()
        throw error
      }
      // Latency to response headers of upstream answers that are not failures: errors and local
      // answers (a timeout, an open breaker) say little about how loaded the upstream is.
      if (response.origin === 'upstream' && response.status < 500) {
        const now = performance.now()
        gradient.sample(now - started, inFlight, now)
        limitGauge.set(Math.floor(gradient.limit))
        if (!Number.isNaN(gradient.baselineMs)) baselineGauge.set(gradient.baselineMs / 1000)
      }
      onResponseDone(response, release)
      return response
    }
  },
})
