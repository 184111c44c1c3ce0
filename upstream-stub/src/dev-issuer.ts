// A development token issuer inside the stub, for tests and the auth example: signing keys made at
// start (RS256 and ES256, never written anywhere), an OpenID discovery document, the JWKS, a token
// endpoint that signs whatever claims it is given, and RFC 7662 introspection over its own tokens.
// DEVELOPMENT ONLY: anyone who can reach it can mint any token it signs.
import { randomBytes } from 'node:crypto'
import { exportJWK, generateKeyPair, jwtVerify, SignJWT, createLocalJWKSet, type JWK, type CryptoKey, type JWTPayload } from 'jose'
import { HttpError, sendJson } from './support.js'
import type { Exchange } from './routes.js'

/** The audience tokens get unless the request names another. */
export const DEV_AUDIENCE = 'waypost-dev'
const DEFAULT_LIFETIME_S = 300
const MAX_BODY = 64 * 1024

interface DevKey {
  readonly kid: string
  readonly alg: 'RS256' | 'ES256'
  readonly privateKey: CryptoKey
  readonly jwk: JWK
}

export interface DevIssuer {
  readonly keys: readonly DevKey[]
  /** The stub's origin (`http://127.0.0.1:3000`), known once it listens: the tokens' `iss`. */
  origin: string
}

export async function createDevIssuer(): Promise<DevIssuer> {
  const keys: DevKey[] = []
  for (const alg of ['RS256', 'ES256'] as const) {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
    const kid = `dev-${alg.toLowerCase()}-${randomBytes(4).toString('hex')}`
    keys.push({ kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } })
  }
  return { keys, origin: '' }
}

function issuerOf(exchange: Exchange): DevIssuer {
  const issuer = exchange.state.issuer
  if (issuer === undefined) throw new HttpError(503, 'the development issuer is not ready')
  return issuer
}

async function readBody(exchange: Exchange): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of exchange.req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY) throw new HttpError(413, `the body is over ${MAX_BODY} bytes`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export function openidConfiguration(exchange: Exchange): void {
  const { origin } = issuerOf(exchange)
  sendJson(exchange.res, 200, {
    issuer: origin,
    jwks_uri: `${origin}/.well-known/jwks.json`,
    token_endpoint: `${origin}/dev/token`,
    introspection_endpoint: `${origin}/dev/introspect`,
    id_token_signing_alg_values_supported: ['RS256', 'ES256'],
    token_endpoint_auth_methods_supported: ['none'],
    introspection_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
  })
}

export function jwks(exchange: Exchange): void {
  sendJson(exchange.res, 200, { keys: issuerOf(exchange).keys.map((key) => key.jwk) }, { 'cache-control': 'public, max-age=300' })
}

/**
 * POST /dev/token with a JSON object of claims (or nothing): they are merged over
 * iss = the stub's origin, aud = waypost-dev, sub = dev-user, iat = now, exp = now + 5 min;
 * `?alg=ES256` signs with the EC key. A claim set to null is left out (`{"exp": null}`).
 */
export async function devToken(exchange: Exchange): Promise<void> {
  const issuer = issuerOf(exchange)
  const text = await readBody(exchange)
  let claims: unknown = {}
  if (text.trim() !== '') {
    try {
      claims = JSON.parse(text)
    } catch {
      throw new HttpError(400, 'invalid parameter "body": expected a JSON object of claims')
    }
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw new HttpError(400, 'invalid parameter "body": expected a JSON object of claims')
  const alg = exchange.url.searchParams.get('alg') ?? 'RS256'
  const key = issuer.keys.find((candidate) => candidate.alg === alg)
  if (key === undefined) throw new HttpError(400, `invalid parameter "alg": ${JSON.stringify(alg)} is not RS256 or ES256`)
  const now = Math.floor(Date.now() / 1000)
  const payload: Record<string, unknown> = { iss: issuer.origin, aud: DEV_AUDIENCE, sub: 'dev-user', iat: now, exp: now + DEFAULT_LIFETIME_S, jti: randomBytes(8).toString('hex'), ...claims }
  for (const [name, value] of Object.entries(payload)) if (value === null) delete payload[name]
  const token = await new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' }).sign(key.privateKey)
  const exp = payload.exp
  sendJson(exchange.res, 200, { access_token: token, token_type: 'Bearer', ...(typeof exp === 'number' ? { expires_in: exp - now } : {}) }, { 'cache-control': 'no-store' })
}

/** POST /dev/introspect (RFC 7662): `token=...`, form-encoded; active when this stub signed it and it is within exp/nbf. No client authentication. */
export async function devIntrospect(exchange: Exchange): Promise<void> {
  const issuer = issuerOf(exchange)
  const token = new URLSearchParams(await readBody(exchange)).get('token')
  if (token === null || token === '') throw new HttpError(400, 'invalid parameter "token": missing')
  try {
    const { payload } = await jwtVerify(token, createLocalJWKSet({ keys: issuer.keys.map((key) => key.jwk) }), { issuer: issuer.origin, algorithms: ['RS256', 'ES256'] })
    sendJson(exchange.res, 200, { active: true, token_type: 'Bearer', ...payload }, { 'cache-control': 'no-store' })
  } catch {
    sendJson(exchange.res, 200, { active: false }, { 'cache-control': 'no-store' })
  }
}
