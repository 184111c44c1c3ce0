// An upstream's YAML section: where its endpoints come from (one `url`, a static `endpoints` list or
// a `dns` name), how traffic is spread over them, and how broken ones are found (active health
// checks, passive outlier ejection). The schema is the one source; what it cannot say (exactly one
// endpoint source, origins without a path, ranges) is checked by `upstreamProblems`.
import { Type, type Static } from '@sinclair/typebox'
import { Duration, toMs } from '../../core/units.js'

const Origin = Type.String({ description: 'An origin, e.g. "http://127.0.0.1:3000" (no path).', examples: ['http://127.0.0.1:3000'] })

export const EndpointConfig = Type.Object(
  {
    url: Origin,
    priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'Priority group: 0 (the default) is the highest; higher numbers are fail-over groups.' })),
    weight: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Relative share of traffic within its group. Default 1.' })),
  },
  { additionalProperties: false },
)
export type EndpointConfig = Static<typeof EndpointConfig>

export const DnsConfig = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'Host name to resolve (every address it resolves to is an endpoint).' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    scheme: Type.Optional(Type.Union([Type.Literal('http'), Type.Literal('https')], { errorMessage: 'expected http or https' })),
    ttl: Type.Optional(Duration),
    family: Type.Optional(Type.Union([Type.Literal(4), Type.Literal(6)], { errorMessage: 'expected 4 or 6', description: 'Keep only IPv4 (4) or IPv6 (6) addresses. Default: both.' })),
  },
  { additionalProperties: false, description: 'Endpoints from DNS: re-resolved every `ttl` (default 30s); a failed resolve keeps the last good set.' },
)
export type DnsConfig = Static<typeof DnsConfig>

const StatusRange = Type.Union([Type.Integer({ minimum: 100, maximum: 599 }), Type.String({ pattern: '^\\d{3}(-\\d{3})?$' })], {
  errorMessage: 'expected a status (200) or a range ("200-399")',
})

export const HealthCheckConfig = Type.Object(
  {
    path: Type.String({ pattern: '^/', errorMessage: 'expected a path starting with "/"', description: 'GET this path on each endpoint.' }),
    interval: Type.Optional(Duration),
    timeout: Type.Optional(Duration),
    healthyThreshold: Type.Optional(Type.Integer({ minimum: 1, description: 'Passes in a row that make an unhealthy endpoint healthy. Default 2.' })),
    unhealthyThreshold: Type.Optional(Type.Integer({ minimum: 1, description: 'Failures in a row that make a healthy endpoint unhealthy. Default 3.' })),
    expectStatus: Type.Optional(StatusRange),
  },
  {
    additionalProperties: false,
    description: 'Active health check every `interval` (default 5s), each bounded by `timeout` (default 1s); a pass is a status in `expectStatus` (default "200-399").',
  },
)
export type HealthCheckConfig = Static<typeof HealthCheckConfig>

export const OutlierDetectionConfig = Type.Object(
  {
    consecutive5xx: Type.Optional(Type.Integer({ minimum: 1, description: '5xx answers (or connect/reset failures) in a row that eject an endpoint. Default 5.' })),
    consecutiveGatewayErrors: Type.Optional(Type.Integer({ minimum: 1, description: '502/503/504 answers or connect/reset failures in a row that eject an endpoint. Default 5.' })),
    baseEjectionTime: Type.Optional(Duration),
    maxEjectionTime: Type.Optional(Duration),
    maxEjectionPercent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'Never eject beyond this share of the endpoints. Default 50.' })),
  },
  {
    additionalProperties: false,
    description: 'Passive ejection: an endpoint is left out for `baseEjectionTime` (default 30s) × the times it has been ejected, at most `maxEjectionTime` (default 300s).',
  },
)
export type OutlierDetectionConfig = Static<typeof OutlierDetectionConfig>

export const UpstreamConfig = Type.Object(
  {
    url: Type.Optional(Origin),
    endpoints: Type.Optional(Type.Array(EndpointConfig, { minItems: 1, description: 'Several endpoints, in priority groups.' })),
    dns: Type.Optional(DnsConfig),
    balancer: Type.Optional(Type.Union([Type.Literal('least-request'), Type.Literal('round-robin')], {
      errorMessage: 'expected least-request or round-robin',
      description: 'How an endpoint is picked within a group. Default least-request (the less busy of two random endpoints).',
    })),
    minHealthyPercent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'A priority group takes traffic while at least this share of its endpoints is available. Default 50.' })),
    healthCheck: Type.Optional(HealthCheckConfig),
    outlierDetection: Type.Optional(OutlierDetectionConfig),
    connections: Type.Optional(Type.Integer({ minimum: 1, description: 'Most sockets open to each endpoint. Default 128.' })),
    idleTimeout: Type.Optional(Duration),
    connectTimeout: Type.Optional(Duration),
    bodyIdleTimeout: Type.Optional(Duration),
  },
  {
    additionalProperties: false,
    description:
      'An upstream: exactly one of `url`, `endpoints` or `dns`. `idleTimeout` (default 4s) must stay below the app\'s keep-alive timeout (Node\'s default is 5s); ' +
      '`connectTimeout` default 5s; `bodyIdleTimeout` (default 5m) is the longest silence allowed while a body streams.',
  },
)
export type UpstreamConfig = Static<typeof UpstreamConfig>

/** Shortest re-resolve or health-check interval: anything tighter is a busy loop, not a check. */
const MIN_INTERVAL_MS = 50

/** A field path relative to the upstream (JSON pointer segments) and what is wrong there. */
export interface UpstreamProblem {
  readonly path: string
  readonly message: string
}

/** Why `url` is not an http(s) origin, or undefined when it is one. */
export function originProblem(url: string): string | undefined {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return `not a URL: "${url}"`
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `expected an http:// or https:// URL, got "${parsed.protocol}"`
  if ((parsed.pathname !== '/' && parsed.pathname !== '') || parsed.search !== '' || parsed.hash !== '' || parsed.username !== '' || parsed.password !== '') {
    return 'expected an origin only (scheme://host:port), without a path, query or credentials'
  }
  return undefined
}

/** An inclusive status range from `expectStatus`; undefined when the range is backwards. */
export function statusRange(value: number | string | undefined): { low: number; high: number } | undefined {
  if (value === undefined) return { low: 200, high: 399 }
  if (typeof value === 'number') return { low: value, high: value }
  const [low, high = low] = value.split('-').map(Number) as [number, number?]
  return low <= high && low >= 100 && high <= 599 ? { low, high } : undefined
}

/** What the schema cannot say about one upstream. Paths are relative JSON pointers ("/endpoints/0/url"). */
export function upstreamProblems(config: UpstreamConfig): UpstreamProblem[] {
  const problems: UpstreamProblem[] = []
  const sources = (['url', 'endpoints', 'dns'] as const).filter((source) => config[source] !== undefined)
  if (sources.length !== 1) {
    problems.push({ path: '', message: `expected exactly one of url, endpoints or dns, got ${sources.length === 0 ? 'none' : sources.join(' and ')}` })
  }
  if (config.url !== undefined) {
    const problem = originProblem(config.url)
    if (problem !== undefined) problems.push({ path: '/url', message: problem })
  }
  const seen = new Map<string, number>()
  config.endpoints?.forEach((endpoint, index) => {
    const problem = originProblem(endpoint.url)
    if (problem !== undefined) return void problems.push({ path: `/endpoints/${index}/url`, message: problem })
    const origin = new URL(endpoint.url).origin
    const first = seen.get(origin)
    if (first !== undefined) problems.push({ path: `/endpoints/${index}/url`, message: `duplicate endpoint ${origin} (first listed as endpoints[${first}])` })
    else seen.set(origin, index)
  })
  if (config.dns !== undefined && toMs(config.dns.ttl ?? '30s') < MIN_INTERVAL_MS) problems.push({ path: '/dns/ttl', message: `must be at least ${MIN_INTERVAL_MS}ms` })
  const check = config.healthCheck
  if (check !== undefined) {
    if (toMs(check.interval ?? '5s') < MIN_INTERVAL_MS) problems.push({ path: '/healthCheck/interval', message: `must be at least ${MIN_INTERVAL_MS}ms` })
    if (statusRange(check.expectStatus) === undefined) problems.push({ path: '/healthCheck/expectStatus', message: `expected a range low-high within 100-599, got "${check.expectStatus}"` })
  }
  const outlier = config.outlierDetection
  if (outlier !== undefined && toMs(outlier.baseEjectionTime ?? '30s') > toMs(outlier.maxEjectionTime ?? '300s')) {
    problems.push({ path: '/outlierDetection/baseEjectionTime', message: 'must not be longer than maxEjectionTime' })
  }
  return problems
}
