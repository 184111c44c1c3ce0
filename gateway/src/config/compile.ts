// Config → immutable Plan: a router over compiled routes, each an onion of policy layers around
// the dispatch to its upstream's endpoint group (kept across reloads while its config is unchanged).
// The layer order is fixed here, not by the YAML author:
//   timeout (request) → rate limit → cache → fault → concurrency → adaptive concurrency → breaker → retry
//   → timeout (per try) → dispatch
// The request deadline is outermost so injected delays, queueing and retries count against it;
// a refused (rate-limited) request costs nothing further; the cache sits outside everything that
// guards the upstream, so a hit never takes a slot, a breaker probe or a retry (waiting on another
// request's miss still counts against the deadline); the breaker sits outside retry so it sees one
// outcome per exchange. Auth slots in before the rate limit.
import { BlockList } from 'node:net'
import type { Static, TSchema } from '@sinclair/typebox'
import type { Logger } from 'pino'
import { Router, type HeaderMatch, type RouteMatch } from '../routing/router.js'
import type { Deps, Policy, Purgeable, RouteInfo, Upstream } from '../policies/policy.js'
import { requestTimeout, attemptTimeout } from '../policies/timeout.js'
import { concurrency } from '../policies/concurrency.js'
import { retry } from '../policies/retry/retry.js'
import { rateLimit } from '../policies/rate-limit/rate-limit.js'
import { breaker, type BreakerBoard } from '../policies/breaker.js'
import { fault } from '../policies/fault.js'
import { adaptiveConcurrency } from '../policies/adaptive-concurrency/adaptive-concurrency.js'
import { buildUpstream } from '../proxy/upstream/build.js'
import type { EndpointGroup } from '../proxy/upstream/group.js'
import { cache } from '../policies/cache/cache.js'
import { dispatchTo } from '../proxy/dispatch.js'
import { toMs } from './units.js'
import { parseCidr } from './load.js'
import type { GatewayConfig, MatchConfig, PoliciesConfig, RouteConfig } from './schema.js'
import type { KeptState } from './kept-state.js'
import type { RedisConfig } from '../store/redis.js'
import type { GatewayMetrics, RouteMetrics } from '../telemetry/metrics.js'

/** Outermost first. Each entry reads its own YAML section under `policies:`. */
const LAYER_ORDER: ReadonlyArray<Policy<TSchema>> = [requestTimeout, rateLimit, cache, fault, concurrency, adaptiveConcurrency, breaker, retry, attemptTimeout] as ReadonlyArray<Policy<TSchema>>

export interface CompiledRoute {
  readonly info: RouteInfo
  readonly handler: Upstream
  /** The upstream's endpoints (upgrades pick one from it directly). */
  readonly endpoints: EndpointGroup
  readonly metrics: RouteMetrics
  /** Path rewrite: the matched prefix and what replaces it. */
  readonly rewritePrefix: { from: string; to: string } | undefined
  readonly rewriteHost: string | undefined
}

export interface Settings {
  readonly listen: string
  readonly admin: string
  readonly trustedProxies: BlockList | undefined
  readonly keepAliveTimeoutMs: number
  readonly headersTimeoutMs: number
  readonly drainDelayMs: number
  readonly drainTimeoutMs: number
  readonly logLevel: string
  readonly accessLog: boolean
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
  /** The response caches of this plan's routes, for the admin API's purge. */
  readonly purgeables: ReadonlyArray<Purgeable>
}

export interface CompileContext {
  readonly version: number
  readonly hash: string
  readonly source: string
  readonly state: KeptState
  readonly metrics: GatewayMetrics
  readonly breakers: BreakerBoard
  readonly log: Logger
  /** Environment and CLI values that win over the file. */
  readonly overrides: { listen?: string; admin?: string; logLevel?: string }
}

export function compile(config: GatewayConfig, context: CompileContext): Plan {
  const upstreams = new Map<string, EndpointGroup>()
  const upstreamDeps = { log: context.log, metrics: context.metrics }
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    upstreams.set(name, context.state.keep('upstream', name, upstream, () => buildUpstream(name, upstream, upstreamDeps), (group) => group.dispose()))
  }
  const settings = settingsOf(config, context.overrides)
  const purgeables: Purgeable[] = []
  const routes = config.routes.map((route) => compileRoute(route, config.defaults?.policies, upstreams, settings, config.redis, context, purgeables))
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
    purgeables,
  }
}

function compileRoute(
  route: RouteConfig,
  defaults: PoliciesConfig | undefined,
  upstreams: ReadonlyMap<string, EndpointGroup>,
  settings: Settings,
  redis: RedisConfig | undefined,
  context: CompileContext,
  purgeables: Purgeable[],
): CompiledRoute {
  const endpoints = upstreams.get(route.upstream)!
  const info: RouteInfo = { name: route.name, upstream: route.upstream }
  const deps: Deps = {
    route: info,
    log: context.log,
    metrics: context.metrics.registry,
    trustedProxies: settings.trustedProxies,
    redis,
    keep: (name, config, create, dispose) => context.state.keep(`route:${route.name}`, name, config, create, dispose),
    upstream: (name) => {
      const other = upstreams.get(name)
      if (other === undefined) throw new Error(`route ${route.name}: unknown upstream "${name}"`)
      return dispatchTo(other)
    },
    breakers: context.breakers,
    addPurgeable: (target) => void purgeables.push(target),
  }
  const policies = mergePolicies(defaults, route.policies)
  let handler = dispatchTo(endpoints)
  for (let i = LAYER_ORDER.length - 1; i >= 0; i--) {
    const policy = LAYER_ORDER[i]!
    const section = policies[policy.name as keyof PoliciesConfig]
    if (section === undefined || section === false) continue
    const layer = policy.build(section as Static<TSchema>, deps)
    if (layer !== null) handler = layer(handler)
  }
  const prefix = route.match?.path?.prefix
  return {
    info,
    handler,
    endpoints,
    metrics: context.metrics.route(route.name),
    rewritePrefix: route.rewrite?.pathPrefix !== undefined && prefix !== undefined ? { from: prefix, to: route.rewrite.pathPrefix } : undefined,
    rewriteHost: route.rewrite?.host,
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
        const regex = new RegExp(value.regex)
        return { name: lower, test: (actual) => regex.test(actual) }
      }
      return { name: lower, test: () => true }
    }),
  }
}

function settingsOf(config: GatewayConfig, overrides: CompileContext['overrides']): Settings {
  let trustedProxies: BlockList | undefined
  if (config.listen?.trustedProxies !== undefined && config.listen.trustedProxies.length > 0) {
    trustedProxies = new BlockList()
    for (const entry of config.listen.trustedProxies) {
      const cidr = parseCidr(entry)!
      trustedProxies.addSubnet(cidr.address, cidr.prefix, cidr.family)
    }
  }
  return {
    listen: overrides.listen ?? config.listen?.address ?? '127.0.0.1:8080',
    admin: overrides.admin ?? config.admin?.address ?? '127.0.0.1:9901',
    trustedProxies,
    keepAliveTimeoutMs: toMs(config.listen?.keepAliveTimeout ?? '65s'),
    headersTimeoutMs: toMs(config.listen?.headersTimeout ?? '30s'),
    drainDelayMs: toMs(config.drain?.delay ?? '5s'),
    drainTimeoutMs: toMs(config.drain?.timeout ?? '30s'),
    logLevel: overrides.logLevel ?? config.log?.level ?? 'info',
    accessLog: config.log?.access ?? true,
  }
}
