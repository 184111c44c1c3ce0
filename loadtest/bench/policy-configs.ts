// The cost of each policy on its own (`npm run bench -- --policies`): gateway-bare (one catch-all
// route, no policy, no access log) plus exactly one thing, each measured in the same rounds as
// gateway-bare, so what a config costs over it is what that one policy costs per request.

export const POLICY_CONFIG_NAMES = [
  'policy-access-log',
  'policy-timeout',
  'policy-concurrency',
  'policy-rate-limit',
  'policy-breaker',
  'policy-retry',
  'policy-cache-miss',
  'policy-cache-hit',
  'policy-jwt',
  'policy-jwt-uncached',
  'policy-authz',
  'policy-trace-1',
  'policy-trace-100',
  'policy-tls',
] as const
export type PolicyConfigName = (typeof POLICY_CONFIG_NAMES)[number]

export function isPolicyConfig(name: string): name is PolicyConfigName {
  return (POLICY_CONFIG_NAMES as readonly string[]).includes(name)
}

/** What one policy config adds to gateway-bare. */
export interface PolicyAddition {
  /** What the route's policies become (the `defaults.policies` of the file). */
  readonly policies?: Record<string, unknown>
  readonly accessLog?: boolean
  /** Tracing on, sampled at this ratio, exported to the benchmark's OTLP sink. */
  readonly tracingRatio?: number
  /** The TLS listener with the benchmark's certificate; clients keep their connections alive. */
  readonly tls?: boolean
  /** JWT authentication against the benchmark's RS256 key (a JWKS file); every request carries the same token. */
  readonly jwt?: { readonly cacheEntries?: number }
  /** What the table says the config measures. */
  readonly what: string
}

export const POLICY_ADDITIONS: Readonly<Record<PolicyConfigName, PolicyAddition>> = {
  'policy-access-log': { accessLog: true, what: 'one access-log line per request (JSON to stdout)' },
  'policy-timeout': { policies: { timeout: { request: '30s', perTry: '10s' } }, what: 'timeout (request deadline and per-try timeout)' },
  'policy-concurrency': { policies: { concurrency: { max: 1024, queue: 256 } }, what: 'concurrency (limit 1024, queue 256; never reached)' },
  'policy-rate-limit': { policies: { rateLimit: { rate: 1_000_000, key: 'ip' } }, what: 'rate limit (a token bucket per client address; never exhausted)' },
  'policy-breaker': { policies: { breaker: {} }, what: 'circuit breaker (defaults; stays closed)' },
  'policy-retry': { policies: { retry: { attempts: 3 } }, what: 'retry (3 attempts, budget; every first attempt succeeds)' },
  'policy-cache-miss': { policies: { cache: {} }, what: 'cache, every request a miss (the answer has no freshness: looked up, not stored)' },
  'policy-cache-hit': { policies: { cache: { defaultTtl: '1h' } }, what: 'cache, every request after the first a hit' },
  'policy-jwt': { jwt: {}, what: 'JWT (RS256, key from a JWKS file; the verified token remembered)' },
  'policy-jwt-uncached': { jwt: { cacheEntries: 0 }, what: 'JWT (RS256, key from a JWKS file; every request verified: cacheEntries 0)' },
  'policy-authz': {
    policies: {
      authz: {
        default: 'deny',
        rules: [
          { name: 'no-admin', deny: { path: { prefix: '/admin' } } },
          { name: 'local-reads', allow: { methods: ['GET', 'HEAD'], source: ['127.0.0.0/8', '::1'] } },
        ],
      },
    },
    what: 'authorization (a deny rule on a path, an allow rule on method and source CIDR)',
  },
  'policy-trace-1': { tracingRatio: 0.01, what: 'tracing, 1% sampled, exported by OTLP/HTTP' },
  'policy-trace-100': { tracingRatio: 1, what: 'tracing, every request sampled, exported by OTLP/HTTP' },
  'policy-tls': { tls: true, what: 'TLS termination, keep-alive clients (RSA 2048 certificate)' },
}
