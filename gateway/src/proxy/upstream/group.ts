// The endpoints of one upstream, in priority groups, and the choice of one per attempt.
//
// Which endpoints are candidates is worked out when something changes (a health transition, an
// ejection or return, a new DNS answer), not per request:
//   - the first priority group (0 = highest) with at least `minHealthyPercent` of its endpoints
//     available (healthy and not ejected) takes the traffic, its available endpoints only;
//   - when no group qualifies, the first group with any available endpoint;
//   - when no endpoint is available at all, panic: every endpoint of the first group, as Envoy
//     does, because a health signal that rejects everything is more likely wrong than the fleet.
// The balancer then picks among the candidates, avoiding endpoints this exchange already tried.
import type { Pool } from 'undici'
import type { Logger } from 'pino'
import type { GatewayMetrics, UpstreamMetrics, UpstreamStateSource } from '../../telemetry/metrics.js'
import { Endpoint, type EndpointSpec } from './endpoint.js'
import { createBalancer, type Balancer, type BalancerName } from './balancer.js'
import type { OutlierDetector } from './outlier.js'
import type { UpstreamTls, UpstreamTlsSnapshot } from './tls.js'

export interface GroupOptions {
  readonly name: string
  readonly balancer: BalancerName
  readonly minHealthyPercent: number
  readonly log: Logger
  readonly metrics: GatewayMetrics
  readonly createPool: (origin: string) => Pool
  /** Whether each endpoint gets attempt series of its own (static lists within ENDPOINT_SERIES_CAP). */
  readonly endpointSeries?: boolean
}

/** What GET /upstreams shows of one endpoint. */
export interface EndpointSnapshot {
  readonly address: string
  readonly priority: number
  readonly weight: number
  readonly healthy: boolean
  readonly ejected: boolean
  /** When the ejection ends (ISO time); null when not ejected. */
  readonly ejectedUntil: string | null
  readonly timesEjected: number
  readonly inFlight: number
  readonly consecutive5xx: number
  readonly consecutiveGatewayErrors: number
}

export class EndpointGroup implements UpstreamStateSource {
  readonly name: string
  /** Every endpoint, in priority order. */
  endpointList: ReadonlyArray<Endpoint> = []
  ejectedCount = 0
  /** Settles once the endpoints are known (after the first DNS answer; at once for static ones). */
  warmedUp: Promise<void> = Promise.resolve()
  /** Set by the upstream's builder when outlier detection is configured. */
  outlier: OutlierDetector | null = null
  /** Set by the upstream's builder when it has https endpoints: their TLS, shown in the snapshot. */
  tls: UpstreamTls | null = null
  private levels: ReadonlyArray<ReadonlyArray<Endpoint>> = []
  private candidates: ReadonlyArray<Endpoint> = []
  private panic = false
  private activePriority = -1
  /** performance.now() of the earliest ejection end; Infinity when none. */
  private nextReturnAt = Infinity
  private readonly balancer: Balancer
  private readonly panics: ReturnType<GatewayMetrics['upstreamPanics']['labels']>
  /** Each attempt's latency and outcome (the dispatch observes them). */
  readonly attempts: UpstreamMetrics
  private readonly disposers: Array<() => void> = []
  private disposed = false

  constructor(private readonly options: GroupOptions) {
    this.name = options.name
    this.balancer = createBalancer(options.balancer)
    this.panics = options.metrics.upstreamPanics.labels(options.name)
    this.attempts = options.metrics.upstream(options.name)
    options.metrics.watchUpstream(this)
  }

  get log(): Logger {
    return this.options.log
  }

  /** How many endpoints there are (a picker can only avoid tried endpoints when there are several). */
  get size(): number {
    return this.endpointList.length
  }

  /**
   * The endpoint for the next attempt, or null when the upstream has none (DNS not answered yet).
   * `tried` holds the endpoints earlier attempts of this exchange used: avoided when possible.
   */
  pick(tried: ReadonlyArray<object> | null): Endpoint | null {
    if (this.ejectedCount > 0 && performance.now() >= this.nextReturnAt) this.settle()
    const candidates = this.candidates
    if (candidates.length === 0) return null
    if (this.panic) this.panics.inc()
    if (tried === null || tried.length === 0) return this.balancer.pick(candidates)
    return this.pickUntried(candidates, tried)
  }

  /** Retries: an untried candidate; else any untried available endpoint; else a candidate again. */
  private pickUntried(candidates: ReadonlyArray<Endpoint>, tried: ReadonlyArray<object>): Endpoint {
    const untried = candidates.filter((endpoint) => !tried.includes(endpoint))
    if (untried.length > 0) return this.balancer.pick(untried)
    for (const endpoint of this.endpointList) if (endpoint.available && !tried.includes(endpoint)) return endpoint
    return this.balancer.pick(candidates)
  }

  /**
   * Replaces the endpoint set. An endpoint whose address stays keeps its pool and its state; new
   * ones start healthy; removed ones stop taking traffic at once and their pools close once idle.
   */
  setEndpoints(specs: ReadonlyArray<EndpointSpec>): { added: string[]; removed: string[] } {
    const previous = new Map(this.endpointList.map((endpoint) => [endpoint.address, endpoint]))
    const next: Endpoint[] = []
    const added: string[] = []
    for (const spec of specs) {
      const kept = previous.get(spec.address)
      if (kept !== undefined && kept.priority === spec.priority && kept.weight === spec.weight) {
        previous.delete(spec.address)
        next.push(kept)
      } else {
        const series = this.options.endpointSeries === true ? this.options.metrics.endpoint(this.name, spec.address) : null
        next.push(new Endpoint(spec.address, spec.priority, spec.weight, this.options.createPool(spec.address), series))
        added.push(spec.address)
      }
    }
    for (const removed of previous.values()) removed.close()
    next.sort((a, b) => a.priority - b.priority)
    this.endpointList = next
    const levels: Endpoint[][] = []
    for (const endpoint of next) {
      const last = levels.at(-1)
      if (last !== undefined && last[0]!.priority === endpoint.priority) last.push(endpoint)
      else levels.push([endpoint])
    }
    this.levels = levels
    this.refresh()
    return { added, removed: [...previous.keys()] }
  }

  /** Works out the candidates again; called on every health, ejection or membership change. */
  refresh(): void {
    let ejected = 0
    let nextReturnAt = Infinity
    for (const endpoint of this.endpointList) {
      if (endpoint.ejectedUntil === 0) continue
      ejected++
      if (endpoint.ejectedUntil < nextReturnAt) nextReturnAt = endpoint.ejectedUntil
    }
    this.ejectedCount = ejected
    this.nextReturnAt = nextReturnAt
    let chosen: ReadonlyArray<Endpoint> | null = null
    let fallback: ReadonlyArray<Endpoint> | null = null
    for (const level of this.levels) {
      const available = level.filter((endpoint) => endpoint.available)
      if (available.length > 0 && available.length * 100 >= this.options.minHealthyPercent * level.length) {
        chosen = available
        break
      }
      fallback ??= available.length > 0 ? available : null
    }
    const panic = chosen === null && fallback === null && this.levels.length > 0
    this.candidates = chosen ?? fallback ?? this.levels[0] ?? []
    const priority = this.candidates[0]?.priority ?? -1
    if (panic !== this.panic) {
      this.panic = panic
      if (panic) this.log.error({ upstream: this.name, endpoints: this.candidates.length }, 'upstream panic: no endpoint is available; using every endpoint of the first priority group')
      else this.log.info({ upstream: this.name }, 'upstream panic over: an endpoint is available again')
    }
    if (priority !== this.activePriority) {
      if (this.activePriority !== -1 && priority !== -1) this.log.warn({ upstream: this.name, from: this.activePriority, to: priority }, 'upstream traffic moves to another priority group')
      this.activePriority = priority
    }
  }

  /** Ends the ejections whose time has passed (lazily: on the next pick, scrape or snapshot). */
  settle(): void {
    if (this.ejectedCount > 0 && this.outlier !== null && this.outlier.returnDue(this, performance.now())) this.refresh()
  }

  /** One attempt's latency and outcome (`status` 0: failed before a response), in the upstream's and the endpoint's series. */
  observeAttempt(endpoint: Endpoint, status: number, seconds: number): void {
    this.attempts.observe(status, seconds)
    endpoint.attempts?.observe(status, seconds)
  }

  /** The attempt on `endpoint` got response headers with this status. */
  reportStatus(endpoint: Endpoint, status: number): void {
    if (this.outlier !== null && this.outlier.onStatus(endpoint, status, this)) this.refresh()
  }

  /** The attempt on `endpoint` failed before response headers (connect failure, reset, deadline). */
  reportFailure(endpoint: Endpoint): void {
    if (this.outlier !== null && this.outlier.onFailure(endpoint, this)) this.refresh()
  }

  snapshot(): { name: string; panic: boolean; activePriority: number; tls?: UpstreamTlsSnapshot; endpoints: EndpointSnapshot[] } {
    this.settle()
    const now = performance.now()
    return {
      name: this.name,
      panic: this.panic,
      activePriority: this.activePriority,
      ...(this.tls === null ? {} : { tls: this.tls.snapshot() }),
      endpoints: this.endpointList.map((endpoint) => ({
        address: endpoint.address,
        priority: endpoint.priority,
        weight: endpoint.weight,
        healthy: endpoint.healthy,
        ejected: endpoint.ejectedUntil !== 0,
        ejectedUntil: endpoint.ejectedUntil === 0 ? null : new Date(Date.now() + (endpoint.ejectedUntil - now)).toISOString(),
        timesEjected: endpoint.timesEjected,
        inFlight: endpoint.inFlight,
        consecutive5xx: endpoint.consecutive5xx,
        consecutiveGatewayErrors: endpoint.consecutiveGatewayErrors,
      })),
    }
  }

  /** Runs `dispose` when the group is disposed (timers of the health checker, DNS discovery). */
  onDispose(dispose: () => void): void {
    this.disposers.push(dispose)
  }

  /** Retired by a reload or shutdown: timers stop, pools close once their requests finish. */
  dispose(): void {
    if (this.disposed) return
    this.disposed = true
    for (const dispose of this.disposers) dispose()
    for (const endpoint of this.endpointList) endpoint.close()
    this.options.metrics.forgetUpstream(this)
  }
}
