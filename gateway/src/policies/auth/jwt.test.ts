// JWT authentication through the layer harness: a real JWKS server (the test issuer) and a manual
// clock, so expiry, skew, key rotation and the unknown-kid refetch interval are tested without
// waiting. gateway/test/auth.test.ts keeps the wiring end to end over real sockets.
import t from 'tap'
import { errors, exportJWK, type CryptoKey } from 'jose'
import { mkdtempSync, writeFileSync, renameSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ManualClock, runLayer, scriptedUpstream, settle, stateOf } from '../../../test/layer-harness.js'
import { TestIssuer } from '../../../test/test-issuer.js'
import type { Exchange } from '../../core/exchange.js'
import { auth } from './auth.js'
import { JwtVerifier } from './jwt.js'

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())
const rsaKid = await issuer.addKey('RS256')
await issuer.addKey('ES256')

function header(exchange: Exchange, name: string): string[] {
  const values: string[] = []
  for (let i = 0; i < exchange.request.headers.length; i += 2) if (exchange.request.headers[i]!.toLowerCase() === name) values.push(exchange.request.headers[i + 1]!)
  return values
}

function setup(jwt: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const clock = new ManualClock()
  const now = Math.floor(clock.now() / 1000)
  const next = scriptedUpstream(200)
  const layer = runLayer(auth, { jwt: { jwks: issuer.jwksUrl, issuer: issuer.url, audience: 'waypost-test', ...jwt }, ...extra } as never, { next, clock })
  const bearer = (token: string) => layer.call({ headers: { authorization: `Bearer ${token}` } })
  return { clock, now, next, layer, bearer }
}

t.test('a valid token: the identity for the layers inside, identity headers for the upstream', async (t) => {
  const { now, next, layer, bearer } = setup({ claimHeaders: { email: 'x-auth-email' } })
  const token = await issuer.sign({ sub: 'alice', roles: ['admin', 'dev'], scope: 'read write', email: 'alice@example.com' }, {}, now)
  const response = await layer.call({ headers: { authorization: `Bearer ${token}`, 'x-auth-subject': 'mallory', 'X-Auth-Roles': 'root', 'x-auth-email': 'forged@example.com' } })
  t.equal(response.status, 200)
  const seen = next.calls[0]!
  t.match(seen.identity, { kind: 'jwt', subject: 'alice', issuer: issuer.url, roles: ['admin', 'dev'], scopes: ['read', 'write'] })
  t.same(header(seen, 'x-auth-subject'), ['alice'], 'the forged subject is gone, ours is set')
  t.same(header(seen, 'x-auth-roles'), ['admin,dev'])
  t.same(header(seen, 'x-auth-scopes'), ['read,write'])
  t.same(header(seen, 'x-auth-kind'), ['jwt'])
  t.same(header(seen, 'x-auth-email'), ['alice@example.com'], 'claims mapped to headers, the forged one dropped')
  t.same(header(seen, 'authorization'), [`Bearer ${token}`], 'forwardToken defaults to true')
  await bearer(await issuer.sign({}, { kid: issuer.keys[1]!.kid }, now)).then((es256) => t.equal(es256.status, 200, 'ES256 too'))
  t.equal(await stateOf(layer.readiness[0]!.ready), 'fulfilled', 'the JWKS was fetched: /ready may turn true')
})

t.test('every way a token can be wrong is a 401 with an RFC 6750 challenge that names no key', async (t) => {
  const { now, next, layer, bearer } = setup()
  const rsaPem = await issuer.publicPem(rsaKid)
  const unsigned = (payload: Record<string, unknown>) => `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.`
  const cases: Array<[string, Promise<string> | string, RegExp]> = [
    ['expired', issuer.sign({ exp: now - 60 }, {}, now), /error="invalid_token", error_description="the token has expired"/],
    ['not yet valid', issuer.sign({ nbf: now + 120 }, {}, now), /not valid yet/],
    ['issued in the future', issuer.sign({ iat: now + 600, exp: now + 900 }, {}, now), /issued in the future/],
    ['wrong audience', issuer.sign({ aud: 'someone-else' }, {}, now), /audience is not accepted/],
    ['wrong issuer', issuer.sign({ iss: 'https://evil.example' }, {}, now), /issuer is not accepted/],
    ['no expiry', issuer.sign({ exp: null }, {}, now), /lacks the exp claim/],
    ['alg none', unsigned({ iss: issuer.url, aud: 'waypost-test', sub: 'root', exp: now + 300 }), /algorithm is not accepted/],
    ['HS256 signed with the RSA public key', issuer.sign({ sub: 'root' }, { secret: Buffer.from(rsaPem), alg: 'HS256', kid: rsaKid }, now), /algorithm is not accepted/],
    ['a forged signature', issuer.sign({ sub: 'alice' }, {}, now).then((token) => token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA')), /signature could not be verified/],
    ['garbage', 'abc.def.ghi', /malformed|signature/],
  ]
  for (const [name, pending, description] of cases) {
    const token = await pending
    const response = await bearer(token)
    t.equal(response.status, 401, name)
    t.match(response.headers['www-authenticate'], /^Bearer realm="waypost", error="invalid_token", error_description="[^"]+"$/, `${name}: challenge`)
    t.match(response.headers['www-authenticate'], description, `${name}: says why`)
    t.notMatch(response.headers['www-authenticate'], new RegExp(rsaKid), `${name}: no key id in the answer`)
    t.match(response.headers['x-waypost-reason'], /^unauthenticated route=test/)
  }
  t.equal(next.calls.length, 0, 'nothing reached the upstream')
  const missing = await layer.call()
  t.equal(missing.status, 401)
  t.equal(missing.headers['www-authenticate'], 'Bearer realm="waypost"', 'no credential: a challenge without an error code (RFC 6750 §3.1)')
  const events = layer.securityEvents.map((event) => event.reason)
  t.same(events.slice(0, 7), ['expired', 'not-yet-valid', 'issued-in-future', 'wrong-audience', 'wrong-issuer', 'missing-claim', 'algorithm-not-allowed'], 'each failure is in the security log')
  t.equal(events.at(-1), 'missing-credentials')
})

t.test('clock skew: a token a little past its exp (or before its nbf) passes within clockSkew', async (t) => {
  const { now, bearer } = setup({ clockSkew: '30s' })
  t.equal((await bearer(await issuer.sign({ exp: now - 20 }, {}, now))).status, 200, 'expired 20 s ago, skew 30 s')
  t.equal((await bearer(await issuer.sign({ nbf: now + 20 }, {}, now))).status, 200, 'valid in 20 s')
  t.equal((await bearer(await issuer.sign({ exp: now - 40 }, {}, now))).status, 401, 'expired 40 s ago')
})

t.test('two Authorization headers, a Bearer without a token: refused, never guessed at', async (t) => {
  const { now, layer } = setup()
  const token = await issuer.sign({}, {}, now)
  // rawHeaders carry both; Node's `headers` keeps only the first Authorization.
  const exchange = (await import('../../../test/layer-harness.js')).fakeExchange({ headers: { authorization: `Bearer ${token}` } })
  ;(exchange.request.incoming as unknown as { rawHeaders: string[] }).rawHeaders = ['Authorization', `Bearer ${token}`, 'Authorization', 'Bearer other']
  const twice = await layer.send(exchange)
  t.equal(twice.status, 400)
  t.match(twice.headers['www-authenticate'], /error="invalid_request"/)
  const empty = await layer.call({ headers: { authorization: 'Bearer ' } })
  t.equal(empty.status, 401)
  t.equal((await layer.call({ headers: { authorization: 'Basic dXNlcjpwYXNz' } })).status, 401, 'another scheme is no credential')
})

t.test('a token from a cookie or a header; forwardToken: false removes it', async (t) => {
  const { now, next, layer } = setup({ from: [{ cookie: 'session' }, { header: 'x-token' }], forwardToken: false })
  const token = await issuer.sign({}, {}, now)
  t.equal((await layer.call({ headers: { cookie: `theme=dark; session=${token}; lang=en` } })).status, 200)
  t.same(header(next.calls[0]!, 'cookie'), ['theme=dark; lang=en'], 'the other cookies stay')
  t.equal((await layer.call({ headers: { 'x-token': token } })).status, 200)
  t.same(header(next.calls[1]!, 'x-token'), [])
  t.equal((await layer.call({ headers: { authorization: `Bearer ${token}` } })).status, 401, 'bearer is not a source here')
})

t.test('an unknown key id refetches the JWKS at most once per interval: rotation without a restart', async (t) => {
  const { now, clock, bearer } = setup({ refresh: { unknownKidInterval: '30s' } })
  t.equal((await bearer(await issuer.sign({}, { kid: rsaKid }, now))).status, 200)
  const fetches = issuer.jwksFetches
  const rotated = await issuer.addKey('RS256')
  t.equal((await bearer(await issuer.sign({}, { kid: rotated }, now))).status, 200, 'the new key is accepted after one refetch')
  t.equal(issuer.jwksFetches, fetches + 1)
  const later = await issuer.addKey('RS256')
  const token = await issuer.sign({}, { kid: later }, now)
  t.equal((await bearer(token)).status, 401, 'another unknown key within the interval: no refetch')
  t.equal(issuer.jwksFetches, fetches + 1, 'made-up key ids cannot hammer the issuer')
  await clock.advance(30_000)
  t.equal((await bearer(token)).status, 200, 'after the interval it refetches again')
  issuer.removeKey(rotated)
  issuer.removeKey(later)
})

t.test('Cache-Control decides when keys are refreshed; a failed refresh keeps the last good keys', async (t) => {
  issuer.cacheControl = 'max-age=60'
  t.teardown(() => {
    issuer.cacheControl = 'max-age=300'
    issuer.down = false
  })
  const { now, clock, bearer, layer } = setup({ refresh: { minAge: '10s', maxAge: '1h' } })
  await layer.readiness[0]!.ready
  const fetched = issuer.jwksFetches
  await clock.advance(59_000)
  t.equal(issuer.jwksFetches, fetched, 'not before max-age')
  await clock.advance(1_000)
  await settle()
  t.equal(issuer.jwksFetches, fetched + 1, 'refreshed in the background at max-age')
  issuer.down = true
  await clock.advance(60_000)
  await settle()
  t.equal(issuer.jwksFetches, fetched + 1, 'down: the fetch failed (answered 503 before counting)')
  t.equal((await bearer(await issuer.sign({}, { kid: rsaKid }, now + 120))).status, 200, 'the last good keys keep working')
})

t.test('JWKS unreachable from the start: not ready, and tokens get 503 auth-unavailable (not 401)', async (t) => {
  const { next, layer } = (() => {
    const next = scriptedUpstream(200)
    const layer = runLayer(auth, { jwt: { jwks: 'http://127.0.0.1:9/jwks.json', refresh: { timeout: '1s' } } } as never, { next, clock: new ManualClock() })
    return { next, layer }
  })()
  const token = await issuer.sign({})
  const response = await layer.call({ headers: { authorization: `Bearer ${token}` } })
  t.equal(response.status, 503)
  t.match(response.headers['x-waypost-reason'], /^auth-unavailable /)
  t.equal(await stateOf(layer.readiness[0]!.ready), 'pending', '/ready stays false')
  t.equal(next.calls.length, 0)
})

t.test('a local JWKS file is watched; a PEM public key; an HS256 shared secret', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-jwks-'))
  const file = join(dir, 'jwks.json')
  const first = issuer.keys[0]!
  writeFileSync(file, JSON.stringify({ keys: [first.jwk] }))
  const clock = new ManualClock()
  const now = Math.floor(clock.now() / 1000)
  const fromFile = runLayer(auth, { jwt: { jwksFile: file } } as never, { next: scriptedUpstream(200), clock, kept: new Map() })
  t.equal((await fromFile.call({ headers: { authorization: `Bearer ${await issuer.sign({}, { kid: first.kid }, now)}` } })).status, 200)
  const added = await issuer.addKey('ES256')
  const token = await issuer.sign({}, { kid: added }, now)
  t.equal((await fromFile.call({ headers: { authorization: `Bearer ${token}` } })).status, 401, 'not in the file yet')
  writeFileSync(`${file}.tmp`, JSON.stringify({ keys: [first.jwk, { ...(await exportJWK(issuer.keys.at(-1)!.publicKey)), kid: added, alg: 'ES256' }] }))
  renameSync(`${file}.tmp`, file)
  let status = 0
  for (let i = 0; i < 50 && status !== 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    status = (await fromFile.call({ headers: { authorization: `Bearer ${token}` } })).status
  }
  t.equal(status, 200, 'the edited file applies without a reload')
  issuer.removeKey(added)

  const pem = runLayer(auth, { jwt: { publicKey: await issuer.publicPem(rsaKid), algorithms: ['RS256'] } } as never, { next: scriptedUpstream(200), clock })
  t.equal((await pem.call({ headers: { authorization: `Bearer ${await issuer.sign({}, { kid: rsaKid }, now)}` } })).status, 200, 'PEM public key')
  const secret = 'a-shared-secret-of-at-least-32-bytes!!'
  const hs = runLayer(auth, { jwt: { secret, algorithms: ['HS256'] } } as never, { next: scriptedUpstream(200), clock })
  t.equal((await hs.call({ headers: { authorization: `Bearer ${await issuer.sign({}, { secret: Buffer.from(secret), alg: 'HS256' }, now)}` } })).status, 200, 'HS256 with its secret')
  t.equal((await hs.call({ headers: { authorization: `Bearer ${await issuer.sign({}, { kid: rsaKid }, now)}` } })).status, 401, 'an RS256 token against a secret')
})

t.test('optional: anonymous goes on; a wrong credential is still refused', async (t) => {
  const { now, next, layer, bearer } = setup({}, { optional: true })
  t.equal((await layer.call({ headers: { 'x-auth-subject': 'admin' } })).status, 200)
  t.equal(next.calls[0]!.identity.kind, 'anonymous')
  t.same(header(next.calls[0]!, 'x-auth-subject'), [], 'a forged identity header is stripped on anonymous requests too')
  t.equal((await bearer(await issuer.sign({ exp: now - 600 }, {}, now))).status, 401)
})

t.test('validation: one key source; HS* never with a public key; none is not an algorithm', async (t) => {
  const problems = (config: unknown) => auth.validate!(config as never, { upstreams: new Set(), redis: false }).map((problem) => `${problem.path}: ${problem.message}`)
  t.match(problems({ jwt: { jwks: 'http://x/jwks', algorithms: ['RS256', 'HS256'] } }), [/\/jwt\/algorithms: HS256 need a shared `secret`/])
  t.match(problems({ jwt: { secret: 'x'.repeat(40), algorithms: ['RS256'] } }), [/a shared secret verifies only HS256/])
  t.match(problems({ jwt: { jwks: 'http://x/jwks', jwksFile: '/tmp/x' } }), [/exactly one key source .* got jwks and jwksFile/])
  t.match(problems({}), [/no authentication method/])
})

t.test('a verified token is remembered until its exp (or iat + maxAge) passes or the key set changes; failures never are', async (t) => {
  const clock = new ManualClock()
  const now = Math.floor(clock.now() / 1000)
  const signing = issuer.keys[0]!
  let lookups = 0
  let key: CryptoKey | undefined = signing.publicKey
  const source = {
    what: 'counting key source',
    ready: Promise.resolve(),
    generation: 1,
    resolve: (): Promise<CryptoKey> => {
      lookups++
      return key === undefined ? Promise.reject(new errors.JWKSNoMatchingKey()) : Promise.resolve(key)
    },
    dispose() {},
  }
  const rules = { algorithms: ['RS256'], issuer: issuer.url, audience: 'waypost-test', clockSkewSeconds: 30, maxAgeSeconds: 600, requireExpiry: true, requiredClaims: [], cacheEntries: 10 }
  const verifier = new JwtVerifier(source, rules, clock)
  const token = await issuer.sign({ exp: now + 60 }, { kid: signing.kid }, now)
  t.match(await verifier.verify(token), { ok: true })
  t.match(await verifier.verify(token), { ok: true })
  t.equal(lookups, 1, 'the second time costs a lookup, not a signature check')
  await clock.advance(89_000)
  t.match(await verifier.verify(token), { ok: true }, 'within exp + skew')
  await clock.advance(2_000)
  t.match(await verifier.verify(token), { ok: false, reason: 'expired' }, 'remembered, but past exp + skew: checked again and refused')

  const old = await issuer.sign({ exp: now + 3600, iat: now - 500 }, { kid: signing.kid }, Math.floor(clock.now() / 1000))
  t.match(await verifier.verify(old), { ok: true })
  await clock.advance(150_000)
  t.match(await verifier.verify(old), { ok: false, reason: 'expired' }, 'iat + maxAge + skew passed: too old')

  const fresh = await issuer.sign({ exp: Math.floor(clock.now() / 1000) + 3600 }, { kid: signing.kid }, Math.floor(clock.now() / 1000))
  t.match(await verifier.verify(fresh), { ok: true })
  source.generation++
  key = undefined
  t.match(await verifier.verify(fresh), { ok: false, reason: 'unknown-key' }, 'the key left the set: the remembered token is checked again and refused')

  key = signing.publicKey
  lookups = 0
  const forged = `${fresh.slice(0, fresh.lastIndexOf('.'))}.${Buffer.from('not the signature').toString('base64url')}`
  t.match(await verifier.verify(forged), { ok: false, reason: 'invalid-signature' })
  t.match(await verifier.verify(forged), { ok: false, reason: 'invalid-signature' })
  t.equal(lookups, 2, 'a failure is checked every time')

  const uncached = new JwtVerifier(source, { ...rules, cacheEntries: 0 }, clock)
  lookups = 0
  await uncached.verify(fresh)
  await uncached.verify(fresh)
  t.equal(lookups, 2, 'cacheEntries: 0 checks every time')
})
