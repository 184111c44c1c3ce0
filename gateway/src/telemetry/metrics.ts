// Prometheus metrics. The request path only adds to plain numbers on its route's RouteMetrics:
// prom-client hashes its labels and allocates on every inc() and observe(), even on a bound child,
// which cost about 3 µs per request. Its series are brought up to date when scraped instead
// (the metrics' `collect` hooks), and the histograms (request duration by route, attempt duration
// by upstream) are our own, read the same way. Series are created when a route, policy or upstream
// is configured, at 0, so that the request path only finds them; rate() then sees a first increment.
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics, type Metric, type MetricObjectWithValues, type MetricValue, type OpenMetricsContentType } from 'prom-client'
import { packageVersion } from '../core/version.js'
import type { Reason } from '../core/reasons.js'
import { TlsMetrics } from './tls-metrics.js'

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
/** An upstream attempt's outcome: its status class, or `failed` when no response came (index 0). */
const ATTEMPT_OUTCOMES = ['failed', ...STATUS_CLASSES] as const

/**
 * The `route` label of requests no route took: no route matched, or the request was refused before
 * routing (a bad target, a bad Host, a malformed request). Route names start with a letter or a
 * digit, so no route can take it; the access log writes `route: "-"` for the same requests.
 */
export const UNROUTED = '-'

/** The local answers made before a route is known: their series exist from the start, at 0. */
const UNROUTED_REASONS: readonly Reason[] = ['no-route', 'invalid-request-target', 'invalid-host', 'http-version-not-supported', 'transfer-encoding-on-http-1.0', 'unsupported-transfer-encoding', 'malformed-request', 'headers-too-large', 'client-connection-limit', 'client-cert-required']

/** The method label of a request: one of METHODS, or OTHER (the label's values stay few). */
function methodLabel(method: string | undefined): string {
  return method !== undefined && METHODS.has(method) ? method : 'OTHER'
}

/** 0.2 s is the latency SLO's threshold (p95 < 200 ms, sidecar-manifests/monitoring/prometheus-rule.yaml): it must be a bucket bound. */
const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/**
 * Most endpoints of one upstream that get series of their own (`endpoint` label): beyond it, and
 * for endpoints found through DNS (whose addresses come and go), the upstream's series alone.
 */
export const ENDPOINT_SERIES_CAP = 16

export class GatewayMetrics {
  readonly registry = new Registry()
  private readonly routes = new Map<string, RouteMetrics>()
  private readonly upstreams = new Map<string, UpstreamMetrics>()
  /** Per-endpoint attempt series, by upstream and endpoint address (static endpoint lists only). */
  private readonly endpoints = new Map<string, UpstreamMetrics>()
  readonly requests = pendingCounter(this.registry, 'waypost_requests_total', 'Requests answered, by route, method and status class.', ['route', 'method', 'status_class'] as const)
  readonly duration = new ScrapedHistogram(
    'waypost_request_duration_seconds',
    'Time from request start to response end, by route.',
    REQUEST_BUCKETS,
    () => this.routeDurations(),
    this.registry,
  )
  readonly upstreamAttemptDuration = new ScrapedHistogram(
    'waypost_upstream_attempt_duration_seconds',
    'Time of each upstream attempt, from sending the request to the response headers (or the failure), by upstream and outcome (status class, or failed).',
    REQUEST_BUCKETS,
    () => this.attemptDurations(),
    this.registry,
  )
  readonly endpointAttemptDuration = new ScrapedHistogram(
    'waypost_upstream_endpoint_attempt_duration_seconds',
    `Time of each upstream attempt by endpoint, as waypost_upstream_attempt_duration_seconds; only for upstreams with a static list of at most ${ENDPOINT_SERIES_CAP} endpoints.`,
    REQUEST_BUCKETS,
    () => this.endpointDurations(),
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
  readonly localResponses = pendingCounter(this.registry, 'waypost_local_responses_total', 'Answers made by the gateway itself instead of the upstream, by route and reason.', ['route', 'reason'] as const)
  readonly reloads = new Counter({
    name: 'waypost_config_reload_total',
    help: 'Config loads, by result (success or failure).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  /** The TLS listener's handshakes and certificate reloads. */
  readonly tls = new TlsMetrics(this.registry)
  readonly configVersion = new Gauge({
    name: 'waypost_config_version',
    help: 'Version number of the config plan in force.',
    registers: [this.registry],
    // Across workers (docs/operations/workers.md): the newest version any worker runs; each counts its own.
    aggregator: 'max',
  })
  readonly configInfo = new Gauge({
    name: 'waypost_config_info',
    help: 'Always 1; its labels say which config plan is in force: version, hash (of the file, as GET /config shows it) and source (startup, file, signal, admin).',
    labelNames: ['version', 'hash', 'source'] as const,
    registers: [this.registry],
    // An info series: 1 per plan in force (two while workers differ), never summed.
    aggregator: 'first',
  })
  readonly lastReloadSuccessful = new Gauge({
    name: 'waypost_config_last_reload_successful',
    help: 'Whether the last config load was applied (1) or rejected (0; the plan before it keeps serving).',
    registers: [this.registry],
    // 0 when any worker rejected its last load.
    aggregator: 'min',
  })
  readonly buildInfo = new Gauge({
    name: 'waypost_build_info',
    help: 'Always 1; its labels say which Waypost (version) runs on which Node.js (node_version).',
    labelNames: ['version', 'node_version'] as const,
    registers: [this.registry],
    // An info series: 1, never summed across workers.
    aggregator: 'first',
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
    // Each worker checks for itself: healthy only when every worker sees it so.
    aggregator: 'min',
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
  readonly upstreamEndpointInFlight = new Gauge({
    name: 'waypost_upstream_endpoint_in_flight',
    help: 'Attempts in progress on each upstream endpoint (sent, body not yet ended).',
    labelNames: ['upstream', 'endpoint'] as const,
    registers: [this.registry],
    collect: () => {
      const gauge = this.upstreamEndpointInFlight
      gauge.reset()
      for (const source of this.upstreamSources) {
        for (const endpoint of source.endpointList) gauge.labels(source.name, endpoint.address).set(endpoint.inFlight)
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
  /** Certificates whose expiry the gauge below reports, read when scraped. */
  private readonly certificates = new Set<CertificateExpiry>()
  readonly certificateExpiryTime = new Gauge({
    name: 'waypost_tls_certificate_expiry_timestamp_seconds',
    help: 'When each certificate in use stops being valid (Unix time, seconds), by listener ("upstream:NAME" for an upstream\'s client certificate) and name.',
    labelNames: ['listener', 'name'] as const,
    registers: [this.registry],
    // A timestamp: the soonest any worker holds, never a sum.
    aggregator: 'min',
    collect: () => {
      // Rebuilt at every scrape, so a retired certificate disappears and a reload's overlap (old and
      // new owner both reporting the same labels) cannot leave a stale value behind.
      const gauge = this.certificateExpiryTime
      gauge.reset()
      for (const certificate of this.certificates) gauge.labels(certificate.listener, certificate.name).set(certificate.notAfterMs / 1000)
    },
  })
  /** Requests no route took (see UNROUTED): counted like a route's, from the start. */
  readonly unrouted: RouteMetrics

  constructor() {
    collectDefaultMetrics({ register: this.registry })
    // prom-client's totals of active handles, requests and resources are gauges named `*_total`,
    // a suffix Prometheus keeps for counters (promtool refuses them): the per-type gauges beside
    // them add up to the same numbers (sum(nodejs_active_handles)).
    for (const metric of this.registry.getMetricsAsArray() as unknown as ExportedMetric[]) {
      if (metric.type !== 'counter' && metric.name.endsWith('_total')) this.registry.removeSingleMetric(metric.name)
    }
    this.buildInfo.labels(packageVersion(), process.version).set(1)
    // Both results from the start, so that increase(...{result="failure"}) sees the first failure.
    for (const result of ['success', 'failure']) this.reloads.labels(result).inc(0)
    this.unrouted = this.route(UNROUTED)
    this.unrouted.expectReasons(UNROUTED_REASONS)
  }

  /** A config plan was applied: the info metric names it alone. */
  configApplied(version: number, hash: string, source: string): void {
    this.configVersion.set(version)
    this.configInfo.reset()
    this.configInfo.labels(String(version), hash, source).set(1)
    this.lastReloadSuccessful.set(1)
    this.reloads.labels('success').inc()
  }

  /** A config load was rejected: the plan in force (and its info series) stays. */
  configRejected(): void {
    this.lastReloadSuccessful.set(0)
    this.reloads.labels('failure').inc()
  }

  /** Reports an upstream's endpoints in the gauges until `forget` is called. */
  watchUpstream(source: UpstreamStateSource): void {
    this.upstreamSources.add(source)
    // Counted from 0, so that rate() and increase() see the first panic too.
    this.upstreamPanics.labels(source.name).inc(0)
  }

  forgetUpstream(source: UpstreamStateSource): void {
    this.upstreamSources.delete(source)
  }

  /**
   * Reports a certificate in use in waypost_tls_certificate_expiry_timestamp_seconds until the
   * returned function is called (its owner rotated it or was retired). `listener` names where it is
   * used: a listener's name, or `upstream:NAME` for an upstream's client certificate.
   */
  certificateExpiry(listener: string, name: string, notAfterMs: number): () => void {
    const certificate: CertificateExpiry = { listener, name, notAfterMs }
    this.certificates.add(certificate)
    return () => void this.certificates.delete(certificate)
  }

  /**
   * The bound series of one route; kept across reloads so counters keep counting. Its request
   * series exist from here on, at 0: every status class of each of `methods` (GET when none given).
   */
  route(name: string, methods: readonly string[] = ['GET']): RouteMetrics {
    let metrics = this.routes.get(name)
    if (metrics === undefined) {
      metrics = new RouteMetrics(this, name)
      this.routes.set(name, metrics)
    }
    for (const method of methods) metrics.expectMethod(method)
    return metrics
  }

  /** The attempt series of one upstream, by name; kept across reloads like a route's. */
  upstream(name: string): UpstreamMetrics {
    let metrics = this.upstreams.get(name)
    if (metrics === undefined) {
      metrics = new UpstreamMetrics({ upstream: name }, this.upstreamAttemptDuration.upperBounds)
      this.upstreams.set(name, metrics)
    }
    return metrics
  }

  /**
   * The attempt series of one endpoint of an upstream, kept across reloads. Only for static endpoint
   * lists within ENDPOINT_SERIES_CAP (the caller decides), so the `endpoint` label stays bounded.
   */
  endpoint(upstream: string, address: string): UpstreamMetrics {
    const key = `${upstream}\0${address}`
    let metrics = this.endpoints.get(key)
    if (metrics === undefined) {
      metrics = new UpstreamMetrics({ upstream, endpoint: address }, this.endpointAttemptDuration.upperBounds)
      this.endpoints.set(key, metrics)
    }
    return metrics
  }

  /** The scrape in the Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics()
  }

  /**
   * The scrape in OpenMetrics 1.0. prom-client's registry writes it when its content type is set,
   * but then renames each counter in place (strips `_total` from `metric.name`), which breaks every
   * later text scrape, and a concurrent text scrape would read the content type mid-way. So each
   * OpenMetrics scrape writes through a registry of its own, over views of the metrics.
   */
  openMetrics(): Promise<string> {
    return openMetricsOf(this.registry)
  }

  /** Every series as data, for a supervisor to add up with the other workers' (workerScrape). */
  snapshot(): Promise<WorkerMetrics> {
    return this.registry.getMetricsAsJSON()
  }

  private *routeDurations(): Iterable<HistogramSeries> {
    for (const route of this.routes.values()) yield route.duration
  }

  private *attemptDurations(): Iterable<HistogramSeries> {
    for (const upstream of this.upstreams.values()) yield* upstream.series()
  }

  private *endpointDurations(): Iterable<HistogramSeries> {
    for (const endpoint of this.endpoints.values()) yield* endpoint.series()
  }

  /** Every route's live numbers, for the admin's /stats (read, never reset). */
  routeList(): Iterable<RouteMetrics> {
    return this.routes.values()
  }

  /** Every upstream's attempt numbers, for /stats. */
  upstreamList(): Iterable<UpstreamMetrics> {
    return this.upstreams.values()
  }
}

export const OPENMETRICS_CONTENT_TYPE = Registry.OPENMETRICS_CONTENT_TYPE
export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE

/** One worker's metrics as data (GatewayMetrics.snapshot), as they cross the IPC channel. */
export type WorkerMetrics = Array<MetricObjectWithValues<MetricValue<string>>>

/**
 * The scrape of several workers (docs/operations/workers.md): their series added up by
 * prom-client's AggregatorRegistry, each metric as its `aggregator` says (counters and histograms
 * summed; states, timestamps and info series by min/max/first), plus the supervisor's own metrics.
 */
export function workerScrape(workers: readonly WorkerMetrics[], own: Registry, openMetrics: boolean): Promise<string> {
  const merged = Registry.merge([AggregatorRegistry.aggregate(workers as WorkerMetrics[]), own])
  return openMetrics ? openMetricsOf(merged) : merged.metrics()
}

/** The registry's scrape in OpenMetrics 1.0, written through a registry of views (see GatewayMetrics.openMetrics). */
function openMetricsOf(source: Registry): Promise<string> {
  const registry = new Registry<OpenMetricsContentType>()
  registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE)
  for (const metric of source.getMetricsAsArray()) registry.registerMetric(openMetricsView(metric as unknown as ExportedMetric) as unknown as Metric)
  return registry.metrics()
}

/** What prom-client's OpenMetrics writer may rename: a metric seen through its own name field. */
function openMetricsView(metric: ExportedMetric): ExportedMetric {
  const view = {
    name: metric.name,
    help: metric.help,
    type: metric.type,
    aggregator: metric.aggregator,
    // The registry strips `_total` from view.name (not the metric's): the family's name in OpenMetrics.
    get: async () => ({ ...(await metric.get()), name: view.name }),
    reset: () => undefined,
  }
  return view as unknown as ExportedMetric
}

interface CertificateExpiry {
  readonly listener: string
  readonly name: string
  readonly notAfterMs: number
}

/** What the upstream gauges read from an endpoint group (structural, so telemetry imports no proxy code). */
export interface UpstreamStateSource {
  readonly name: string
  readonly endpointList: ReadonlyArray<{ readonly address: string; readonly healthy: boolean; readonly inFlight: number }>
  readonly ejectedCount: number
  /** Returns endpoints whose ejection time has passed (ejections end lazily). */
  settle(): void
}

/** One route's request metrics, counted in plain numbers; the registry reads them when scraped. */
export class RouteMetrics {
  /** Exchanges in progress. */
  inFlight = 0
  /** Answers by status class (1xx … 5xx), for /stats: the counter's series are flushed at scrape. */
  readonly answered = new Float64Array(5)
  /** waypost_requests_total's series of this route: per method, one per status class. */
  private readonly byMethodAndClass = new Map<string, PendingCount[]>()
  /** waypost_local_responses_total's series of this route, by reason. */
  private readonly byReason = new Map<string, PendingCount>()
  /** waypost_request_duration_seconds of this route. */
  readonly duration: HistogramSeries

  constructor(
    private readonly metrics: GatewayMetrics,
    readonly route: string,
  ) {
    this.duration = { labels: { route }, counts: new HistogramCounts(metrics.duration.upperBounds.length) }
  }

  /** Makes the series of `method` (every status class) exist, at 0 until counted. */
  expectMethod(method: string): PendingCount[] {
    const key = methodLabel(method)
    let children = this.byMethodAndClass.get(key)
    if (children === undefined) {
      children = STATUS_CLASSES.map((statusClass) => pendingCount(this.metrics.requests, this.route, key, statusClass))
      this.byMethodAndClass.set(key, children)
    }
    return children
  }

  /** Makes the local-answer series of these reasons exist, at 0 until counted. */
  expectReasons(reasons: Iterable<string>): void {
    for (const reason of reasons) this.localCount(reason)
  }

  observe(method: string, status: number, seconds: number): void {
    this.count(method, status)
    this.metrics.duration.observe(this.duration.counts, seconds)
  }

  /** Counts an answer in waypost_requests_total only: for refusals whose request has no known start. */
  count(method: string, status: number): void {
    const children = this.byMethodAndClass.get(method) ?? this.expectMethod(method)
    const statusClass = Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1
    children[statusClass]!.inc()
    this.answered[statusClass]!++
  }

  local(reason: string): void {
    this.localCount(reason).inc()
  }

  private localCount(reason: string): PendingCount {
    let count = this.byReason.get(reason)
    if (count === undefined) {
      count = pendingCount(this.metrics.localResponses, this.route, reason)
      this.byReason.set(reason, count)
    }
    return count
  }
}

/**
 * One upstream's (or one endpoint's) attempt latencies, by outcome; an outcome's series appears
 * with its first attempt.
 */
export class UpstreamMetrics {
  private readonly byOutcome: Array<HistogramSeries | undefined> = ATTEMPT_OUTCOMES.map(() => undefined)
  readonly upstream: string

  constructor(
    private readonly labels: { readonly upstream: string; readonly endpoint?: string },
    private readonly upperBounds: readonly number[],
  ) {
    this.upstream = labels.upstream
  }

  /** One attempt: `status` is the response's status, 0 when it failed before one came. */
  observe(status: number, seconds: number): void {
    const index = status === 0 ? 0 : Math.min(Math.max(Math.floor(status / 100), 1), 5)
    let series = this.byOutcome[index]
    if (series === undefined) {
      series = { labels: { ...this.labels, outcome: ATTEMPT_OUTCOMES[index]! }, counts: new HistogramCounts(this.upperBounds.length) }
      this.byOutcome[index] = series
    }
    observeInto(series.counts, this.upperBounds, seconds)
  }

  *series(): Iterable<HistogramSeries> {
    for (const series of this.byOutcome) if (series !== undefined) yield series
  }

  /** Attempts so far and those that failed (no response, or a 5xx), for /stats. */
  totals(): { attempts: number; failed: number } {
    let attempts = 0
    for (const series of this.byOutcome) if (series !== undefined) attempts += series.counts.count
    const failed = (this.byOutcome[0]?.counts.count ?? 0) + (this.byOutcome[5]?.counts.count ?? 0)
    return { attempts, failed }
  }
}

/** What the registry reads from a metric (prom-client's typings call `type` an enum; at run time it is the name). */
interface ExportedMetric {
  name: string
  readonly help: string
  readonly type: string
  readonly aggregator: string
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ExportedValue[] }>
}

interface ExportedValue {
  metricName: string
  labels: Record<string, string | number>
  value: number
}

/** Observations of one histogram series: per bucket (the last one is +Inf), not cumulative. */
export class HistogramCounts {
  readonly buckets: Float64Array
  sum = 0
  count = 0

  constructor(bounds: number) {
    this.buckets = new Float64Array(bounds + 1)
  }
}

export interface HistogramSeries {
  readonly labels: Readonly<Record<string, string>>
  readonly counts: HistogramCounts
}

function observeInto(counts: HistogramCounts, upperBounds: readonly number[], seconds: number): void {
  let bucket = 0
  while (bucket < upperBounds.length && seconds > upperBounds[bucket]!) bucket++
  counts.buckets[bucket]!++
  counts.sum += seconds
  counts.count++
}

/**
 * A histogram whose counts live in plain numbers (HistogramCounts) where they are observed, read
 * only when scraped. It gives the registry the same series prom-client's Histogram would (`_bucket`
 * with `le`, `_sum`, `_count`), through the registry's metric interface (`get`, `reset`).
 */
export class ScrapedHistogram {
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const

  constructor(
    readonly name: string,
    readonly help: string,
    readonly upperBounds: readonly number[],
    private readonly series: () => Iterable<HistogramSeries>,
    registry: Registry,
  ) {
    // The registry types want a prom-client Metric; it only calls get() and reset() on it.
    registry.registerMetric(this as unknown as Metric)
  }

  observe(counts: HistogramCounts, seconds: number): void {
    observeInto(counts, this.upperBounds, seconds)
  }

  get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: ExportedValue[] }> {
    const values: ExportedValue[] = []
    const bucketName = `${this.name}_bucket`
    for (const { labels, counts } of this.series()) {
      let cumulative = 0
      for (let i = 0; i < this.upperBounds.length; i++) {
        cumulative += counts.buckets[i]!
        values.push({ metricName: bucketName, labels: { le: this.upperBounds[i]!, ...labels }, value: cumulative })
      }
      values.push({ metricName: bucketName, labels: { le: '+Inf', ...labels }, value: counts.count })
      values.push({ metricName: `${this.name}_sum`, labels, value: counts.sum })
      values.push({ metricName: `${this.name}_count`, labels, value: counts.count })
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values })
  }

  reset(): void {
    for (const { counts } of this.series()) {
      counts.buckets.fill(0)
      counts.sum = 0
      counts.count = 0
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
  /** Everything counted through this object (for /stats; the counter itself may hold more from before a reload). */
  total = 0

  constructor(private readonly counter: Counter<string>, private readonly values: readonly string[]) {
    // The series exists from here on, at 0: a counter that first appears at 1 loses that first
    // increment to rate() and increase(), and a family with no series answers queries with no data.
    counter.labels(...values).inc(0)
  }

  inc(): void {
    this.pending++
    this.total++
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

/**
 * How the supervisor of several workers combines a gauge's series (prom-client's AggregatorRegistry):
 * `sum` for amounts (bytes, in flight), `min`/`max`/`first` for states, timestamps and info series.
 */
export type Aggregator = 'sum' | 'first' | 'min' | 'max' | 'average' | 'omit'

/** A policy's gauge, created on first use (see registeredOnce); `aggregator` as Aggregator says. */
export function sharedGauge<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], aggregator: Aggregator = 'sum'): Gauge<L> {
  return registeredOnce(registry, name, () => new Gauge({ name, help, labelNames, registers: [registry], aggregator }))
}
