// An upstream's YAML section: where its endpoints come from (one `url`, a static `endpoints` list or
// a `dns` name), how traffic is spread over them, and how broken ones are found (active health
// checks, passive outlier ejection). The schema is the one source; what it cannot say (exactly one
// endpoint source, origins without a path, ranges) is checked by `upstreamProblems`.
import { Type, type Static } from '@sinclair/typebox'
import { duration, toMs } from '../../core/units.js'
import { withDefaults, type Defaulted } from '../../core/schema-defaults.js'

const Origin = Type.String({ description: 'An origin, e.g. "http://127.0.0.1:3000" (no path).', examples: ['http://127.0.0.1:3000'] })

export const EndpointConfig = Type.Object(
  {
    url: Origin,
    priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, default: 0, description: 'Priority group: 0 is the highest; higher numbers are fail-over groups.' })),
    weight: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 1, description: 'Relative share of traffic within its group.' })),
  },
  { additionalProperties: false },
)
export type EndpointConfig = Static<typeof EndpointConfig>

export const DnsConfig = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'Host name to resolve (every address it resolves to is an endpoint).' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    scheme: Type.Optional(Type.Union([Type.Literal('http'), Type.Literal('https')], { errorMessage: 'expected http or https', default: 'http', description: 'The scheme of the resolved endpoints.' })),
    ttl: Type.Optional(duration({ default: '30s', description: 'How often the name is resolved again (at least 50ms).' })),
    family: Type.Optional(Type.Union([Type.Literal(4), Type.Literal(6)], { errorMessage: 'expected 4 or 6', description: 'Keep only IPv4 (4) or IPv6 (6) addresses. Default: both.' })),
  },
  { additionalProperties: false, description: 'Endpoints from DNS: re-resolved every `ttl`; a failed resolve keeps the last good set.' },
)
export type DnsConfig = Static<typeof DnsConfig>

const StatusRange = Type.Union([Type.Integer({ minimum: 100, maximum: 599 }), Type.String({ pattern: '^\\d{3}(-\\d{3})?$' })], {
  errorMessage: 'expected a status (200) or a range ("200-399")',
  default: '200-399',
  description: 'A pass is a status in this range (or this one status).',
})

export const HealthCheckConfig = Type.Object(
  {
    path: Type.String({ pattern: '^/', errorMessage: 'expected a path starting with "/"', description: 'GET this path on each endpoint.' }),
    interval: Type.Optional(duration({ default: '5s', description: 'Time between checks of an endpoint (at least 50ms).' })),
    timeout: Type.Optional(duration({ default: '1s', description: 'Longest one check may take.' })),
    healthyThreshold: Type.Optional(Type.Integer({ minimum: 1, default: 2, description: 'Passes in a row that make an unhealthy endpoint healthy.' })),
    unhealthyThreshold: Type.Optional(Type.Integer({ minimum: 1, default: 3, description: 'Failures in a row that make a healthy endpoint unhealthy.' })),
    expectStatus: Type.Optional(StatusRange),
  },
  {
    additionalProperties: false,
    description: 'Active health check every `interval`, each bounded by `timeout`; a pass is a status in `expectStatus`.',
  },
)
export type HealthCheckConfig = Static<typeof HealthCheckConfig>

export const OutlierDetectionConfig = Type.Object(
  {
    consecutive5xx: Type.Optional(Type.Integer({ minimum: 1, default: 5, description: '5xx answers (or connect/reset failures) in a row that eject an endpoint.' })),
    consecutiveGatewayErrors: Type.Optional(Type.Integer({ minimum: 1, default: 5, description: '502/503/504 answers or connect/reset failures in a row that eject an endpoint.' })),
    baseEjectionTime: Type.Optional(duration({ default: '30s', description: 'An ejection lasts this × the times the endpoint has been ejected.' })),
    maxEjectionTime: Type.Optional(duration({ default: '300s', description: 'The longest an ejection lasts.' })),
    maxEjectionPercent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'Never eject beyond this share of the endpoints.' })),
  },
  {
    additionalProperties: false,
    description: 'Passive ejection: an endpoint is left out for `baseEjectionTime` × the times it has been ejected, at most `maxEjectionTime`.',
  },
)
export type OutlierDetectionConfig = Static<typeof OutlierDetectionConfig>

/** A PEM file's path (a relative one from the policy file's folder, as for the listener's files). */
const PemFile = (description: string) => Type.String({ minLength: 1, description: `${description} A relative path is read from the policy file's folder.` })

export const UpstreamTlsConfig = Type.Object(
  {
    ca: Type.Optional(PemFile('PEM file of the CA certificates that may sign the upstream\'s certificate, in place of the system\'s. Watched: a change applies to new connections.')),
    serverName: Type.Optional(Type.String({
      minLength: 1,
      pattern: '^[^\\s/:]+$',
      errorMessage: 'expected a host name',
      description: 'The name sent in SNI and checked against the upstream\'s certificate. Default: the endpoint\'s host name (`dns.name` for DNS endpoints); for an IP address, none is sent and the certificate must name the IP.',
    })),
    clientCert: Type.Optional(PemFile('PEM file of the client certificate (leaf first, then its intermediates) presented when the upstream asks for one (mTLS). Needs `clientKey`. Watched: a good new pair applies to new connections; a broken one is refused and logged.')),
    clientKey: Type.Optional(PemFile('PEM file of the private key of `clientCert` (unencrypted).')),
    minVersion: Type.Optional(Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], { errorMessage: 'expected TLSv1.2 or TLSv1.3', default: 'TLSv1.2', description: 'The oldest TLS version offered to the upstream.' })),
    verify: Type.Optional(Type.Boolean({ default: true, description: 'Verify the upstream\'s certificate (chain and name). `false` accepts any certificate, so anyone on the path can read the traffic: for tests only, and logged as a warning when the upstream is loaded.' })),
  },
  {
    additionalProperties: false,
    description: 'TLS to the upstream\'s https:// endpoints: verified against the system\'s CAs (or `ca`) by default; with a client certificate for mTLS. Set only for an upstream whose endpoints are all https.',
  },
)
export type UpstreamTlsConfig = Static<typeof UpstreamTlsConfig>

export const UpstreamConfig = Type.Object(
  {
    url: Type.Optional(Origin),
    endpoints: Type.Optional(Type.Array(EndpointConfig, { minItems: 1, description: 'Several endpoints, in priority groups.' })),
    dns: Type.Optional(DnsConfig),
    balancer: Type.Optional(Type.Union([Type.Literal('least-request'), Type.Literal('round-robin')], {
      errorMessage: 'expected least-request or round-robin',
      default: 'least-request',
      description: 'How an endpoint is picked within a group; least-request takes the less busy of two random endpoints.',
    })),
    minHealthyPercent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, default: 50, description: 'A priority group takes traffic while at least this share of its endpoints is available.' })),
    healthCheck: Type.Optional(HealthCheckConfig),
    outlierDetection: Type.Optional(OutlierDetectionConfig),
    connections: Type.Optional(Type.Integer({ minimum: 1, default: 128, description: 'Most sockets open to each endpoint.' })),
    idleTimeout: Type.Optional(duration({ default: '4s', description: 'An idle keep-alive socket is closed after this: keep it below the app\'s keep-alive timeout (Node\'s default is 5s).' })),
    connectTimeout: Type.Optional(duration({ default: '5s', description: 'Longest a connection to an endpoint may take.' })),
    bodyIdleTimeout: Type.Optional(duration({ default: '5m', description: 'The longest silence allowed while a response body streams.' })),
    tls: Type.Optional(UpstreamTlsConfig),
  },
  { additionalProperties: false, description: 'An upstream: exactly one of `url`, `endpoints` or `dns`.' },
)
export type UpstreamConfig = Static<typeof UpstreamConfig>

export type ResolvedDnsConfig = Defaulted<DnsConfig, 'scheme' | 'ttl'>
export type ResolvedHealthCheckConfig = Defaulted<HealthCheckConfig, 'interval' | 'timeout' | 'healthyThreshold' | 'unhealthyThreshold' | 'expectStatus'>
export type ResolvedUpstreamTlsConfig = Defaulted<UpstreamTlsConfig, 'minVersion' | 'verify'>
export type ResolvedOutlierDetectionConfig = Defaulted<OutlierDetectionConfig, 'consecutive5xx' | 'consecutiveGatewayErrors' | 'baseEjectionTime' | 'maxEjectionTime' | 'maxEjectionPercent'>

/** An upstream section with its schema defaults filled in: what the proxy reads. */
export type ResolvedUpstreamConfig = Omit<Defaulted<UpstreamConfig, 'balancer' | 'minHealthyPercent' | 'connections' | 'idleTimeout' | 'connectTimeout' | 'bodyIdleTimeout'>, 'endpoints' | 'dns' | 'healthCheck' | 'outlierDetection' | 'tls'> & {
  readonly endpoints?: Array<Defaulted<EndpointConfig, 'priority' | 'weight'>>
  readonly dns?: ResolvedDnsConfig
  readonly healthCheck?: ResolvedHealthCheckConfig
  readonly outlierDetection?: ResolvedOutlierDetectionConfig
  readonly tls?: ResolvedUpstreamTlsConfig
}

export function resolveUpstream(config: UpstreamConfig): ResolvedUpstreamConfig {
  return withDefaults(UpstreamConfig, config) as ResolvedUpstreamConfig
}

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
export function statusRange(value: number | string): { low: number; high: number } | undefined {
  if (typeof value === 'number') return { low: value, high: value }
  const [low, high = low] = value.split('-').map(Number) as [number, number?]
  return low <= high && low >= 100 && high <= 599 ? { low, high } : undefined
}

/** What the schema cannot say about one upstream. Paths are relative JSON pointers ("/endpoints/0/url"). */
export function upstreamProblems(section: UpstreamConfig): UpstreamProblem[] {
  const config = resolveUpstream(section)
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
  if (config.dns !== undefined && toMs(config.dns.ttl) < MIN_INTERVAL_MS) problems.push({ path: '/dns/ttl', message: `must be at least ${MIN_INTERVAL_MS}ms` })
  const check = config.healthCheck
  if (check !== undefined) {
    if (toMs(check.interval) < MIN_INTERVAL_MS) problems.push({ path: '/healthCheck/interval', message: `must be at least ${MIN_INTERVAL_MS}ms` })
    if (statusRange(check.expectStatus) === undefined) problems.push({ path: '/healthCheck/expectStatus', message: `expected a range low-high within 100-599, got "${check.expectStatus}"` })
  }
  const outlier = config.outlierDetection
  if (outlier !== undefined && toMs(outlier.baseEjectionTime) > toMs(outlier.maxEjectionTime)) {
    problems.push({ path: '/outlierDetection/baseEjectionTime', message: 'must not be longer than maxEjectionTime' })
  }
  if (config.tls !== undefined) problems.push(...tlsProblems(config))
  return problems
}

/**
 * The `tls` section: for https endpoints only (so no endpoint is reached in plain text by mistake),
 * and a key with its certificate. The files are not read here: `waypost validate` may check a policy
 * where its certificates are not (CI, a clean clone); the gateway reads them when it builds the
 * upstream, and refuses to start or reload with one it cannot use.
 */
function tlsProblems(config: ResolvedUpstreamConfig): UpstreamProblem[] {
  const tls = config.tls!
  const plain =
    config.dns !== undefined
      ? config.dns.scheme === 'http' ? ['dns.scheme http'] : []
      : (config.endpoints?.map((endpoint) => endpoint.url) ?? (config.url === undefined ? [] : [config.url])).filter((url) => url.startsWith('http:'))
  if (plain.length > 0) return [{ path: '/tls', message: `tls applies to https:// endpoints only, and this upstream has ${plain.join(', ')}: use https:// (or drop tls)` }]
  if ((tls.clientCert === undefined) !== (tls.clientKey === undefined)) {
    return [{ path: tls.clientCert === undefined ? '/tls/clientKey' : '/tls/clientCert', message: 'clientCert and clientKey go together: set both or neither' }]
  }
  return []
}
