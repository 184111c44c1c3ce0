// Prometheus metrics. The request path only adds to plain numbers on its route's RouteMetrics:
// prom-client hashes its labels and allocates on every inc() and observe(), even on a bound child,
// which cost about 3 µs per request. Its series are brought up to date when scraped instead
// (the metrics' `collect` hooks), and the duration histogram is our own, read the same way.
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client'

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const

export class GatewayMetrics {
  readonly registry = new Registry()
  private readonly routes = new Map<string, RouteMetrics>()
  readonly requests = pendingCounter(this.registry, 'waypost_requests_total', 'Requests answered, by route, method and status class.', ['route', 'method', 'status_class'] as const)
  readonly duration = new RouteHistogram(
    'waypost_request_duration_seconds',
    'Time from request start to response end, by route.',
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    () => this.routes.values(),
    this.registry,
  )
  readonly inFlight: Gauge<'route'> = new Gauge({
    name: 'waypost_requests_in_flight',
    help: 'Exchanges in progress, by route.',
    labelNames: ['route'] as const,
    registers: [this.registry],
    collect: () => {
      for (const route of this.routes.values()) this.inFlight.labels(route.route).set(route.inFlight)
    },
  })
  readonly localResponses = new Counter({
    name: 'waypost_local_responses_total',
    help: 'Answers made by the gateway itself instead of the upstream, by route and reason.',
    labelNames: ['route', 'reason'] as const,
    registers: [this.registry],
  })
  readonly reloads = new Counter({
    name: 'waypost_config_reload_total',
    help: 'Config loads, by result (success or failure).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly configVersion = new Gauge({
    name: 'waypost_config_version',
    help: 'Version number of the config plan in force.',
    registers: [this.registry],
  })
  readonly upstreamEjections = new Counter({
    name: 'waypost_upstream_ejections_total',
    help: 'Endpoints ejected by outlier detection, by upstream.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  readonly upstreamPanics = new Counter({
    name: 'waypost_upstream_panic_total',
    help: 'Attempts sent while no endpoint of the upstream was available (panic: every endpoint of the first priority group is used).',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  })
  /** Upstreams whose endpoint state the gauges below report, read when scraped. */
  private readonly upstreamSources = new Set<UpstreamStateSource>()
  readonly upstreamEndpointHealthy = new Gauge({
    name: 'waypost_upstream_endpoint_healthy',
    help: 'Active health of each upstream endpoint (1 healthy, 0 unhealthy).',
    labelNames: ['upstream', 'endpoint'] as const,
    registers: [this.registry],
    collect: () => {
      // Rebuilt at every scrape from the live endpoint groups, so removed endpoints and retired
      // upstreams disappear, and a group replaced by a reload cannot clobber its successor.
      const gauge = this.upstreamEndpointHealthy
      gauge.reset()
      for (const source of this.upstreamSources) {
        for (const endpoint of source.endpointList) gauge.labels(source.name, endpoint.address).set(endpoint.healthy ? 1 : 0)
      }
    },
  })
  readonly upstreamEjected = new Gauge({
    name: 'waypost_upstream_endpoints_ejected',
    help: 'Endpoints currently ejected by outlier detection, by upstream.',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
    collect: () => {
      const gauge = this.upstreamEjected
      gauge.reset()
      for (const source of this.upstreamSources) {
        source.settle()
        gauge.labels(source.name).set(source.ejectedCount)
      }
    },
  })
  constructor() {
    collectDefaultMetrics({ register: this.registry })
  }

  /** Reports an upstream's endpoints in the gauges until `forget` is called. */
  watchUpstream(source: UpstreamStateSource): void {
    this.upstreamSources.add(source)
  }

  forgetUpstream(source: UpstreamStateSource): void {
    this.upstreamSources.delete(source)
  }

  /** The bound series of one route; kept across reloads so counters keep counting. */
  route(name: string): RouteMetrics {
    let metrics = this.routes.get(name)
    if (metrics === undefined) {
      metrics = new RouteMetrics(this, name)
      this.routes.set(name, metrics)
    }
    return metrics
  }
}

/** What the upstream gauges read from an endpoint group (structural, so telemetry imports no proxy code). */
export interface UpstreamStateSource {
  readonly name: string
  readonly endpointList: ReadonlyArray<{ readonly address: string; readonly healthy: boolean }>
  readonly ejectedCount: number
  /** Returns endpoints whose ejection time has passed (ejections end lazily). */
  settle(): void
}

/** One route's request metrics, counted in plain numbers; the registry reads them when scraped. */
export class RouteMetrics {
  /** Exchanges in progress. */
  inFlight = 0
  /** waypost_requests_total's series of this route: per method, one per status class. */
  private readonly byMethodAndClass = new Map<string, PendingCount[]>()
  /** waypost_request_duration_seconds: observations per bucket (the last one is +Inf), not cumulative. */
  readonly durationCounts: Float64Array
  durationSum = 0
  durationCount = 0

  constructor(
    private readonly metrics: GatewayMetrics,
    readonly route: string,
  ) {
    this.durationCounts = new Float64Array(metrics.duration.upperBounds.length + 1)
  }

  observe(method: string, status: number, seconds: number): void {
    const key = METHODS.has(method) ? method : 'OTHER'
    let children = this.byMethodAndClass.get(key)
    if (children === undefined) {
      children = STATUS_CLASSES.map((statusClass) => pendingCount(this.metrics.requests, this.route, key, statusClass))
      this.byMethodAndClass.set(key, children)
    }
    children[Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1]!.inc()
    const bounds = this.metrics.duration.upperBounds
    let bucket = 0
    while (bucket < bounds.length && seconds > bounds[bucket]!) bucket++
    this.durationCounts[bucket]!++
    this.durationSum += seconds
    this.durationCount++
  }

  local(reason: string): void {
    this.metrics.localResponses.labels(this.route, reason).inc()
  }
}

/** What the registry reads from a metric (prom-client's typings call `type` an enum; at run time it is the name). */
interface ExportedMetric {
  readonly name: string
  readonly help: string
  readonly type: 'histogram'
  readonly aggregator: 'sum'
  readonly values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }>
}

/**
 * A histogram by route whose counts live on each route's RouteMetrics, read only when scraped. It
 * gives the registry the same series prom-client's Histogram would (`_bucket` with `le`, `_sum`,
 * `_count`), through the registry's metric interface (`get`, `reset`).
 */
export class RouteHistogram {
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const

  constructor(
    readonly name: string,
    readonly help: string,
    readonly upperBounds: readonly number[],
    private readonly routes: () => Iterable<RouteMetrics>,
    registry: Registry,
  ) {
    // The registry types want a prom-client Metric; it only calls get() and reset() on it.
    registry.registerMetric(this as unknown as Metric)
  }

  get(): Promise<ExportedMetric> {
    const values: ExportedMetric['values'] = []
    const bucketName = `${this.name}_bucket`
    for (const route of this.routes()) {
      if (route.durationCount === 0) continue
      const labels = { route: route.route }
      let cumulative = 0
      for (let i = 0; i < this.upperBounds.length; i++) {
        cumulative += route.durationCounts[i]!
        values.push({ metricName: bucketName, labels: { le: this.upperBounds[i]!, ...labels }, value: cumulative })
      }
      values.push({ metricName: bucketName, labels: { le: '+Inf', ...labels }, value: route.durationCount })
      values.push({ metricName: `${this.name}_sum`, labels, value: route.durationSum })
      values.push({ metricName: `${this.name}_count`, labels, value: route.durationCount })
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values })
  }

  reset(): void {
    for (const route of this.routes()) {
      route.durationCounts.fill(0)
      route.durationSum = 0
      route.durationCount = 0
    }
  }
}

/**
 * A metric a policy registers on first use: every route and every reload after that gets the same
 * one, since prom-client refuses a second registration of a name in one registry.
 */
function registeredOnce<T extends Metric>(registry: Registry, name: string, create: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? create()
}

/** Series counted in plain numbers on the request path, per counter, by their label values. */
const pendingSeries = new WeakMap<Counter<string>, Map<string, PendingCount>>()

/** A counter whose series may count in plain numbers (pendingCount); a scrape first adds them. */
function pendingCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  const series = new Map<string, PendingCount>()
  const counter = new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect: () => {
      for (const count of series.values()) count.flush()
    },
  })
  pendingSeries.set(counter as Counter<string>, series)
  return counter
}

/** A policy's counter, created on first use (see registeredOnce). */
export function sharedCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  return registeredOnce(registry, name, () => pendingCounter(registry, name, help, labelNames))
}

/**
 * One series of a counter made by pendingCounter, for the request path: inc() adds to a plain number, which the
 * next scrape adds to the counter (prom-client hashes the labels and allocates on every inc(), even
 * on a bound child). Every caller with the same label values gets the same series.
 */
export class PendingCount {
  private pending = 0

  constructor(private readonly counter: Counter<string>, private readonly values: readonly string[]) {}

  inc(): void {
    this.pending++
  }

  flush(): void {
    if (this.pending === 0) return
    this.counter.labels(...this.values).inc(this.pending)
    this.pending = 0
  }
}

/** The pending series of a counter made by pendingCounter (or sharedCounter), for these label values. */
export function pendingCount<L extends string>(counter: Counter<L>, ...values: string[]): PendingCount {
  const series = pendingSeries.get(counter as Counter<string>)
  if (series === undefined) throw new Error('pendingCount: the counter was not made by pendingCounter, so no scrape would flush it')
  const key = values.join('\0')
  let count = series.get(key)
  if (count === undefined) {
    count = new PendingCount(counter as Counter<string>, values)
    series.set(key, count)
  }
  return count
}

/** A policy's gauge, created on first use (see registeredOnce). */
export function sharedGauge<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Gauge<L> {
  return registeredOnce(registry, name, () => new Gauge({ name, help, labelNames, registers: [registry] }))
}
