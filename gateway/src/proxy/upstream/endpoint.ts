// One endpoint of an upstream: its own keep-alive pool and the facts the balancer, the health
// checker and outlier ejection keep about it. Plain mutable fields: read on every pick.
import type { Client, Pool } from 'undici'
import type { UpstreamMetrics } from '../../telemetry/metrics.js'

export interface EndpointSpec {
  /** The origin, e.g. "http://10.0.0.7:8080"; also the endpoint's identity across DNS answers. */
  readonly address: string
  readonly priority: number
  readonly weight: number
}

export class Endpoint implements EndpointSpec {
  /** Attempts sent and not yet finished (headers and body), for least-request. */
  inFlight = 0
  /** Active health: true until a health check says otherwise (always true without checks). */
  healthy = true
  /** Whether a health check has answered yet: the first answer decides at once. */
  checked = false
  /** Health-check results in a row: passes when > 0, failures when < 0. */
  checkStreak = 0
  /** performance.now() at which an ejection ends; 0 when not ejected. */
  ejectedUntil = 0
  /** Ejections so far, minus the base periods spent back in service (the ejection-time multiplier). */
  timesEjected = 0
  /** performance.now() of the last return from ejection. */
  returnedAt = 0
  consecutive5xx = 0
  consecutiveGatewayErrors = 0
  /** Smooth weighted round-robin's running weight. */
  currentWeight = 0
  /** A one-connection client for health checks, so checks never queue behind traffic in `pool`. */
  checkClient: Client | null = null

  constructor(
    readonly address: string,
    readonly priority: number,
    readonly weight: number,
    readonly pool: Pool,
    /** The endpoint's own attempt series; null when its upstream has none (DNS, or over the cap). */
    readonly attempts: UpstreamMetrics | null = null,
  ) {}

  /** Takes traffic: healthy and not ejected. */
  get available(): boolean {
    return this.healthy && this.ejectedUntil === 0
  }

  /** Closes the pools once the requests they carry have finished (undici's close waits for them). */
  close(): void {
    void this.pool.close().catch(ignore)
    void this.checkClient?.close().catch(ignore)
  }
}

function ignore(): void {}
