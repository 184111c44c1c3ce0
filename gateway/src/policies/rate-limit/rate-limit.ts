// Rate limiting with token buckets, per route or per client. Over the limit: 429 with Retry-After
// and the IETF RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers-10), which
// every allowed response carries too, so well-behaved clients can slow down before they are
// refused. `shadow: true` only counts and logs, for trying a limit on live traffic first.
import { createHash } from 'node:crypto'
import { Type, type Static } from '@sinclair/typebox'
import { originatingClient } from '../../proxy/headers.js'
import { createRedisClient, keyPrefixOf } from '../../store/redis.js'
import { pendingCount, sharedCounter, sharedGauge } from '../../telemetry/metrics.js'
import { localResponse, type Exchange, type ProxyResponse, type Upstream } from '../../core/exchange.js'
import { definePolicy, recentIncrease, type Deps } from '../policy.js'
import type { Defaulted } from '../../core/schema-defaults.js'
import { perWorkerShare } from '../../core/per-worker.js'
import { RedisTokenBuckets } from './redis-token-buckets.js'
import { TokenBuckets, type Decision } from './token-buckets.js'

const HeaderName = Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', errorMessage: 'expected an HTTP header name' })

export const RateLimitConfig = Type.Object(
  {
    rate: Type.Number({ exclusiveMinimum: 0, description: 'Tokens added per second: the sustained requests per second allowed.' }),
    burst: Type.Optional(Type.Integer({ minimum: 1, description: 'Most tokens a bucket holds: requests allowed at once after a quiet period. Default: rate, rounded up.' })),
    key: Type.Optional(
      Type.Union([Type.Literal('route'), Type.Literal('ip'), Type.Literal('identity'), Type.Object({ header: HeaderName }, { additionalProperties: false })], {
        errorMessage: 'expected "route", "ip", "identity" or { header: NAME }',
        description:
          'Whose bucket a request takes from: `route` (one for the route), `ip` (the client address, behind listen.trustedProxies), ' +
          '`identity` (who `auth` proved: an API key\'s `rateLimitKey`, else kind and subject; anonymous requests fall back to their client address), ' +
          'or `{ header: NAME }` (requests without it fall back to their client address).',
        default: 'ip',
      }),
    ),
    maxKeys: Type.Optional(Type.Integer({ minimum: 1, default: 100_000, description: 'Most buckets kept (least recently used are dropped).' })),
    shadow: Type.Optional(Type.Boolean({ default: false, description: 'Only count and log what would be refused.' })),
    global: Type.Optional(
      Type.Boolean({ default: false, description: 'Keep the buckets in the top-level `redis`, shared by every replica; local buckets take over while Redis is unreachable.' }),
    ),
    headers: Type.Optional(Type.Boolean({ default: true, description: 'Send RateLimit-Policy and RateLimit on every response (429s always carry them).' })),
  },
  { additionalProperties: false, description: 'Token-bucket rate limit: `rate` per second, `burst` at once, per route, client address or header. 429 with Retry-After when exceeded.' },
)
export type RateLimitConfig = Static<typeof RateLimitConfig>
type ResolvedRateLimitConfig = Defaulted<RateLimitConfig, 'key' | 'maxKeys' | 'shadow' | 'global' | 'headers'>

/** The key of a request's bucket. */
type KeyOf = (exchange: Exchange) => string

export const rateLimit = definePolicy({
  name: 'rateLimit',
  schema: RateLimitConfig,
  localReasons: (config) => (config.shadow === true ? [] : ['rate-limited']),
  validate: (config, context) =>
    config.global === true && !context.redis ? [{ path: '/global', message: 'a global limit needs the top-level `redis` section (redis: { url: "redis://HOST:6379" })' }] : [],
  // Local buckets are per worker: each gets its share of the rate and the burst. A global limit
  // (Redis) is one bucket for every worker and replica: not divided.
  perWorker(section, workers) {
    const config = section as ResolvedRateLimitConfig
    if (config.global) return { config, divided: [] }
    const burst = config.burst ?? Math.ceil(config.rate)
    const share = { rate: config.rate / workers, burst: perWorkerShare(burst, workers) }
    return {
      config: { ...config, ...share },
      divided: [
        { field: 'rate', configured: config.rate, perWorker: share.rate },
        { field: 'burst', configured: burst, perWorker: share.burst },
      ],
    }
  },
  build(section, deps) {
    const config = section as ResolvedRateLimitConfig
    const burst = config.burst ?? Math.ceil(config.rate)
    const local = deps.keep('rate-limit', config, () => new TokenBuckets(config.rate, burst, config.maxKeys))
    const route = deps.route.name
    const buckets: { take(key: string): Decision | Promise<Decision> } = config.global ? globalBuckets(config, burst, local, deps) : local
    const shadow = config.shadow
    const sendHeaders = config.headers
    const policyHeader = `"${route}";q=${burst};w=${Math.ceil(burst / config.rate)}`
    const counter = sharedCounter(deps.metrics, 'waypost_rate_limit_total', 'Rate-limit decisions, by route and result (allowed, limited, shadow-limited).', ['route', 'result'])
    // Plain-number series (see telemetry/metrics.ts), each from 0: a shadow limit never says `limited`, nor an enforced one `shadow-limited`.
    const allowed = pendingCount(counter, route, 'allowed')
    const limited = shadow ? undefined : pendingCount(counter, route, 'limited')
    const shadowLimited = shadow ? pendingCount(counter, route, 'shadow-limited') : undefined
    const refusedLately = recentIncrease()
    deps.report(() => {
      const refused = (limited ?? shadowLimited)!
      const recent = refusedLately(refused.total)
      const keyName = typeof config.key === 'string' ? config.key : `header ${config.key.header}`
      return {
        health: recent > 0 ? 'amber' : 'green',
        summary: `${config.rate}/s, burst ${burst} per ${keyName}${shadow ? ' (shadow)' : ''}; ${recent} ${shadow ? 'would have been ' : ''}limited in 10 s`,
        rate: config.rate,
        burst,
        key: keyName,
        shadow,
        allowed: allowed.total,
        limited: refused.total,
        limitedLately: recent,
        buckets: local.size,
      }
    })
    const trustedProxies = deps.trustedProxies
    const keyOf = keyFunction(config.key, (exchange) => originatingClient(exchange.request.incoming, trustedProxies))

    const current = (decision: Decision): string => `"${route}";r=${decision.remaining};t=${decision.resetSeconds}`
    const withHeaders = (response: ProxyResponse, decision: Decision): ProxyResponse => {
      response.headers['ratelimit-policy'] = policyHeader
      response.headers.ratelimit = current(decision)
      return response
    }

    return (next: Upstream) => async (exchange: Exchange) => {
      const key = keyOf(exchange)
      const decision = await buckets.take(key)
      exchange.trace?.event('waypost.rate_limit', { 'waypost.rate_limit.result': decision.allowed ? 'allowed' : shadow ? 'shadow-limited' : 'limited', 'waypost.rate_limit.remaining': decision.remaining })
      if (decision.allowed) {
        allowed.inc()
      } else if (shadow) {
        shadowLimited?.inc()
        exchange.log.info({ route, key: loggedKey(config.key, key), retryAfter: decision.retryAfterSeconds, requestId: exchange.request.requestId }, 'rate limit exceeded (shadow mode: let through)')
      } else {
        limited?.inc()
        return localResponse(429, 'rate-limited', exchange, { 'retry-after': String(decision.retryAfterSeconds), 'ratelimit-policy': policyHeader, ratelimit: current(decision) })
      }
      return sendHeaders ? withHeaders(await next(exchange), decision) : next(exchange)
    }
  },
})

/** Buckets in Redis, with the local ones as the fallback; one client per limiter (see redis-token-buckets.ts). */
function globalBuckets(config: RateLimitConfig, burst: number, local: TokenBuckets, deps: Deps): RedisTokenBuckets {
  const redis = deps.redis
  // validate() refuses `global: true` without a top-level `redis`.
  if (redis === undefined) throw new Error('rateLimit.global needs the top-level redis section')
  const route = deps.route.name
  const storeUp = sharedGauge(deps.metrics, 'waypost_rate_limit_store_up', 'Whether the global rate limit store (Redis) answers, by route: 0 means local buckets decide.', ['route'], 'min').labels(route)
  const fallbacks = pendingCount(sharedCounter(deps.metrics, 'waypost_rate_limit_fallback_total', 'Rate-limit decisions made by local buckets because Redis did not answer, by route.', ['route']), route)
  return deps.keep(
    'rate-limit-redis',
    { redis, config },
    () => {
      const client = createRedisClient(redis, (error) => deps.log.debug({ route, err: error.message }, 'rate limit: Redis connection error'))
      return new RedisTokenBuckets(client, keyPrefixOf(redis), config.rate, burst, local, route, deps.log, { storeUp, fallbacks })
    },
    (buckets) => buckets.close(),
  )
}

/** A key as the log may show it: a header's value (an API key, a token) only as its fingerprint. */

function keyFunction(key: NonNullable<RateLimitConfig['key']>, clientOf: KeyOf): KeyOf {
  if (key === 'route') return () => ''
  if (key === 'ip') return clientOf
  if (key === 'identity') {
    return (exchange) => {
      const identity = exchange.identity
      if (identity.rateLimitKey !== undefined) return `k:${identity.rateLimitKey}`
      if (identity.kind === 'anonymous' || identity.subject === '') return `ip:${clientOf(exchange)}`
      return `${identity.kind}:${identity.issuer}:${identity.subject}`
    }
  }
  const header = key.header.toLowerCase()
  return (exchange) => {
    const value = exchange.request.incoming.headers[header]
    if (typeof value === 'string' && value !== '') return `h:${value}`
    return `ip:${clientOf(exchange)}`
  }
}

/** A header's value may be a credential (an API key): the log gets a short hash of it, never the value. */
function loggedKey(config: NonNullable<RateLimitConfig['key']>, key: string): string {
  if (typeof config !== 'object' || !key.startsWith('h:')) return key
  return `h:sha256:${createHash('sha256').update(key).digest('hex').slice(0, 12)}`
}
