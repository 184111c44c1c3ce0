// Prometheus metrics. Per-route children are bound once per route and status class, so the request
// path does one map lookup instead of prom-client's per-call label hashing.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const

export class GatewayMetrics {
  readonly registry = new Registry()
  readonly requests = new Counter({
    name: 'waypost_requests_total',
    help: 'Requests answered, by route, method and status class.',
    labelNames: ['route', 'method', 'status_class'] as const,
    registers: [this.registry],
  })
  readonly duration = new Histogram({
    name: 'waypost_request_duration_seconds',
    help: 'Time from request start to response end, by route.',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  })
  readonly inFlight = new Gauge({
    name: 'waypost_requests_in_flight',
    help: 'Exchanges in progress, by route.',
    labelNames: ['route'] as const,
    registers: [this.registry],
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
  private readonly routes = new Map<string, RouteMetrics>()

  constructor() {
    collectDefaultMetrics({ register: this.registry })
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

type CounterChild = ReturnType<Counter<'route' | 'method' | 'status_class'>['labels']>

export class RouteMetrics {
  readonly duration: ReturnType<Histogram<'route'>['labels']>
  readonly inFlight: ReturnType<Gauge<'route'>['labels']>
  private readonly byMethodAndClass = new Map<string, CounterChild[]>()

  constructor(private readonly metrics: GatewayMetrics, readonly route: string) {
    this.duration = metrics.duration.labels(route)
    this.inFlight = metrics.inFlight.labels(route)
  }

  observe(method: string, status: number, seconds: number): void {
    const key = METHODS.has(method) ? method : 'OTHER'
    let children = this.byMethodAndClass.get(key)
    if (children === undefined) {
      children = STATUS_CLASSES.map((statusClass) => this.metrics.requests.labels(this.route, key, statusClass))
      this.byMethodAndClass.set(key, children)
    }
    const index = Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1
    children[index]!.inc()
    this.duration.observe(seconds)
  }

  local(reason: string): void {
    this.metrics.localResponses.labels(this.route, reason).inc()
  }
}

/**
 * A policy's counter, created on first use: every route's layer (and every reload) asks for the
 * same series family, and a registry holds each name once.
 */
export function sharedCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  const existing = registry.getSingleMetric(name)
  if (existing !== undefined) return existing as Counter<L>
  return new Counter({ name, help, labelNames, registers: [registry] })
}

/** A policy's gauge, created on first use, for the same reason as sharedCounter. */
export function sharedGauge<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[]): Gauge<L> {
  const existing = registry.getSingleMetric(name)
  if (existing !== undefined) return existing as Gauge<L>
  return new Gauge({ name, help, labelNames, registers: [registry] })
}
