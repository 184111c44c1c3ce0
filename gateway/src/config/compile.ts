// Config → immutable Plan: a router over compiled routes, each an onion of policy layers around
// the dispatch to its upstream's endpoint group (kept across reloads while its config is unchanged).
// The layer order is the registry's (policies/index.ts), not the YAML author's: each policy's
// exchange layer in registry order, then each one's attempt layer (the per-try timeout), then dispatch.
import { resolve } from 'node:path'
import { BlockList } from 'node:net'
import type { Static } from '@sinclair/typebox'
import type { Logger } from 'pino'
import { Router, type HeaderMatch, type RouteMatch } from '../routing/router.js'
import { linearRegex } from '../routing/linear-regex.js'
import { clientCertTest } from '../routing/client-cert.js'
import type { Deps, PerWorkerLimit, PolicyReport } from '../policies/policy.js'
import { registry } from '../policies/index.js'
import { buildUpstream } from '../proxy/upstream/build.js'
import type { EndpointGroup } from '../proxy/upstream/group.js'
import { dispatchTo, tracedDispatchTo } from '../proxy/dispatch.js'
import { withoutRequestHeaders, type Layer, type RouteInfo, type Upstream } from '../core/exchange.js'
import { systemClock, type Clock } from '../core/clock.js'
import { toBytes, toMs } from '../core/units.js'
import { withDefaults, type Defaulted } from '../core/schema-defaults.js'
import { addressList } from '../core/cidr.js'
import { checkOperator } from '../core/operator.js'
import { ClientsConfig, ListenerTlsConfig, type AdminToken, type ForwardClientCert, type GatewayConfig, type MatchConfig, type PoliciesConfig, type RouteConfig } from './schema.js'
import type { KeptState } from './kept-state.js'
import type { RedisConfig } from '../store/redis.js'
import type { GatewayMetrics, RouteMetrics } from '../telemetry/metrics.js'
import { NO_SECURITY_LOG, type SecurityEvents } from '../telemetry/security-log.js'
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
  /** TLS on the proxy listener; undefined: cleartext. */
  readonly tls: ListenerTls | undefined
  /** A second listener without TLS beside the TLS one (listen.plainAddress). */
  readonly plainAddress: string | undefined
  readonly forwardClientCert: ForwardClientCert
  readonly drainDelayMs: number
  readonly drainTimeoutMs: number
  readonly logLevel: string
  readonly logFormat: string
  readonly accessLog: boolean
  /** `securityLog.path`: 'stdout' or a file. */
  readonly securityLog: string
  /** Whether an applied reload undoes a level set through POST /logging. */
  readonly resetLevelOnReload: boolean
  /** Headers (beside the four always redacted) and query parameters never logged. */
  readonly redact: { readonly headers: readonly string[]; readonly query: readonly string[] }
  /** The audit trail's destination (`stdout` or a file); undefined when off. */
  readonly auditOutput: string | undefined
  /** `/ready` waits for every routed upstream to have a healthy endpoint. */
  readonly readyRequiresUpstream: boolean
}

/** Something `/ready` waits for (a JWKS fetched): what a policy passed to `deps.awaitBeforeReady`. */
export interface Dependency {
  readonly what: string
  ready: boolean
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
  /** What must be ready before `/ready` says so (policies' `deps.awaitBeforeReady`). */
  readonly dependencies: ReadonlyArray<Dependency>
  /** What each route's policies report of their state (`deps.report`), by route name, in layer order. */
  readonly reports: ReadonlyMap<string, ReadonlyArray<RouteReport>>
  /** Worker processes sharing the gateway's limits (1: a single process). */
  readonly workers: number
  /** The limits divided among the workers, as each applies them (empty with one worker). */
  readonly perWorkerLimits: ReadonlyArray<PerWorkerLimit & { readonly route: string; readonly policy: string }>
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
  /** Where policies record authentication failures and denials; nowhere unless given. */
  readonly security?: SecurityEvents
  /** Environment and CLI values that win over the file. */
  readonly overrides: { listen?: string; admin?: string; logLevel?: string; logFormat?: string }
  /** The policy file's folder: every relative file path in it (TLS files, API keys, JWKS, logs) is read from there. Default: the working directory. */
  readonly baseDir?: string
  /** Tracing is on (decided at start): each dispatch gets a client span per attempt. */
  readonly tracing?: boolean
  /**
   * Worker processes serving the gateway (default 1). With more, each policy's perWorker hook
   * divides the limits its state keeps per process (local rate and concurrency limits) here, at
   * compile time, so the request path does not know about workers.
   */
  readonly workers?: number
}

export function compile(config: GatewayConfig, context: CompileContext): Plan {
  const upstreams = new Map<string, EndpointGroup>()
  const upstreamDeps = { log: context.log, metrics: context.metrics, baseDir: context.baseDir ?? process.cwd() }
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    upstreams.set(name, context.state.keep('upstream', name, upstream, () => buildUpstream(name, upstream, upstreamDeps), (group) => group.dispose()))
  }
  const settings = settingsOf(config, context.overrides)
  const exposed = new Map<string, unknown[]>()
  const dependencies: Dependency[] = []
  const merged = config.routes.map((route) => mergePolicies(config.defaults?.policies, route.policies) as Record<string, unknown>)
  const owned = ownedRequestHeaders(merged)
  const reports = new Map<string, RouteReport[]>()
  const perWorkerLimits: Array<PerWorkerLimit & { route: string; policy: string }> = []
  const shared: SharedContext = { upstreams, settings, redis: config.redis, context, exposed, dependencies, owned, reports, perWorkerLimits }
  const routes = config.routes.map((route, index) => compileRoute(route, merged[index]!, config.upstreams[route.upstream], shared))
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
    dependencies,
    reports,
    workers: context.workers ?? 1,
    perWorkerLimits,
  }
}

/** What every route's compile shares. */
interface SharedContext {
  readonly upstreams: ReadonlyMap<string, EndpointGroup>
  readonly settings: Settings
  readonly redis: RedisConfig | undefined
  readonly context: CompileContext
  readonly exposed: Map<string, unknown[]>
  readonly dependencies: Dependency[]
  /** Headers some policy of the plan sets for the upstream: stripped from every client request. */
  readonly owned: ReadonlySet<string>
  readonly reports: Map<string, RouteReport[]>
  readonly perWorkerLimits: Array<PerWorkerLimit & { route: string; policy: string }>
}

/** The identity headers any route's policies set (Policy.ownedRequestHeaders), over the whole plan. */
function ownedRequestHeaders(routes: ReadonlyArray<Record<string, unknown>>): ReadonlySet<string> {
  const names = new Set<string>()
  for (const merged of routes) {
    for (const policy of registry) {
      const section = merged[policy.name]
      if (section === undefined || section === false || policy.ownedRequestHeaders === undefined) continue
      for (const name of policy.ownedRequestHeaders(section)) names.add(name.toLowerCase())
    }
  }
  return names
}

/** Outermost on every route: a header the gateway sets for the upstream never comes from the client. */
function stripOwnedHeaders(names: ReadonlySet<string>): Layer {
  return (next) => (exchange) => {
    const request = withoutRequestHeaders(exchange.request, names)
    return next(request === exchange.request ? exchange : { ...exchange, request })
  }
}

function compileRoute(route: RouteConfig, merged: Record<string, unknown>, target: unknown, shared: SharedContext): CompiledRoute {
  const { upstreams, settings, redis, context, exposed, dependencies, reports } = shared
  const routeReports: RouteReport[] = []
  reports.set(route.name, routeReports)
  const endpoints = upstreams.get(route.upstream)!
  const info: RouteInfo = { name: route.name, upstream: route.upstream }
  // The traced dispatch only when tracing is on: with it off, nothing of tracing is in the plan.
  const dispatch = context.tracing === true ? tracedDispatchTo : dispatchTo
  const exchangeLayers: Layer[] = []
  const attemptLayers: Layer[] = []
  // The route's request series exist from its first plan on: each method it matches (GET when any), every status class.
  const metrics = context.metrics.route(route.name, route.match?.methods ?? ['GET'])
  const workers = context.workers ?? 1
  for (const policy of registry) {
    let section = merged[policy.name]
    if (section === undefined || section === false) continue
    if (workers > 1 && policy.perWorker !== undefined) {
      const share = policy.perWorker(section, workers)
      section = share.config
      for (const limit of share.divided) shared.perWorkerLimits.push({ route: route.name, policy: policy.name, ...limit })
    }
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
        return dispatch(other)
      },
      operator: (request) => checkOperator(request, settings.adminToken),
      security: context.security ?? NO_SECURITY_LOG,
      awaitBeforeReady: (what, ready) => {
        const dependency: Dependency = { what: `${what} (route ${route.name})`, ready: false }
        dependencies.push(dependency)
        void ready.then(() => (dependency.ready = true))
      },
      expose: (value) => {
        let values = exposed.get(policy.name)
        if (values === undefined) exposed.set(policy.name, (values = []))
        values.push(value)
      },
      report: (probe) => void routeReports.push({ policy: policy.name, probe }),
      path: (file) => resolve(context.baseDir ?? process.cwd(), file),
    }
    // definePolicy fills the schema's defaults into the section for each of the policy's functions.
    const layer = policy.build(section, deps)
    if (layer !== null) exchangeLayers.push(layer)
    const attemptLayer = policy.buildAttempt?.(section, deps) ?? null
    if (attemptLayer !== null) attemptLayers.push(attemptLayer)
  }
  let handler = dispatch(endpoints)
  const layers = [...(shared.owned.size > 0 ? [stripOwnedHeaders(shared.owned)] : []), ...exchangeLayers, ...attemptLayers]
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
export function mergePolicies(defaults: PoliciesConfig | undefined, own: PoliciesConfig | undefined): PoliciesConfig {
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
    clientCert: match.clientCert === undefined ? undefined : clientCertTest(match.clientCert),
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

/** listen.tls with the schema's defaults filled in. Paths are as written (relative ones to the policy file's folder). */
export interface ListenerTls {
  readonly cert: string
  readonly key: string
  readonly sni: ReadonlyArray<{ readonly hosts: readonly string[]; readonly cert: string; readonly key: string }>
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
  readonly ciphers: string
  readonly groups: string
  readonly sessionTickets: boolean
  readonly ticketKeyRotationMs: number
  readonly clientAuth: 'none' | 'optional' | 'require'
  readonly clientCa: string | undefined
  readonly crl: string | undefined
  readonly handshakeTimeoutMs: number
  readonly maxHandshakes: number
}

export function listenerTlsOf(section: ListenerTlsConfig): ListenerTls {
  const tls = withDefaults(ListenerTlsConfig, section) as Defaulted<ListenerTlsConfig, 'minVersion' | 'ciphers' | 'groups' | 'sessionTickets' | 'ticketKeyRotation' | 'clientAuth' | 'handshakeTimeout' | 'maxHandshakes'>
  return {
    cert: tls.cert,
    key: tls.key,
    sni: tls.sni ?? [],
    minVersion: tls.minVersion,
    ciphers: tls.ciphers,
    groups: tls.groups,
    sessionTickets: tls.sessionTickets,
    ticketKeyRotationMs: toMs(tls.ticketKeyRotation),
    clientAuth: tls.clientAuth,
    clientCa: tls.clientCa,
    crl: tls.crl,
    handshakeTimeoutMs: toMs(tls.handshakeTimeout),
    maxHandshakes: tls.maxHandshakes,
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

export function settingsOf(config: GatewayConfig, overrides: CompileContext['overrides']): Settings {
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
    tls: config.listen?.tls === undefined ? undefined : listenerTlsOf(config.listen.tls),
    plainAddress: config.listen?.tls === undefined ? undefined : config.listen.plainAddress,
    forwardClientCert: config.listen?.forwardClientCert ?? 'sanitizeSet',
    drainDelayMs: toMs(config.drain?.delay ?? '5s'),
    drainTimeoutMs: toMs(config.drain?.timeout ?? '30s'),
    logLevel: overrides.logLevel ?? config.log?.level ?? 'info',
    logFormat: overrides.logFormat ?? config.log?.format ?? 'json',
    accessLog: config.log?.access ?? true,
    securityLog: config.securityLog?.path ?? 'stdout',
    resetLevelOnReload: config.log?.resetLevelOnReload ?? false,
    redact: { headers: config.log?.redact?.headers ?? [], query: config.log?.redact?.query ?? DEFAULT_REDACTED_QUERY },
    auditOutput: config.audit?.output,
    readyRequiresUpstream: config.admin?.readyRequiresUpstream ?? false,
  }
}
