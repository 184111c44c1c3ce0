// GET /stats: the gateway's state now, in one JSON document that the dashboard page and the tests
// share. Rates, error ratios and percentiles are over the last WINDOW_MS, from the same plain
// numbers the metrics registry reads (each route's answers by status class and its duration
// histogram, each upstream's attempts): a sampler keeps one copy of them per second, and /stats
// compares the live numbers with the oldest copy in the window. Policies report their own state
// through `deps.report` (plan.reports), so this file names none of them.
import type { Plan } from '../config/compile.js'
import type { ConfigEvent } from '../config/history.js'
import type { Health, PolicyReport } from '../policies/policy.js'
import type { GatewayMetrics, RouteMetrics, UpstreamMetrics } from '../telemetry/metrics.js'
import { packageVersion } from '../core/version.js'

/** Rates and percentiles are over this much of the recent past. */
export const WINDOW_MS = 10_000
const SAMPLE_EVERY_MS = 1000

/** An error ratio (5xx) above this turns a route red… */
export const RED_ERROR_RATIO = 0.05
/** …and above the availability SLO's budget (99.9%), amber. */
export const AMBER_ERROR_RATIO = 0.001
/** A p95 above the latency SLO (200 ms) turns a route amber. */
export const AMBER_P95_MS = 200

/** What /stats reads of the running gateway (the Gateway class has it). */
export interface StatsHost {
  readonly plan: Plan
  readonly metrics: GatewayMetrics
  readonly state: string
  readonly startedAt: number
  readonly lastError: { at: string; source: string; errors: string[] } | undefined
  readonly history: { list(): readonly ConfigEvent[] }
  readiness(): { ready: boolean; reason: string }
  logging(): { level: string }
  readonly audit: { readonly output: string | undefined; readonly sequence: number }
}

interface RouteSample {
  readonly answered: Float64Array
  readonly buckets: Float64Array
}

interface Sample {
  readonly at: number
  readonly routes: ReadonlyMap<string, RouteSample>
  readonly upstreams: ReadonlyMap<string, { attempts: number; failed: number }>
}

export interface RouteStats {
  readonly name: string
  readonly upstream: string
  readonly health: Health
  /** Why it is not green; empty when it is. */
  readonly why: string[]
  /** Requests per second over the window. */
  readonly rate: number
  /** Share of answers that were 5xx over the window; null without requests. */
  readonly errorRatio: number | null
  readonly p50Ms: number | null
  readonly p95Ms: number | null
  readonly p99Ms: number | null
  readonly inFlight: number
  readonly requests: number
  readonly policies: Array<PolicyReport & { readonly policy: string }>
}

export interface UpstreamStats {
  readonly name: string
  readonly health: Health
  readonly why: string[]
  readonly panic: boolean
  readonly healthy: number
  readonly available: number
  readonly total: number
  readonly inFlight: number
  /** Attempts per second over the window, retries included. */
  readonly rate: number
  /** Share of attempts that failed (no response, or 5xx) over the window; null without attempts. */
  readonly failureRatio: number | null
  readonly endpoints: ReadonlyArray<{ address: string; priority: number; weight: number; healthy: boolean; ejected: boolean; ejectedUntil: string | null; inFlight: number }>
}

export interface Stats {
  readonly at: string
  readonly windowSeconds: number
  readonly gateway: {
    readonly version: string
    readonly state: string
    readonly ready: boolean
    readonly readyReason: string
    readonly uptimeSeconds: number
    readonly logLevel: string
    readonly audit: { output: string; events: number } | null
  }
  readonly config: {
    readonly version: number
    readonly hash: string
    readonly source: string
    readonly loadedAt: string
    readonly lastReload: { ok: boolean; at: string; source: string; version?: number; errors?: string[] }
  }
  readonly health: Health
  readonly routes: RouteStats[]
  readonly upstreams: UpstreamStats[]
}

/** Keeps a copy of the numbers every second for the window; stopped with the gateway. */
export class StatsSampler {
  private samples: Sample[] = []
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly metrics: GatewayMetrics) {
    this.samples.push(this.take())
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(), SAMPLE_EVERY_MS).unref()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** The oldest copy still within the window (or the first ever taken, early on). */
  baseline(now: number): Sample {
    const cutoff = now - WINDOW_MS
    for (const sample of this.samples) if (sample.at >= cutoff) return sample
    return this.samples.at(-1)!
  }

  private tick(): void {
    const sample = this.take()
    this.samples.push(sample)
    const cutoff = sample.at - WINDOW_MS - SAMPLE_EVERY_MS
    while (this.samples.length > 1 && this.samples[0]!.at < cutoff) this.samples.shift()
  }

  private take(): Sample {
    const routes = new Map<string, RouteSample>()
    for (const route of this.metrics.routeList()) routes.set(route.route, { answered: route.answered.slice(), buckets: route.duration.counts.buckets.slice() })
    const upstreams = new Map<string, { attempts: number; failed: number }>()
    for (const upstream of this.metrics.upstreamList()) upstreams.set(upstream.upstream, upstream.totals())
    return { at: performance.now(), routes, upstreams }
  }
}

/**
 * The q-quantile of a histogram's bucket counts (per bucket, the last one +Inf), interpolated
 * linearly within its bucket as Prometheus' histogram_quantile does; null without observations.
 * Past the last finite bound the answer is that bound.
 */
export function quantile(q: number, upperBounds: readonly number[], buckets: ArrayLike<number>): number | null {
  let total = 0
  for (let i = 0; i < buckets.length; i++) total += buckets[i]!
  if (total <= 0) return null
  const rank = q * total
  let cumulative = 0
  for (let i = 0; i < buckets.length; i++) {
    const count = buckets[i]!
    if (cumulative + count >= rank && count > 0) {
      if (i >= upperBounds.length) return upperBounds.at(-1)!
      const lower = i === 0 ? 0 : upperBounds[i - 1]!
      const upper = upperBounds[i]!
      return lower + ((upper - lower) * (rank - cumulative)) / count
    }
    cumulative += count
  }
  return upperBounds.at(-1)!
}

const ORDER: Record<Health, number> = { green: 0, amber: 1, red: 2 }

export function worst(healths: Iterable<Health>): Health {
  let out: Health = 'green'
  for (const health of healths) if (ORDER[health] > ORDER[out]) out = health
  return out
}

function round(value: number | null, digits: number): number | null {
  if (value === null) return null
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

function routeStats(metrics: RouteMetrics, upperBounds: readonly number[], baseline: RouteSample | undefined, seconds: number, name: string, upstream: string, reports: Array<PolicyReport & { policy: string }>): RouteStats {
  const answered = metrics.answered
  const buckets = metrics.duration.counts.buckets
  let requests = 0
  let errors = 0
  for (let i = 0; i < 5; i++) {
    const delta = answered[i]! - (baseline?.answered[i] ?? 0)
    requests += delta
    if (i === 4) errors = delta
  }
  const window = new Float64Array(buckets.length)
  for (let i = 0; i < buckets.length; i++) window[i] = buckets[i]! - (baseline?.buckets[i] ?? 0)
  const ms = (q: number) => {
    const seconds = quantile(q, upperBounds, window)
    return seconds === null ? null : round(seconds * 1000, 1)
  }
  const errorRatio = requests > 0 ? errors / requests : null
  const p95Ms = ms(0.95)
  const why: string[] = []
  let health: Health = 'green'
  if (errorRatio !== null && errorRatio > RED_ERROR_RATIO) {
    health = 'red'
    why.push(`${(errorRatio * 100).toFixed(1)}% 5xx`)
  } else if (errorRatio !== null && errorRatio > AMBER_ERROR_RATIO) {
    health = 'amber'
    why.push(`${(errorRatio * 100).toFixed(2)}% 5xx (SLO 0.1%)`)
  }
  if (p95Ms !== null && p95Ms > AMBER_P95_MS) {
    health = worst([health, 'amber'])
    why.push(`p95 ${p95Ms} ms (SLO 200 ms)`)
  }
  for (const report of reports) {
    if (report.health === 'green') continue
    health = worst([health, report.health])
    why.push(`${report.policy}: ${report.summary}`)
  }
  let total = 0
  for (let i = 0; i < 5; i++) total += answered[i]!
  return {
    name,
    upstream,
    health,
    why,
    rate: round(requests / seconds, 2)!,
    errorRatio: round(errorRatio, 4),
    p50Ms: ms(0.5),
    p95Ms,
    p99Ms: ms(0.99),
    inFlight: metrics.inFlight,
    requests: total,
    policies: reports,
  }
}

function upstreamStats(plan: Plan, name: string, attempts: UpstreamMetrics | undefined, baseline: { attempts: number; failed: number } | undefined, seconds: number): UpstreamStats {
  const group = plan.upstreams.get(name)!
  const snapshot = group.snapshot()
  const endpoints = snapshot.endpoints.map(({ address, priority, weight, healthy, ejected, ejectedUntil, inFlight }) => ({ address, priority, weight, healthy, ejected, ejectedUntil, inFlight }))
  const available = endpoints.filter((endpoint) => endpoint.healthy && !endpoint.ejected).length
  const totals = attempts?.totals() ?? { attempts: 0, failed: 0 }
  const windowAttempts = totals.attempts - (baseline?.attempts ?? 0)
  const windowFailed = totals.failed - (baseline?.failed ?? 0)
  const failureRatio = windowAttempts > 0 ? windowFailed / windowAttempts : null
  const why: string[] = []
  let health: Health = 'green'
  if (endpoints.length === 0) {
    health = 'red'
    why.push('no endpoints known')
  } else if (available === 0) {
    health = 'red'
    why.push(`no endpoint available${snapshot.panic ? ' (panic: sending to all)' : ''}`)
  } else if (available < endpoints.length) {
    health = 'amber'
    why.push(`${endpoints.length - available} of ${endpoints.length} endpoints unhealthy or ejected`)
  }
  if (failureRatio !== null && failureRatio > RED_ERROR_RATIO) {
    health = worst([health, 'amber'])
    why.push(`${(failureRatio * 100).toFixed(1)}% of attempts failed`)
  }
  return {
    name,
    health,
    why,
    panic: snapshot.panic,
    healthy: endpoints.filter((endpoint) => endpoint.healthy).length,
    available,
    total: endpoints.length,
    inFlight: endpoints.reduce((sum, endpoint) => sum + endpoint.inFlight, 0),
    rate: round(windowAttempts / seconds, 2)!,
    failureRatio: round(failureRatio, 4),
    endpoints,
  }
}

/** The last reload's result: the newer of the last applied config and the last rejection. */
function lastReload(host: StatsHost): Stats['config']['lastReload'] {
  const applied = host.history.list().at(-1)
  const rejected = host.lastError
  if (rejected !== undefined && (applied === undefined || rejected.at >= applied.at)) return { ok: false, at: rejected.at, source: rejected.source, errors: rejected.errors }
  return { ok: true, at: applied?.at ?? host.plan.loadedAt.toISOString(), source: applied?.source ?? host.plan.source, version: applied?.version ?? host.plan.version }
}

export function buildStats(host: StatsHost, sampler: StatsSampler): Stats {
  const now = performance.now()
  const baseline = sampler.baseline(now)
  // At least a second, so the first answers after a start do not divide by almost nothing.
  const seconds = Math.max(1, (now - baseline.at) / 1000)
  const plan = host.plan
  const metrics = host.metrics
  const upperBounds = metrics.duration.upperBounds
  const routes = plan.routes.map((route) => {
    const reports = (plan.reports.get(route.info.name) ?? []).map(({ policy, probe }) => ({ policy, ...probe() }))
    return routeStats(route.metrics, upperBounds, baseline.routes.get(route.info.name), seconds, route.info.name, route.info.upstream, reports)
  })
  const attemptsByUpstream = new Map<string, UpstreamMetrics>()
  for (const upstream of metrics.upstreamList()) attemptsByUpstream.set(upstream.upstream, upstream)
  const upstreams = [...plan.upstreams.keys()].map((name) => upstreamStats(plan, name, attemptsByUpstream.get(name), baseline.upstreams.get(name), seconds))
  const readiness = host.readiness()
  const reload = lastReload(host)
  const gatewayHealth: Health = host.state !== 'ready' ? 'red' : !readiness.ready || !reload.ok ? 'amber' : 'green'
  return {
    at: new Date().toISOString(),
    windowSeconds: round(seconds, 1)!,
    gateway: {
      version: packageVersion(),
      state: host.state,
      ready: readiness.ready,
      readyReason: readiness.reason,
      uptimeSeconds: Math.round((Date.now() - host.startedAt) / 1000),
      logLevel: host.logging().level,
      audit: host.audit.output === undefined ? null : { output: host.audit.output, events: host.audit.sequence },
    },
    config: { version: plan.version, hash: plan.hash, source: plan.source, loadedAt: plan.loadedAt.toISOString(), lastReload: reload },
    health: worst([gatewayHealth, ...routes.map((route) => route.health), ...upstreams.map((upstream) => upstream.health)]),
    routes,
    upstreams,
  }
}
