// Config → immutable Plan: a router over compiled routes, each an onion of policy layers around
// the dispatch to its upstream's endpoint group (kept across reloads while its config is unchanged).
// The layer order is the registry's (policies/index.ts), not the YAML author's: each policy's
// exchange layer in registry order, then each one's attempt layer (the per-try timeout), then dispatch.
import { BlockList } from 'node:net'
import type { Static } from '@sinclair/typebox'
import type { Logger } from 'pino'
import { Router, type HeaderMatch, type RouteMatch } from '../routing/router.js'
import { linearRegex } from '../routing/linear-regex.js'
import type { Deps, PolicyReport } from '../policies/policy.js'
import { registry } from '../policies/index.js'
import { buildUpstream } from '../proxy/upstream/build.js'
import type { EndpointGroup } from '../proxy/upstream/group.js'
import { dispatchTo } from '../proxy/dispatch.js'
import type { Layer, RouteInfo, Upstream } from '../core/exchange.js'
import { systemClock, type Clock } from '../core/clock.js'
import { toBytes, toMs } from '../core/units.js'
import { withDefaults, type Defaulted } from '../core/schema-defaults.js'
import { addressList } from '../core/cidr.js'
import { checkOperator } from '../core/operator.js'
import { ClientsConfig, type AdminToken, type GatewayConfig, type MatchConfig, type PoliciesConfig, type RouteConfig } from './schema.js'
import type { KeptState } from './kept-state.js'
import type { RedisConfig } from '../store/redis.js'
import type { GatewayMetrics, RouteMetrics } from '../telemetry/metrics.js'
import { DEFAULT_REDACTED_QUERY } from '../telemetry/redaction.js'

export interface CompiledRoute {
  readonly info: RouteInfo
  readonly handler: Upstream
  /** The upstream's endpoints (upgrades pick one from it directly). */
  readonly endpoints: EndpointGroup
  readonly metrics: RouteMetrics
  /** Path rewrite: the matched prefix and what replaces it. */
  readonly rewritePrefix: { from: string; to: string } | undefined
  readonly rewriteHost: string | undefined
  /** TRACE is answered 405 unless the route lists it in `match.methods`. */
  readonly allowsTrace: boolean
}

export interface Settings {
  readonly listen: string
  readonly admin: string
  /** What mutating admin endpoints accept from callers not on loopback. */
  readonly adminToken: AdminToken | undefined
  readonly trustedProxies: BlockList | undefined
  readonly keepAliveTimeoutMs: number
  readonly headersTimeoutMs: number
  readonly dropUnderscoreHeaders: boolean
  readonly clients: ClientLimits
  readonly drainDelayMs: number
  readonly drainTimeoutMs: number
  readonly logLevel: string
  readonly logFormat: string
  readonly accessLog: boolean
  /** Whether an applied reload undoes a level set through POST /logging. */
  readonly resetLevelOnReload: boolean
  /** Headers (beside the four always redacted) and query parameters never logged. */
  readonly redact: { readonly headers: readonly string[]; readonly query: readonly string[] }
  /** The audit trail's destination (`stdout` or a file); undefined when off. */
  readonly auditOutput: string | undefined
  /** `/ready` waits for every routed upstream to have a healthy endpoint. */
  readonly readyRequiresUpstream: boolean
}

export interface Plan {
  readonly version: number
  readonly hash: string
  readonly source: string
  readonly loadedAt: Date
  readonly config: GatewayConfig
  readonly settings: Settings
  readonly router: Router<CompiledRoute>
  readonly routes: ReadonlyArray<CompiledRoute>
  /** Endpoint groups by upstream name (GET /upstreams). */
  readonly upstreams: ReadonlyMap<string, EndpointGroup>
  /** What each policy's layers offered its admin endpoints (`deps.expose`), by policy name. */
  readonly exposed: ReadonlyMap<string, ReadonlyArray<unknown>>
  /** What each route's policies report of their state (`deps.report`), by route name, in layer order. */
  readonly reports: ReadonlyMap<string, ReadonlyArray<RouteReport>>
}

/** One policy's state probe on one route (GET /stats). */
export interface RouteReport {
  readonly policy: string
  readonly probe: () => PolicyReport
}

export interface CompileContext {
  readonly version: number
  readonly hash: string
  readonly source: string
  readonly state: KeptState
  readonly metrics: GatewayMetrics
  readonly log: Logger
  /** Time for the layers; the system clock unless a test passes its own. */
  readonly clock?: Clock
  /** Environment and CLI values that win over the file. */
  readonly overrides: { listen?: string; admin?: string; logLevel?: string; logFormat?: string }
}

export function compile(config: GatewayConfig, context: CompileContext): Plan {
  const upstreams = new Map<string, EndpointGroup>()
  const upstreamDeps = { log: context.log, metrics: context.metrics }
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    upstreams.set(name, context.state.keep('upstream', name, upstream, () => buildUpstream(name, upstream, upstreamDeps), (group) => group.dispose()))
  }
  const settings = settingsOf(config, context.overrides)
  const exposed = new Map<string, unknown[]>()
  const reports = new Map<string, RouteReport[]>()
  const routes = config.routes.map((route) => compileRoute(route, config.defaults?.policies, upstreams, config.upstreams[route.upstream], settings, config.redis, context, exposed, reports))
  const router = new Router(routes.map((compiled, index) => ({ route: compiled, match: routeMatch(config.routes[index]!.match) })))
  return {
    version: context.version,
    hash: context.hash,
    source: context.source,
    loadedAt: new Date(),
    config,
    settings,
    router,
    routes,
    upstreams,
    exposed,
    reports,
  }
}

function compileRoute(
  route: RouteConfig,
  defaults: PoliciesConfig | undefined,
  upstreams: ReadonlyMap<string, EndpointGroup>,
  target: unknown,
  settings: Settings,
  redis: RedisConfig | undefined,
  context: CompileContext,
  exposed: Map<string, unknown[]>,
  reports: Map<string, RouteReport[]>,
): CompiledRoute {
  const routeReports: RouteReport[] = []
  reports.set(route.name, routeReports)
  const endpoints = upstreams.get(route.upstream)!
  const info: RouteInfo = { name: route.name, upstream: route.upstream }
  const merged = mergePolicies(defaults, route.policies) as Record<string, unknown>
  const exchangeLayers: Layer[] = []
  const attemptLayers: Layer[] = []
  // The route's request series exist from its first plan on: each method it matches (GET when any), every status class.
  const metrics = context.metrics.route(route.name, route.match?.methods ?? ['GET'])
  for (const policy of registry) {
    const section = merged[policy.name]
    if (section === undefined || section === false) continue
    const reasons = policy.localReasons?.(section)
    if (reasons !== undefined) metrics.expectReasons(reasons)
    const deps: Deps<unknown> = {
      route: info,
      log: context.log,
      metrics: context.metrics.registry,
      clock: context.clock ?? systemClock,
      trustedProxies: settings.trustedProxies,
      redis,
      target,
      keep: (name, config, create, dispose) => context.state.keep(`route:${route.name}`, name, config, create, dispose),
      upstream: (name) => {
        const other = upstreams.get(name)
        if (other === undefined) throw new Error(`route ${route.name}: unknown upstream "${name}"`)
        return dispatchTo(other)
      },
      operator: (request) => checkOperator(request, settings.adminToken),
      expose: (value) => {
        let values = exposed.get(policy.name)
        if (values === undefined) exposed.set(policy.name, (values = []))
        values.push(value)
      },
      report: (probe) => void routeReports.push({ policy: policy.name, probe }),
    }
    // definePolicy fills the schema's defaults into the section for each of the policy's functions.
    const layer = policy.build(section, deps)
    if (layer !== null) exchangeLayers.push(layer)
    const attemptLayer = policy.buildAttempt?.(section, deps) ?? null
    if (attemptLayer !== null) attemptLayers.push(attemptLayer)
  }
  let handler = dispatchTo(endpoints)
  const layers = [...exchangeLayers, ...attemptLayers]
  for (let i = layers.length - 1; i >= 0; i--) handler = layers[i]!(handler)
  const prefix = route.match?.path?.prefix
  return {
    info,
    handler,
    endpoints,
    metrics,
    rewritePrefix: route.rewrite?.pathPrefix !== undefined && prefix !== undefined ? { from: prefix, to: route.rewrite.pathPrefix } : undefined,
    rewriteHost: route.rewrite?.host,
    allowsTrace: route.match?.methods?.includes('TRACE') === true,
  }
}

/** A route's section replaces the default field by field; `false` switches the default off. */
function mergePolicies(defaults: PoliciesConfig | undefined, own: PoliciesConfig | undefined): PoliciesConfig {
  const merged: Record<string, unknown> = { ...defaults }
  for (const [name, section] of Object.entries(own ?? {})) {
    const base = merged[name]
    merged[name] = section !== false && typeof base === 'object' && base !== null ? { ...base, ...section } : section
  }
  return merged as PoliciesConfig
}

function routeMatch(match: MatchConfig | undefined): RouteMatch {
  if (match === undefined) return {}
  const path = match.path
  return {
    host: match.host,
    methods: match.methods,
    path: path === undefined ? undefined : path.exact !== undefined ? { exact: path.exact } : path.regex !== undefined ? { regex: path.regex } : { prefix: path.prefix ?? '/' },
    headers: Object.entries(match.headers ?? {}).map(([name, value]): HeaderMatch => {
      const lower = name.toLowerCase()
      if (typeof value === 'string') return { name: lower, test: (actual) => actual === value }
      if ('regex' in value) {
        const regex = linearRegex(value.regex)
        return { name: lower, test: (actual) => regex.test(actual) }
      }
      return { name: lower, test: () => true }
    }),
  }
}

/** What each client may hold, with the schema's defaults filled in. */
export interface ClientLimits {
  readonly bodyIdleMs: number
  /** Bytes per second; 0 when off. */
  readonly bodyMinRate: number
  readonly connectionsPerAddress: number
  readonly exchangesPerAddress: number
}

function clientLimitsOf(section: Static<typeof ClientsConfig> | undefined): ClientLimits {
  const clients = withDefaults(ClientsConfig, section ?? {}) as Defaulted<Static<typeof ClientsConfig>, 'bodyIdleTimeout' | 'bodyMinRate' | 'connectionsPerAddress' | 'exchangesPerAddress'>
  return {
    bodyIdleMs: toMs(clients.bodyIdleTimeout),
    bodyMinRate: toBytes(clients.bodyMinRate),
    connectionsPerAddress: clients.connectionsPerAddress,
    exchangesPerAddress: clients.exchangesPerAddress,
  }
}

function settingsOf(config: GatewayConfig, overrides: CompileContext['overrides']): Settings {
  const trustedProxies = addressList(config.listen?.trustedProxies)
  return {
    listen: overrides.listen ?? config.listen?.address ?? '127.0.0.1:8080',
    admin: overrides.admin ?? config.admin?.address ?? '127.0.0.1:9901',
    adminToken: config.admin?.token,
    trustedProxies,
    keepAliveTimeoutMs: toMs(config.listen?.keepAliveTimeout ?? '65s'),
    headersTimeoutMs: toMs(config.listen?.headersTimeout ?? '30s'),
    dropUnderscoreHeaders: config.listen?.underscoreHeaders !== 'forward',
    clients: clientLimitsOf(config.listen?.clients),
    drainDelayMs: toMs(config.drain?.delay ?? '5s'),
    drainTimeoutMs: toMs(config.drain?.timeout ?? '30s'),
    logLevel: overrides.logLevel ?? config.log?.level ?? 'info',
    logFormat: overrides.logFormat ?? config.log?.format ?? 'json',
    accessLog: config.log?.access ?? true,
    resetLevelOnReload: config.log?.resetLevelOnReload ?? false,
    redact: { headers: config.log?.redact?.headers ?? [], query: config.log?.redact?.query ?? DEFAULT_REDACTED_QUERY },
    auditOutput: config.audit?.output,
    readyRequiresUpstream: config.admin?.readyRequiresUpstream ?? false,
  }
}
