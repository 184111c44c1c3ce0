// Authentication at the gateway (`policies.auth`): the request's credential (a JWT, an API key, an
// opaque token to introspect, or a verified client certificate) becomes `exchange.identity` for the
// layers inside and identity headers for the upstream; a missing or wrong one gets a 401 with an
// RFC 6750 challenge, and a line in the security log (never the credential itself).
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { localResponse, withoutRequestHeaders, type Exchange, type ProxyRequest, type ProxyResponse, type Upstream } from '../../core/exchange.js'
import { ANONYMOUS, type Identity, type IdentityKind } from '../../core/identity.js'
import { toMs } from '../../core/units.js'
import type { Defaulted } from '../../core/schema-defaults.js'
import { originatingClient } from '../../proxy/headers.js'
import { definePolicy, type Deps } from '../policy.js'
import { ApiKeyStore } from './api-keys.js'
import { findCredential, headerValue, looksLikeJwt, withoutCredential, type Found, type Source } from './credentials.js'
import { Introspector, type Introspected } from './introspection.js'
import { FileJwks, RemoteJwks, StaticKey, type KeySource } from './jwks.js'
import { JwtVerifier } from './jwt.js'
import { AuthConfig, authProblems, JwtConfig, IntrospectionConfig, type ApiKeysConfig, type Secret } from './schema.js'

export { AuthConfig }

type ResolvedAuth = Defaulted<AuthConfig, 'mtls' | 'optional' | 'realm' | 'identityHeaders'>
type ResolvedJwt = Defaulted<JwtConfig, 'algorithms' | 'clockSkew' | 'requireExpiry' | 'cacheEntries' | 'from' | 'rolesClaim' | 'scopesClaim' | 'forwardToken' | 'refresh'>
type ResolvedIntrospection = Defaulted<IntrospectionConfig, 'clientAuth' | 'from' | 'rolesClaim' | 'scopesClaim' | 'forwardToken' | 'cacheMax' | 'negativeCache' | 'cacheEntries' | 'timeout' | 'whenUnavailable'>

/** What one authentication method decided about a credential. */
type Outcome =
  | { readonly ok: true; readonly identity: Identity; readonly claimHeaders: Readonly<Record<string, string>> | undefined }
  /** `reason`: for the security log; `description`: for the client. */
  | { readonly ok: false; readonly status: 401 | 503; readonly reason: string; readonly description: string }
  /** The server behind the method is down and the config says to go on without an identity. */
  | { readonly ok: 'anonymous'; readonly reason: string }

interface Method {
  readonly name: 'jwt' | 'apiKey' | 'introspection'
  readonly sources: readonly Source[]
  /** Whether a found token is this method's (a JWT-shaped bearer token is not introspection's when JWTs are accepted too). */
  accepts(token: string): boolean
  authenticate(token: string, exchange: Exchange): Promise<Outcome>
  /** Whether the credential goes on to the upstream. */
  readonly forward: boolean
}

/** A secret's value, read when the plan is built (a file is a mounted Secret; its change takes a reload). */
export function readSecret(secret: Secret, what: string, path: (file: string) => string): string {
  if (typeof secret === 'string') return secret
  if ('env' in secret) {
    const value = process.env[secret.env]
    if (value === undefined || value === '') throw new Error(`${what}: environment variable ${secret.env} is not set`)
    return value
  }
  try {
    const value = readFileSync(path(secret.file), 'utf8').trim()
    if (value === '') throw new Error('the file is empty')
    return value
  } catch (error) {
    throw new Error(`${what}: cannot read ${secret.file}: ${(error as Error).message}`)
  }
}

/** A claim's roles or scopes: a list, or a space- or comma-separated string. */
function listClaim(value: unknown): readonly string[] {
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === 'string')
  if (typeof value === 'string') return value.split(/[\s,]+/).filter((item) => item !== '')
  return []
}

function claimHeadersOf(mapping: Readonly<Record<string, string>> | undefined, claims: Readonly<Record<string, unknown>>): Record<string, string> | undefined {
  if (mapping === undefined) return undefined
  const headers: Record<string, string> = {}
  for (const [claim, header] of Object.entries(mapping)) {
    const value = headerValue(claims[claim])
    if (value !== undefined) headers[header.toLowerCase()] = value
  }
  return headers
}

function tokenIdentity(kind: IdentityKind, claims: Readonly<Record<string, unknown>>, rolesClaim: string, scopesClaim: string, exchange: Exchange, subject: unknown): Identity {
  const scopes = listClaim(claims[scopesClaim])
  return {
    kind,
    subject: typeof subject === 'string' ? subject : '',
    issuer: typeof claims.iss === 'string' ? claims.iss : '',
    roles: listClaim(claims[rolesClaim]),
    // `scp` (a list) is what some issuers use instead of `scope`.
    scopes: scopes.length > 0 || scopesClaim !== 'scope' ? scopes : listClaim(claims.scp),
    claims,
    certificate: exchange.identity.certificate,
  }
}

function keySource(jwt: ResolvedJwt, deps: Deps): KeySource {
  if (jwt.jwks !== undefined) {
    const url = jwt.jwks
    const refresh = jwt.refresh as Required<NonNullable<JwtConfig['refresh']>>
    return deps.keep(
      'auth-jwks',
      { url, refresh },
      () =>
        new RemoteJwks({
          url,
          minAgeMs: toMs(refresh.minAge),
          maxAgeMs: toMs(refresh.maxAge),
          unknownKidIntervalMs: toMs(refresh.unknownKidInterval),
          timeoutMs: toMs(refresh.timeout),
          clock: deps.clock,
          log: deps.log,
        }),
      (source) => source.dispose(),
    )
  }
  if (jwt.jwksFile !== undefined) {
    const file = deps.path(jwt.jwksFile)
    return deps.keep('auth-jwks-file', file, () => new FileJwks(file, deps.log), (source) => source.dispose())
  }
  if (jwt.publicKey !== undefined) {
    const pem = typeof jwt.publicKey === 'string' ? jwt.publicKey : readSecret(jwt.publicKey, 'auth.jwt.publicKey', deps.path)
    return StaticKey.publicKey(pem)
  }
  // validate() made sure there is exactly one source.
  return StaticKey.secret(readSecret(jwt.secret!, 'auth.jwt.secret', deps.path))
}

function jwtMethod(jwt: ResolvedJwt, deps: Deps, alsoIntrospection: boolean): Method {
  const keys = keySource(jwt, deps)
  deps.awaitBeforeReady(keys.what, keys.ready)
  const verifier = new JwtVerifier(
    keys,
    {
      algorithms: jwt.algorithms,
      issuer: jwt.issuer,
      audience: jwt.audience,
      clockSkewSeconds: toMs(jwt.clockSkew) / 1000,
      maxAgeSeconds: jwt.maxAge === undefined ? undefined : toMs(jwt.maxAge) / 1000,
      requireExpiry: jwt.requireExpiry,
      requiredClaims: jwt.requiredClaims ?? [],
      cacheEntries: jwt.cacheEntries,
    },
    deps.clock,
  )
  return {
    name: 'jwt',
    sources: jwt.from,
    forward: jwt.forwardToken,
    // With introspection beside it, a JWT-shaped token is ours and any other is introspection's.
    accepts: (token) => !alsoIntrospection || looksLikeJwt(token),
    authenticate: async (token, exchange) => {
      const verified = await verifier.verify(token)
      if (!verified.ok) return { ok: false, status: verified.unavailable ? 503 : 401, reason: verified.reason, description: verified.description }
      const claims = verified.claims as Record<string, unknown>
      return { ok: true, identity: tokenIdentity('jwt', claims, jwt.rolesClaim, jwt.scopesClaim, exchange, claims.sub), claimHeaders: claimHeadersOf(jwt.claimHeaders, claims) }
    },
  }
}

function apiKeyMethod(config: Required<ApiKeysConfig>, deps: Deps): Method {
  const file = deps.path(config.file)
  const store = deps.keep('auth-api-keys', file, () => new ApiKeyStore(file, deps.log), (keys) => keys.dispose())
  deps.awaitBeforeReady(`API keys ${config.file}`, store.ready)
  return {
    name: 'apiKey',
    sources: config.from,
    forward: false,
    accepts: () => true,
    authenticate: async (presented, exchange) => {
      const key = await store.find(presented)
      if (key === 'unavailable') return { ok: false, status: 503, reason: 'keys-unavailable', description: 'the API keys are not available' }
      if (key === undefined) return { ok: false, status: 401, reason: 'invalid-api-key', description: 'the API key is not valid' }
      const identity: Identity = {
        kind: 'apiKey',
        subject: key.name,
        issuer: '',
        roles: key.roles,
        scopes: [],
        claims: {},
        certificate: exchange.identity.certificate,
        rateLimitKey: key.rateLimitKey,
      }
      return { ok: true, identity, claimHeaders: undefined }
    },
  }
}

function introspectionMethod(config: ResolvedIntrospection, deps: Deps): Method {
  const secret = readSecret(config.clientSecret, 'auth.introspection.clientSecret', deps.path)
  const settings = { url: config.url, issuer: config.issuer, clientId: config.clientId, clientAuth: config.clientAuth, cacheMax: config.cacheMax, negativeCache: config.negativeCache, cacheEntries: config.cacheEntries, timeout: config.timeout }
  // Kept across reloads while unchanged (its cache too); the secret's hash, not the secret, is part of the identity.
  const introspector = deps.keep(
    'auth-introspection',
    { ...settings, secret: hashOf(secret) },
    () =>
      new Introspector({
        url: config.url,
        issuer: config.issuer,
        clientId: config.clientId,
        clientSecret: secret,
        clientAuth: config.clientAuth,
        cacheMaxMs: toMs(config.cacheMax),
        negativeCacheMs: toMs(config.negativeCache),
        cacheEntries: config.cacheEntries,
        timeoutMs: toMs(config.timeout),
        clock: deps.clock,
        log: deps.log,
      }),
  )
  return {
    name: 'introspection',
    sources: config.from,
    forward: config.forwardToken,
    accepts: () => true,
    authenticate: async (token, exchange) => {
      const answer: Introspected = await introspector.lookup(token)
      if (answer.kind === 'active') {
        const claims = answer.response as Record<string, unknown>
        const subject = claims.sub ?? claims.username ?? claims.client_id
        return { ok: true, identity: tokenIdentity('introspection', claims, config.rolesClaim, config.scopesClaim, exchange, subject), claimHeaders: claimHeadersOf(config.claimHeaders, claims) }
      }
      if (answer.kind === 'inactive') return { ok: false, status: 401, reason: 'inactive-token', description: 'the token is not active' }
      if (config.whenUnavailable === 'anonymous') return { ok: 'anonymous', reason: 'introspection-unavailable' }
      if (config.whenUnavailable === 'deny') return { ok: false, status: 401, reason: 'introspection-unavailable', description: 'the token could not be checked' }
      return { ok: false, status: 503, reason: 'introspection-unavailable', description: 'the token could not be checked' }
    },
  }
}

function hashOf(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** Anonymous, but still holding the connection's client certificate (authz may read its SAN). */
function anonymousWith(certificate: Identity['certificate']): Identity {
  return certificate === undefined ? ANONYMOUS : { ...ANONYMOUS, certificate }
}

function identityHeaderNames(config: ResolvedAuth): string[] {
  const names = Object.values(config.identityHeaders).filter((name): name is string => typeof name === 'string')
  for (const method of [config.jwt, config.introspection]) for (const header of Object.values(method?.claimHeaders ?? {})) names.push(header)
  return names.map((name) => name.toLowerCase())
}

/** The request as it goes upstream: identity headers set from what was proved (never from the client). */
function withIdentityHeaders(request: ProxyRequest, identity: Identity, names: ResolvedAuth['identityHeaders'], claimHeaders: Readonly<Record<string, string>> | undefined): ProxyRequest {
  const headers = request.headers.slice()
  const add = (name: string | undefined, value: string | undefined): void => {
    if (name !== undefined && value !== undefined && value !== '') headers.push(name, value)
  }
  add(names.kind, identity.kind)
  add(names.subject, headerValue(identity.subject))
  add(names.issuer, headerValue(identity.issuer))
  add(names.roles, identity.roles.length === 0 ? undefined : headerValue(identity.roles))
  add(names.scopes, identity.scopes.length === 0 ? undefined : headerValue(identity.scopes))
  for (const [name, value] of Object.entries(claimHeaders ?? {})) add(name, value)
  return { ...request, headers }
}

export const auth = definePolicy({
  name: 'auth',
  schema: AuthConfig,
  localReasons: () => ['unauthenticated', 'auth-unavailable', 'invalid-request'],
  validate: (config) => authProblems(config),
  ownedRequestHeaders: (config) => identityHeaderNames(config as ResolvedAuth),
  build(section, deps) {
    const config = section as ResolvedAuth
    const methods: Method[] = []
    if (config.jwt !== undefined) methods.push(jwtMethod(config.jwt as ResolvedJwt, deps, config.introspection !== undefined))
    if (config.apiKeys !== undefined) methods.push(apiKeyMethod(config.apiKeys as Required<ApiKeysConfig>, deps))
    if (config.introspection !== undefined) methods.push(introspectionMethod(config.introspection as ResolvedIntrospection, deps))
    const owned = new Set(identityHeaderNames(config))
    const names = config.identityHeaders
    const route = deps.route.name
    const trustedProxies = deps.trustedProxies
    const bearer = config.jwt !== undefined || config.introspection !== undefined
    const challenge = (error?: { code: string; description: string }): string => {
      const scheme = bearer ? 'Bearer' : 'ApiKey'
      const base = `${scheme} realm="${config.realm}"`
      return error === undefined ? base : `${base}, error="${error.code}", error_description="${error.description.replace(/["\\]/g, '')}"`
    }

    const refuse = (exchange: Exchange, status: 400 | 401 | 503, reason: string, method: string, description: string | undefined): ProxyResponse => {
      deps.security.record({
        event: 'authentication-failure',
        reason,
        method,
        requestId: exchange.request.requestId,
        route,
        remote: originatingClient(exchange.request.incoming, trustedProxies),
      })
      if (status === 503) return localResponse(503, 'auth-unavailable', exchange, { 'retry-after': '5' })
      if (status === 400) return localResponse(400, 'invalid-request', exchange, { 'www-authenticate': challenge({ code: 'invalid_request', description: description ?? 'invalid request' }) })
      // RFC 6750 §3.1: no error code when the request carried no credential at all.
      return localResponse(401, 'unauthenticated', exchange, { 'www-authenticate': challenge(description === undefined ? undefined : { code: 'invalid_token', description }) })
    }

    const proceed = (next: Upstream, exchange: Exchange, request: ProxyRequest, identity: Identity, claimHeaders?: Readonly<Record<string, string>>): Promise<ProxyResponse> =>
      next({ ...exchange, request: identity.kind === 'anonymous' ? request : withIdentityHeaders(request, identity, names, claimHeaders), identity })

    return (next: Upstream) => (exchange: Exchange) => {
      // Whatever the client sent under an identity header's name never reaches the upstream.
      const request = withoutRequestHeaders(exchange.request, owned)
      for (const method of methods) {
        const found: Found | undefined = findCredential(request, method.sources)
        if (found === undefined) continue
        if (found.kind === 'duplicate') return Promise.resolve(refuse(exchange, 400, 'duplicate-credentials', method.name, 'the credential was sent more than once'))
        if (found.kind === 'malformed') return Promise.resolve(refuse(exchange, 401, 'malformed-credentials', method.name, 'the credential is malformed'))
        if (!method.accepts(found.value)) continue
        const forwarded = method.forward ? request : withoutCredential(request, found.source)
        return method.authenticate(found.value, exchange).then((outcome) => {
          if (outcome.ok === true) return proceed(next, exchange, forwarded, outcome.identity, outcome.claimHeaders)
          if (outcome.ok === 'anonymous') {
            exchange.log.debug({ route, method: method.name, reason: outcome.reason }, 'auth: server unavailable, request goes on as anonymous (whenUnavailable: anonymous)')
            return proceed(next, exchange, forwarded, anonymousWith(exchange.identity.certificate))
          }
          return refuse(exchange, outcome.status, outcome.reason, method.name, outcome.description)
        })
      }
      const certificate = exchange.identity.certificate
      if (config.mtls && exchange.identity.kind === 'mtls' && certificate !== undefined) return proceed(next, exchange, request, exchange.identity)
      if (config.optional) return proceed(next, exchange, request, anonymousWith(certificate))
      return Promise.resolve(refuse(exchange, 401, 'missing-credentials', 'none', undefined))
    }
  },
})
