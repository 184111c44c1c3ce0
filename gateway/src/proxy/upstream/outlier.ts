// Passive outlier ejection: every attempt's outcome is reported here, and an endpoint that fails
// too many times in a row is left out of the balancing for a while. Ejections end lazily (on the
// next pick, scrape or snapshot after their time), so no timer runs per ejected endpoint.
//
// Counted as failures, like Envoy: `consecutive5xx` counts any 5xx and connect/reset failures;
// `consecutiveGatewayErrors` counts 502/503/504 and connect/reset failures (and deadlines, which
// answer 504). Any other answer resets both counts.
import type { Counter } from 'prom-client'
import { toMs } from '../../core/units.js'
import type { ResolvedOutlierDetectionConfig } from './config.js'
import type { Endpoint } from './endpoint.js'
import type { Logger } from 'pino'

/** What ejection needs of the endpoint group (the group implements it; no import back to group.ts). */
export interface EjectionScope {
  readonly name: string
  readonly log: Logger
  readonly ejectedCount: number
  readonly size: number
  readonly endpointList: ReadonlyArray<Endpoint>
}

export class OutlierDetector {
  private readonly max5xx: number
  private readonly maxGatewayErrors: number
  private readonly baseMs: number
  private readonly maxMs: number
  private readonly maxPercent: number

  constructor(config: ResolvedOutlierDetectionConfig, private readonly ejections: ReturnType<Counter<'upstream'>['labels']>) {
    this.max5xx = config.consecutive5xx
    this.maxGatewayErrors = config.consecutiveGatewayErrors
    this.baseMs = toMs(config.baseEjectionTime)
    this.maxMs = toMs(config.maxEjectionTime)
    this.maxPercent = config.maxEjectionPercent
  }

  /** Returns true when the endpoint was ejected (the group's candidates change). */
  onStatus(endpoint: Endpoint, status: number, group: EjectionScope): boolean {
    if (status < 500) {
      endpoint.consecutive5xx = 0
      endpoint.consecutiveGatewayErrors = 0
      return false
    }
    endpoint.consecutive5xx++
    if (status >= 502 && status <= 504) endpoint.consecutiveGatewayErrors++
    else endpoint.consecutiveGatewayErrors = 0
    return this.judge(endpoint, group, `${status}`)
  }

  onFailure(endpoint: Endpoint, group: EjectionScope): boolean {
    endpoint.consecutive5xx++
    endpoint.consecutiveGatewayErrors++
    return this.judge(endpoint, group, 'connect/reset/timeout')
  }

  private judge(endpoint: Endpoint, group: EjectionScope, last: string): boolean {
    if (endpoint.ejectedUntil !== 0) return false
    if (endpoint.consecutive5xx < this.max5xx && endpoint.consecutiveGatewayErrors < this.maxGatewayErrors) return false
    // Never past maxEjectionPercent: a bad signal (a broken health path, an overloaded fleet
    // answering 503) must not empty the upstream. With one endpoint, only 100% allows ejecting.
    if ((group.ejectedCount + 1) * 100 > this.maxPercent * group.size) {
      group.log.debug({ upstream: group.name, endpoint: endpoint.address, ejected: group.ejectedCount }, 'outlier not ejected: maxEjectionPercent reached')
      return false
    }
    const now = performance.now()
    // The multiplier decays by one for every base period the endpoint has spent back in service.
    if (endpoint.timesEjected > 0) endpoint.timesEjected = Math.max(0, endpoint.timesEjected - Math.floor((now - endpoint.returnedAt) / this.baseMs))
    endpoint.timesEjected++
    const forMs = Math.min(this.baseMs * endpoint.timesEjected, this.maxMs)
    endpoint.ejectedUntil = now + forMs
    const reason = { consecutive5xx: endpoint.consecutive5xx, consecutiveGatewayErrors: endpoint.consecutiveGatewayErrors, last }
    endpoint.consecutive5xx = 0
    endpoint.consecutiveGatewayErrors = 0
    this.ejections.inc()
    group.log.warn({ upstream: group.name, endpoint: endpoint.address, forMs, times: endpoint.timesEjected, ...reason }, 'upstream endpoint ejected')
    return true
  }

  /** Ends the ejections due by `now`; true when any ended. */
  returnDue(group: EjectionScope, now: number): boolean {
    let returned = false
    for (const endpoint of group.endpointList) {
      if (endpoint.ejectedUntil === 0 || endpoint.ejectedUntil > now) continue
      endpoint.ejectedUntil = 0
      endpoint.returnedAt = now
      returned = true
      group.log.info({ upstream: group.name, endpoint: endpoint.address }, 'upstream endpoint returned from ejection')
    }
    return returned
  }
}
