// `waypost report FILE`: a compliance report of a policy file, for a reviewer. Every route with its
// authentication, authorization default, TLS/mTLS requirement and rate limit, then the findings a
// reviewer wants first (routes reachable without authentication, weak HS256 secrets, upstream TLS
// verification off, the admin port off loopback...). Reads the file as the gateway would (defaults
// merged into routes); sections other issues own (listen.tls, upstream TLS, CORS) are read loosely,
// by name, so the report says what it can find rather than failing on what it does not know.
import { readFileSync } from 'node:fs'
import { isLoopback } from '../core/operator.js'
import type { GatewayConfig, RouteConfig } from './schema.js'
import { mergePolicies } from './compile.js'

export type Severity = 'high' | 'medium' | 'low'

export interface Finding {
  readonly severity: Severity
  /** The route it is about; undefined for the whole file. */
  readonly route: string | undefined
  readonly message: string
}

export interface RouteReport {
  readonly name: string
  readonly match: string
  readonly upstream: string
  readonly authentication: string
  /** `deny` / `allow` (with the rule count), or `none` without authz. */
  readonly authorization: string
  readonly tls: string
  readonly rateLimit: string
}

export interface Report {
  readonly file: string
  readonly hash: string
  readonly listener: { readonly address: string; readonly tls: string }
  readonly admin: { readonly address: string; readonly token: boolean }
  readonly routes: readonly RouteReport[]
  readonly findings: readonly Finding[]
}

type Loose = Record<string, unknown>

function isObject(value: unknown): value is Loose {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function hostOf(address: string): string {
  const bracketed = /^\[([^\]]+)\]:\d+$/.exec(address)
  if (bracketed !== null) return bracketed[1]!
  return address.slice(0, address.lastIndexOf(':'))
}

function onLoopback(address: string): boolean {
  const host = hostOf(address)
  return host === 'localhost' || isLoopback(host)
}

function matchOf(route: RouteConfig): string {
  const match = route.match
  const path = match?.path
  const parts = [path?.exact !== undefined ? `exact ${path.exact}` : path?.regex !== undefined ? `regex ${path.regex}` : `prefix ${path?.prefix ?? '/'}`]
  if (match?.host !== undefined) parts.unshift(match.host)
  if (match?.methods !== undefined) parts.push(`(${match.methods.join(', ')})`)
  return parts.join(' ')
}

/** The listener's TLS section as another issue defines it: whatever `listen.tls` says, read by name. */
function listenerTls(config: GatewayConfig): { tls: string; mtls: boolean } {
  const tls = (config.listen as Loose | undefined)?.tls
  if (tls === undefined || tls === false) return { tls: 'none (plain HTTP)', mtls: false }
  if (!isObject(tls)) return { tls: 'on', mtls: false }
  const clientKeys = ['clientAuth', 'clientCertificates', 'clientCertificate', 'mtls', 'requestCert', 'requireClientCertificate', 'clientCa', 'clientCA']
  const client = clientKeys.map((key) => [key, tls[key]] as const).find(([, value]) => value !== undefined && value !== false)
  if (client === undefined) return { tls: 'TLS', mtls: false }
  const [key, value] = client
  const optional = typeof value === 'string' && /optional|request/i.test(value)
  return { tls: `TLS + client certificates (${key}: ${typeof value === 'object' ? 'set' : String(value)})`, mtls: !optional }
}

function secretLength(secret: unknown): number | undefined {
  if (typeof secret === 'string') return Buffer.byteLength(secret)
  if (!isObject(secret)) return undefined
  if (typeof secret.env === 'string') {
    const value = process.env[secret.env]
    return value === undefined ? undefined : Buffer.byteLength(value)
  }
  if (typeof secret.file === 'string') {
    try {
      return Buffer.byteLength(readFileSync(secret.file, 'utf8').trim())
    } catch {
      return undefined
    }
  }
  return undefined
}

function plainRemoteHttp(url: string): boolean {
  try {
    const parsed = new URL(url)
    return parsed.protocol === 'http:' && !(parsed.hostname === 'localhost' || isLoopback(parsed.hostname.replace(/^\[|\]$/g, '')))
  } catch {
    return false
  }
}

function describeAuth(auth: Loose | undefined, name: string, findings: Finding[]): string {
  if (auth === undefined) return 'none'
  const methods: string[] = []
  const jwt = auth.jwt as Loose | undefined
  if (isObject(jwt)) {
    const algorithms = (jwt.algorithms as string[] | undefined) ?? ['RS256', 'ES256']
    const source = typeof jwt.jwks === 'string' ? `JWKS ${jwt.jwks}` : jwt.jwksFile !== undefined ? `JWKS file ${String(jwt.jwksFile)}` : jwt.publicKey !== undefined ? 'public key' : 'shared secret'
    const claims = [jwt.issuer !== undefined ? `iss ${JSON.stringify(jwt.issuer)}` : undefined, jwt.audience !== undefined ? `aud ${JSON.stringify(jwt.audience)}` : undefined].filter((part) => part !== undefined)
    methods.push(`JWT (${algorithms.join('/')}, ${source}${claims.length > 0 ? `, ${claims.join(', ')}` : ''})`)
    if (jwt.secret !== undefined) {
      const length = secretLength(jwt.secret)
      if (length !== undefined && length < 32) findings.push({ severity: 'high', route: name, message: `JWT ${algorithms.filter((alg) => alg.startsWith('HS')).join('/')} with a ${length}-byte secret: brute-forceable offline from any one token; use at least 32 random bytes (or asymmetric keys)` })
      if (length === undefined) findings.push({ severity: 'low', route: name, message: 'JWT shared secret not readable here (env or file): its strength was not checked' })
      if (typeof jwt.secret === 'string') findings.push({ severity: 'medium', route: name, message: 'the JWT secret is written in the policy file: use { file } (a mounted Secret) or { env }' })
    }
    if (jwt.issuer === undefined) findings.push({ severity: 'medium', route: name, message: 'JWT without `issuer`: tokens from any issuer whose key verifies are accepted' })
    if (jwt.audience === undefined) findings.push({ severity: 'medium', route: name, message: 'JWT without `audience`: a token minted for another service is accepted here' })
    if (jwt.requireExpiry === false) findings.push({ severity: 'medium', route: name, message: 'JWT `requireExpiry: false`: a token without exp never expires' })
    if (typeof jwt.jwks === 'string' && plainRemoteHttp(jwt.jwks)) findings.push({ severity: 'high', route: name, message: `the JWKS is fetched over plain HTTP from another host (${jwt.jwks}): whoever sits on the path can swap the keys` })
  }
  const apiKeys = auth.apiKeys as Loose | undefined
  if (isObject(apiKeys)) {
    const from = (apiKeys.from as Loose[] | undefined) ?? [{ header: 'x-api-key' }]
    methods.push(`API keys (${String(apiKeys.file)}; ${from.map((source) => (source.query !== undefined ? `query ${String(source.query)}` : `header ${String(source.header)}`)).join(', ')})`)
    if (from.some((source) => source.query !== undefined)) findings.push({ severity: 'low', route: name, message: 'API keys accepted in the query string: they end up in browser history and other proxies\' logs (the gateway strips and never logs them)' })
  }
  const introspection = auth.introspection as Loose | undefined
  if (isObject(introspection)) {
    methods.push(`introspection (${String(introspection.url)})`)
    if (introspection.whenUnavailable === 'anonymous') findings.push({ severity: 'medium', route: name, message: 'introspection fails open (whenUnavailable: anonymous): while the server is down, requests pass as anonymous' })
    if (typeof introspection.clientSecret === 'string') findings.push({ severity: 'medium', route: name, message: 'the introspection client secret is written in the policy file: use { file } or { env }' })
    if (typeof introspection.url === 'string' && plainRemoteHttp(introspection.url)) findings.push({ severity: 'high', route: name, message: `tokens are sent for introspection over plain HTTP to another host (${introspection.url})` })
  }
  if (auth.mtls === true) methods.push('client certificate')
  if (methods.length === 0) return 'none'
  return `${methods.join(' or ')}${auth.optional === true ? '; optional (anonymous passes)' : ''}`
}

/** Does any value in the section say TLS verification is off (`verify: false`, `rejectUnauthorized: false`...)? */
function verificationOff(section: unknown, path = ''): string | undefined {
  if (!isObject(section)) return undefined
  for (const [key, value] of Object.entries(section)) {
    const here = path === '' ? key : `${path}.${key}`
    if (value === false && /^(verify|rejectUnauthorized|verifyCertificate|checkServerIdentity)$/.test(key)) return here
    if (value === true && /^(insecure|insecureSkipVerify|skipVerify)$/.test(key)) return here
    const nested = verificationOff(value, here)
    if (nested !== undefined) return nested
  }
  return undefined
}

function wildcardCors(policies: Loose): boolean {
  const cors = policies.cors
  if (!isObject(cors)) return false
  return JSON.stringify(cors).includes('"*"')
}

export function buildReport(config: GatewayConfig, file: string, hash: string): Report {
  const findings: Finding[] = []
  const listenAddress = config.listen?.address ?? '127.0.0.1:8080'
  const listener = listenerTls(config)
  const adminAddress = config.admin?.address ?? '127.0.0.1:9901'
  const adminToken = config.admin?.token !== undefined
  if (!onLoopback(adminAddress)) {
    findings.push({
      severity: adminToken ? 'medium' : 'high',
      route: undefined,
      message: `the admin listener is on ${adminAddress}, not loopback: ${adminToken ? 'mutating endpoints need the admin token, but /config, /upstreams and /metrics are open to whoever reaches it' : 'without admin.token, only its reads are reachable, yet /config, /upstreams and /metrics show the topology to whoever reaches it'}`,
    })
  }
  if (listener.tls.startsWith('none') && !onLoopback(listenAddress)) {
    findings.push({ severity: 'low', route: undefined, message: `the proxy listener (${listenAddress}) is plain HTTP off loopback: credentials cross the network in clear unless a mesh or load balancer encrypts them` })
  }
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    const off = verificationOff(upstream)
    if (off !== undefined) findings.push({ severity: 'high', route: undefined, message: `upstream ${name}: TLS verification is off (${off}): anyone on the path can impersonate it` })
  }
  const routes = config.routes.map((route): RouteReport => {
    const policies = mergePolicies(config.defaults?.policies, route.policies) as Loose
    const auth = isObject(policies.auth) ? policies.auth : undefined
    const authz = isObject(policies.authz) ? policies.authz : undefined
    const rateLimit = isObject(policies.rateLimit) ? policies.rateLimit : undefined
    const authentication = describeAuth(auth, route.name, findings)
    const rules = (authz?.rules as unknown[] | undefined)?.length ?? 0
    const authorization = authz === undefined ? 'none' : `${authz.default === 'allow' ? 'allow' : 'deny'} by default, ${rules} rule${rules === 1 ? '' : 's'}`
    if (authentication === 'none' && !listener.mtls) {
      findings.push({ severity: authz !== undefined && authz.default !== 'allow' ? 'low' : 'medium', route: route.name, message: `reachable without authentication (${matchOf(route)})` })
    } else if (auth?.optional === true && (authz === undefined || authz.default === 'allow')) {
      findings.push({ severity: 'medium', route: route.name, message: 'authentication is optional and no authorization default denies: anonymous requests reach the app' })
    }
    if (authz !== undefined && authz.default === 'allow' && !(authz.rules as Loose[] | undefined)?.some((rule) => rule.deny !== undefined)) {
      findings.push({ severity: 'low', route: route.name, message: 'authorization allows by default and has no deny rule: it refuses nothing' })
    }
    if (wildcardCors(policies)) findings.push({ severity: 'medium', route: route.name, message: 'CORS allows any origin ("*")' })
    const rateLimitText = rateLimit === undefined ? 'none' : `${String(rateLimit.rate)}/s, burst ${String(rateLimit.burst ?? Math.ceil(Number(rateLimit.rate)))}, per ${typeof rateLimit.key === 'object' ? `header ${String((rateLimit.key as Loose).header)}` : String(rateLimit.key ?? 'ip')}${rateLimit.shadow === true ? ' (shadow)' : ''}${rateLimit.global === true ? ' (global)' : ''}`
    return { name: route.name, match: matchOf(route), upstream: route.upstream, authentication, authorization, tls: listener.tls, rateLimit: rateLimitText }
  })
  const order: Record<Severity, number> = { high: 0, medium: 1, low: 2 }
  findings.sort((a, b) => order[a.severity] - order[b.severity])
  return { file, hash, listener: { address: listenAddress, tls: listener.tls }, admin: { address: adminAddress, token: adminToken }, routes, findings }
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|')
}

export function reportMarkdown(report: Report): string {
  const lines = [`# Compliance report: ${report.file}`, '', `Policy hash \`${report.hash}\`. Proxy listener \`${report.listener.address}\` (${report.listener.tls}); admin \`${report.admin.address}\`${report.admin.token ? ' (admin token set)' : ''}.`, '']
  lines.push('## Findings', '')
  if (report.findings.length === 0) lines.push('None.')
  for (const finding of report.findings) lines.push(`- **${finding.severity}**${finding.route === undefined ? '' : ` (route \`${finding.route}\`)`}: ${finding.message}`)
  lines.push('', '## Routes', '', '| route | match | upstream | authentication | authorization | TLS / mTLS | rate limit |', '|---|---|---|---|---|---|---|')
  for (const route of report.routes) lines.push(`| \`${route.name}\` | \`${cell(route.match)}\` | ${route.upstream} | ${cell(route.authentication)} | ${route.authorization} | ${cell(route.tls)} | ${cell(route.rateLimit)} |`)
  return `${lines.join('\n')}\n`
}
