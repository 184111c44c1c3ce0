// The `auth` section: which credentials a route accepts (JWT, API keys, introspected opaque
// tokens, a verified client certificate), where each is read from, and the identity headers the
// upstream gets. Validation the schema cannot express is in `authProblems`.
import { Type, type Static } from '@sinclair/typebox'
import { duration } from '../../core/units.js'
import type { ConfigProblem } from '../policy.js'

const HeaderName = Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', errorMessage: 'expected an HTTP header name' })
const CookieName = Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', errorMessage: 'expected a cookie name' })

/** Where a token or key is read from. */
const TokenSource = Type.Union(
  [
    Type.Literal('bearer', { description: '`Authorization: Bearer TOKEN`.' }),
    Type.Object({ header: HeaderName }, { additionalProperties: false, description: 'A header holding the token itself.' }),
    Type.Object({ cookie: CookieName }, { additionalProperties: false, description: 'A cookie holding the token.' }),
  ],
  { errorMessage: 'expected "bearer", { header: NAME } or { cookie: NAME }' },
)
export type TokenSource = Static<typeof TokenSource>

const KeySource = Type.Union(
  [Type.Object({ header: HeaderName }, { additionalProperties: false }), Type.Object({ query: Type.String({ minLength: 1, pattern: '^[^&=#\\s]+$' }) }, { additionalProperties: false })],
  { errorMessage: 'expected { header: NAME } or { query: PARAMETER }' },
)

/** A secret: the value, a file holding it (a mounted Secret; a relative path is read from the policy file's folder) or an environment variable; read when the plan is built. */
export const Secret = Type.Union(
  [
    Type.String({ minLength: 1, description: 'The value itself.' }),
    Type.Object({ file: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
    Type.Object({ env: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }) }, { additionalProperties: false }),
  ],
  { errorMessage: 'expected a value, { file: PATH } or { env: NAME }' },
)
export type Secret = Static<typeof Secret>

/** `none` is not here, and never can be: an unsigned token is refused before any key is looked at. */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const
export const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const
const Algorithm = Type.Union(
  [...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS].map((alg) => Type.Literal(alg)),
  { errorMessage: `expected one of ${[...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS].join(', ')} ("none" is never accepted)` },
)

const OneOrMany = (description: string) => Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], { description, errorMessage: 'expected a string or a list of strings' })

const ClaimHeaders = Type.Record(Type.String({ minLength: 1 }), HeaderName, {
  description: 'Claims sent to the upstream as headers, `claim: header-name` (`email: x-auth-email`). Lists are joined with commas; the client can never send these headers itself.',
})

const Identity = {
  rolesClaim: Type.Optional(Type.String({ minLength: 1, default: 'roles', description: 'The claim holding the roles (a list, or a space- or comma-separated string).' })),
  scopesClaim: Type.Optional(Type.String({ minLength: 1, default: 'scope', description: 'The claim holding the scopes (`scope`: space-separated, or `scp`: a list).' })),
  claimHeaders: Type.Optional(ClaimHeaders),
  forwardToken: Type.Optional(Type.Boolean({ default: true, description: 'Send the token on to the upstream as it came; `false` removes it (the header, or the cookie).' })),
}

export const JwtConfig = Type.Object(
  {
    jwks: Type.Optional(Type.String({ pattern: '^https?://', errorMessage: 'expected an http:// or https:// URL', description: 'The issuer\'s JWKS URL; fetched before /ready turns true, cached per its Cache-Control, refreshed in the background.' })),
    jwksFile: Type.Optional(Type.String({ minLength: 1, description: 'A local JWKS file (JSON), watched: an edit or a Secret update applies without a restart. A relative path is read from the policy file\'s folder.' })),
    publicKey: Type.Optional(
      Type.Union([Type.String({ pattern: '^-----BEGIN ' }), Type.Object({ file: Type.String({ minLength: 1 }) }, { additionalProperties: false })], {
        errorMessage: 'expected a PEM text ("-----BEGIN PUBLIC KEY-----...") or { file: PATH }',
        description: 'One public key (PEM SPKI or an X.509 certificate), inline or `{ file: PATH }` (a relative path is read from the policy file\'s folder).',
      }),
    ),
    secret: Type.Optional(Secret),
    algorithms: Type.Optional(
      Type.Array(Algorithm, { minItems: 1, default: ['RS256', 'ES256'], description: 'The signature algorithms accepted. Never `none`; HS* only with `secret`, never with a public key.' }),
    ),
    issuer: Type.Optional(OneOrMany('The accepted `iss` value(s); the claim is then required.')),
    audience: Type.Optional(OneOrMany('The accepted `aud` value(s) (any one of the token\'s); the claim is then required.')),
    clockSkew: Type.Optional(duration({ default: '30s', description: 'Tolerance on `exp`, `nbf` and `iat` for clocks that disagree.' })),
    maxAge: Type.Optional(duration({ description: 'Refuse tokens issued (`iat`) longer ago than this.' })),
    requireExpiry: Type.Optional(Type.Boolean({ default: true, description: 'Refuse tokens without `exp` (they would never expire).' })),
    requiredClaims: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'Claims every token must carry (`sub`, `email`...).' })),
    cacheEntries: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100_000,
        default: 1000,
        description:
          'Tokens whose signature and claims verified are remembered (least recently used, this many; 0: none) until their `exp` (or `iat` + `maxAge`) passes or the key set changes, so a client that sends the same token again costs a lookup, not a signature check. Failures are never remembered.',
      }),
    ),
    from: Type.Optional(Type.Array(TokenSource, { minItems: 1, default: ['bearer'], description: 'Where the token is read from, in order: `bearer`, `{ header: NAME }`, `{ cookie: NAME }`.' })),
    ...Identity,
    refresh: Type.Optional(
      Type.Object(
        {
          minAge: Type.Optional(duration({ default: '30s', description: 'Shortest time keys are kept before a refresh, whatever the Cache-Control says.' })),
          maxAge: Type.Optional(duration({ default: '1h', description: 'Longest time keys are kept before a refresh (also when no Cache-Control max-age is sent).' })),
          unknownKidInterval: Type.Optional(
            duration({ default: '30s', description: 'A token signed with a key id not in the set refetches the JWKS at most once per this interval (key rotation without a restart).' }),
          ),
          timeout: Type.Optional(duration({ default: '5s', description: 'Longest a JWKS fetch may take.' })),
        },
        { additionalProperties: false, default: {}, description: 'How the `jwks` URL is refreshed. A failed refresh keeps the last good keys.' },
      ),
    ),
  },
  { additionalProperties: false, description: 'Signed JWTs (jose): one key source of `jwks`, `jwksFile`, `publicKey` or `secret`.' },
)
export type JwtConfig = Static<typeof JwtConfig>

export const ApiKeysConfig = Type.Object(
  {
    file: Type.String({
      minLength: 1,
      description: 'A YAML or JSON file of keys, `keys: [{ name, sha256, roles, rateLimitKey }]`, each stored as the SHA-256 hex of the key (a mounted Kubernetes Secret works: it is watched). A relative path is read from the policy file\'s folder.',
    }),
    from: Type.Optional(Type.Array(KeySource, { minItems: 1, default: [{ header: 'x-api-key' }], description: 'Where the key is read from: `{ header: NAME }` or `{ query: PARAMETER }` (removed from the URL before forwarding).' })),
  },
  { additionalProperties: false, description: 'API keys, compared as SHA-256 hashes in constant time; the key is never forwarded.' },
)
export type ApiKeysConfig = Static<typeof ApiKeysConfig>

export const IntrospectionConfig = Type.Object(
  {
    url: Type.String({ pattern: '^https?://', errorMessage: 'expected an http:// or https:// URL', description: 'The RFC 7662 introspection endpoint.' }),
    issuer: Type.Optional(Type.String({ minLength: 1, description: 'The authorization server\'s issuer identifier. Default: the endpoint\'s origin.' })),
    clientId: Type.String({ minLength: 1, description: 'The gateway\'s client id at the authorization server.' }),
    clientSecret: Secret,
    clientAuth: Type.Optional(
      Type.Union([Type.Literal('basic'), Type.Literal('post')], { default: 'basic', errorMessage: 'expected basic or post', description: '`basic` (client_secret_basic) or `post` (client_secret_post).' }),
    ),
    from: Type.Optional(Type.Array(TokenSource, { minItems: 1, default: ['bearer'], description: 'Where the token is read from.' })),
    ...Identity,
    cacheMax: Type.Optional(duration({ default: '5m', description: 'Longest an active answer is reused (never past the token\'s `exp`).' })),
    negativeCache: Type.Optional(duration({ default: '10s', description: 'How long an inactive answer is reused.' })),
    cacheEntries: Type.Optional(Type.Integer({ minimum: 1, default: 10_000, description: 'Most answers kept (least recently used dropped).' })),
    timeout: Type.Optional(duration({ default: '2s', description: 'Longest an introspection request may take.' })),
    whenUnavailable: Type.Optional(
      Type.Union([Type.Literal('unavailable'), Type.Literal('deny'), Type.Literal('anonymous')], {
        default: 'unavailable',
        errorMessage: 'expected unavailable, deny or anonymous',
        description: 'When the server cannot answer: `unavailable` (503 auth-unavailable), `deny` (401, fail closed) or `anonymous` (let the request on without an identity: fail open, authz decides).',
      }),
    ),
  },
  { additionalProperties: false, description: 'OAuth 2.0 token introspection (RFC 7662, oauth4webapi) for opaque tokens; answers cached and concurrent lookups coalesced.' },
)
export type IntrospectionConfig = Static<typeof IntrospectionConfig>

const IdentityHeaders = Type.Object(
  {
    kind: Type.Optional(HeaderName),
    subject: Type.Optional(HeaderName),
    issuer: Type.Optional(HeaderName),
    roles: Type.Optional(HeaderName),
    scopes: Type.Optional(HeaderName),
  },
  {
    additionalProperties: false,
    default: { kind: 'x-auth-kind', subject: 'x-auth-subject', issuer: 'x-auth-issuer', roles: 'x-auth-roles', scopes: 'x-auth-scopes' },
    description:
      'The headers that tell the upstream who called (`x-auth-kind`, `x-auth-subject`, `x-auth-issuer`, `x-auth-roles`, `x-auth-scopes` by default). Whatever a client sends under these names is removed first, on every route of the file.',
  },
)

export const AuthConfig = Type.Object(
  {
    jwt: Type.Optional(JwtConfig),
    apiKeys: Type.Optional(ApiKeysConfig),
    introspection: Type.Optional(IntrospectionConfig),
    mtls: Type.Optional(Type.Boolean({ default: false, description: 'A verified client certificate (the TLS listener\'s) authenticates the request when no other credential is sent.' })),
    optional: Type.Optional(Type.Boolean({ default: false, description: 'Let requests without any credential through as `anonymous`, for `authz` to decide. A credential that is sent and wrong is still refused.' })),
    realm: Type.Optional(Type.String({ pattern: '^[^"\\\\]*$', default: 'waypost', description: 'The realm of the `WWW-Authenticate` challenge.' })),
    identityHeaders: Type.Optional(IdentityHeaders),
  },
  {
    additionalProperties: false,
    description:
      'Authentication: the first credential the request carries decides (JWT, then API key, then introspection, then a client certificate); 401 with an RFC 6750 challenge when it is missing or wrong.',
  },
)
export type AuthConfig = Static<typeof AuthConfig>

/** What the schema cannot say: one key source per JWT section, HS* only with a secret, at least one method. */
export function authProblems(config: AuthConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  if (config.jwt === undefined && config.apiKeys === undefined && config.introspection === undefined && config.mtls !== true) {
    problems.push({ path: '', message: 'no authentication method: configure jwt, apiKeys, introspection or mtls: true' })
  }
  const jwt = config.jwt
  if (jwt !== undefined) {
    const sources = (['jwks', 'jwksFile', 'publicKey', 'secret'] as const).filter((name) => jwt[name] !== undefined)
    if (sources.length !== 1) problems.push({ path: '/jwt', message: `expected exactly one key source of jwks, jwksFile, publicKey or secret, got ${sources.length === 0 ? 'none' : sources.join(' and ')}` })
    const algorithms = jwt.algorithms ?? ['RS256', 'ES256']
    const hmac = algorithms.filter((alg) => (HMAC_ALGORITHMS as readonly string[]).includes(alg))
    const asymmetric = algorithms.filter((alg) => !(HMAC_ALGORITHMS as readonly string[]).includes(alg))
    if (jwt.secret !== undefined && asymmetric.length > 0) {
      problems.push({ path: '/jwt/algorithms', message: `a shared secret verifies only HS256, HS384 or HS512, not ${asymmetric.join(', ')}` })
    }
    if (jwt.secret === undefined && hmac.length > 0) {
      problems.push({ path: '/jwt/algorithms', message: `${hmac.join(', ')} need a shared \`secret\`: never HS* with a public key (the algorithm-confusion attack)` })
    }
  }
  return problems
}
