// API keys and token introspection through the layer harness: a keys file edited under the layer
// (hot reload, revocation), and the test issuer's introspection endpoint (active, inactive, cached,
// coalesced, down).
import t from 'tap'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ManualClock, runLayer, scriptedUpstream, stateOf } from '../../../test/layer-harness.js'
import { CLIENT_ID, CLIENT_SECRET, TestIssuer } from '../../../test/test-issuer.js'
import type { Exchange } from '../../core/exchange.js'
import { hashApiKey, parseApiKeys } from './api-keys.js'
import { auth } from './auth.js'

function header(exchange: Exchange, name: string): string[] {
  const values: string[] = []
  for (let i = 0; i < exchange.request.headers.length; i += 2) if (exchange.request.headers[i]!.toLowerCase() === name) values.push(exchange.request.headers[i + 1]!)
  return values
}

function keysFile(entries: Array<{ name: string; key: string; roles?: string[]; rateLimitKey?: string }>): string {
  return `keys:\n${entries.map((entry) => `  - name: ${entry.name}\n    sha256: ${hashApiKey(entry.key)}\n    roles: [${(entry.roles ?? []).join(', ')}]\n${entry.rateLimitKey === undefined ? '' : `    rateLimitKey: ${entry.rateLimitKey}\n`}`).join('')}`
}

async function eventually(check: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 60; i++) {
    if (await check()) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

t.test('API keys: valid, wrong, revoked and added by editing the file; never forwarded', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-keys-'))
  const file = join(dir, 'api-keys.yaml')
  writeFileSync(file, keysFile([{ name: 'partner-a', key: 'key-a-0123456789', roles: ['partner'], rateLimitKey: 'tier-gold' }, { name: 'partner-b', key: 'key-b-0123456789' }]))
  const next = scriptedUpstream(200)
  const layer = runLayer(auth, { apiKeys: { file, from: [{ header: 'x-api-key' }, { query: 'api_key' }] } } as never, { next })
  const ok = await layer.call({ headers: { 'x-api-key': 'key-a-0123456789' } })
  t.equal(ok.status, 200)
  t.match(next.calls[0]!.identity, { kind: 'apiKey', subject: 'partner-a', roles: ['partner'], rateLimitKey: 'tier-gold' })
  t.same(header(next.calls[0]!, 'x-api-key'), [], 'the key is not forwarded')
  t.same(header(next.calls[0]!, 'x-auth-subject'), ['partner-a'])
  t.equal(await stateOf(layer.readiness[0]!.ready), 'fulfilled')

  const wrong = await layer.call({ headers: { 'x-api-key': 'key-a-0123456780' } })
  t.equal(wrong.status, 401)
  t.equal(wrong.headers['www-authenticate'], 'ApiKey realm="waypost", error="invalid_token", error_description="the API key is not valid"')

  const query = await layer.call({ path: '/data?x=1&api_key=key-b-0123456789&y=%2F' })
  t.equal(query.status, 200, 'from the query')
  t.equal(next.calls[1]!.request.path, '/data?x=1&y=%2F', 'the key is removed from the URL, the rest kept byte for byte')

  // Revoke b, add c: an atomic rename, as editors and Kubernetes Secret updates do.
  writeFileSync(`${file}.new`, keysFile([{ name: 'partner-a', key: 'key-a-0123456789' }, { name: 'partner-c', key: 'key-c-0123456789' }]))
  renameSync(`${file}.new`, file)
  t.ok(await eventually(async () => (await layer.call({ headers: { 'x-api-key': 'key-c-0123456789' } })).status === 200), 'a new key works without a reload')
  t.equal((await layer.call({ headers: { 'x-api-key': 'key-b-0123456789' } })).status, 401, 'the revoked key is refused')

  writeFileSync(file, 'keys: [{ name: broken, key: plaintext }]')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal((await layer.call({ headers: { 'x-api-key': 'key-c-0123456789' } })).status, 200, 'a bad edit keeps the last good keys')
  const reasons = new Set(layer.securityEvents.map((event) => event.reason))
  t.same([...reasons], ['invalid-api-key'], 'failures are in the security log')
  t.notOk(JSON.stringify(layer.securityEvents).includes('key-'), 'without the key')
})

t.test('the keys file: hashes only, names unique, a plaintext key refused with a hint', async (t) => {
  t.throws(() => parseApiKeys('keys: [{ name: a, key: secret }]'), /unknown field key \(store the SHA-256/)
  t.throws(() => parseApiKeys(`keys: [{ name: a, sha256: "${'0'.repeat(64)}" }, { name: a, sha256: "${'1'.repeat(64)}" }]`), /"a" is used twice/)
  t.throws(() => parseApiKeys('keys: [{ name: a, sha256: abc }]'), /64 hex digits/)
  t.equal(parseApiKeys(`keys: [{ name: a, sha256: ${'A'.repeat(64)} }]`)[0]!.name, 'a')
})

const issuer = await TestIssuer.start()
t.teardown(() => issuer.close())

function introspecting(extra: Record<string, unknown> = {}) {
  const clock = new ManualClock()
  const next = scriptedUpstream(200)
  const layer = runLayer(auth, { introspection: { url: issuer.introspectionUrl, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, cacheMax: '60s', negativeCache: '5s', ...extra } } as never, { next, clock })
  return { clock, next, layer, bearer: (token: string) => layer.call({ headers: { authorization: `Bearer ${token}` } }) }
}

t.test('introspection: active tokens pass with their identity; the answer is cached up to exp and cacheMax', async (t) => {
  const { clock, next, bearer } = introspecting({ claimHeaders: { client_id: 'x-auth-client' } })
  const nowSeconds = Math.floor(clock.now() / 1000)
  const token = issuer.mintOpaque({ sub: 'svc-1', scope: 'orders:read orders:write', client_id: 'shop', exp: nowSeconds + 30, iss: 'https://as.example' })
  const before = issuer.introspections
  t.equal((await bearer(token)).status, 200)
  t.match(next.calls[0]!.identity, { kind: 'introspection', subject: 'svc-1', scopes: ['orders:read', 'orders:write'], issuer: 'https://as.example' })
  t.same(header(next.calls[0]!, 'x-auth-client'), ['shop'])
  t.match(issuer.introspectionAuth.at(-1), /^Basic /, 'the gateway authenticated itself (client_secret_basic)')
  t.equal((await bearer(token)).status, 200)
  t.equal(issuer.introspections, before + 1, 'the second request used the cached answer')
  await clock.advance(31_000)
  issuer.opaque.delete(token)
  t.equal((await bearer(token)).status, 401, 'past exp the answer is not reused: asked again, and now inactive')
  t.equal(issuer.introspections, before + 2)
})

t.test('introspection: inactive tokens are refused and remembered briefly; concurrent lookups share one request', async (t) => {
  const { clock, bearer, layer } = introspecting()
  const before = issuer.introspections
  const unknown = 'opaque-token-nobody-issued'
  const refused = await bearer(unknown)
  t.equal(refused.status, 401)
  t.match(refused.headers['www-authenticate'], /error="invalid_token", error_description="the token is not active"/)
  await bearer(unknown)
  t.equal(issuer.introspections, before + 1, 'negative answer cached')
  await clock.advance(5_000)
  await bearer(unknown)
  t.equal(issuer.introspections, before + 2, 'for negativeCache only')

  issuer.introspectionDelayMs = 100
  t.teardown(() => (issuer.introspectionDelayMs = 0))
  const token = issuer.mintOpaque({ sub: 'svc-2', exp: Math.floor(clock.now() / 1000) + 300 })
  const answers = await Promise.all(Array.from({ length: 20 }, () => bearer(token)))
  t.same([...new Set(answers.map((answer) => answer.status))], [200])
  t.equal(issuer.introspections, before + 3, '20 concurrent requests, one introspection')
  t.notOk(JSON.stringify(layer.securityEvents).includes(unknown), 'the token is not in the security log')
})

t.test('introspection server down: 503 auth-unavailable, or fail closed (deny), or open (anonymous)', async (t) => {
  issuer.down = true
  t.teardown(() => (issuer.down = false))
  const token = issuer.mintOpaque({ sub: 'svc-3' })
  const unavailable = await introspecting().bearer(token)
  t.equal(unavailable.status, 503)
  t.match(unavailable.headers['x-waypost-reason'], /^auth-unavailable /)
  t.equal((await introspecting({ whenUnavailable: 'deny' }).bearer(token)).status, 401)
  const open = introspecting({ whenUnavailable: 'anonymous' })
  t.equal((await open.bearer(token)).status, 200)
  t.equal(open.next.calls[0]!.identity.kind, 'anonymous', 'fail open goes on without an identity: authz decides')
  const wrongSecret = introspecting({ clientSecret: 'not-the-secret' })
  issuer.down = false
  t.equal((await wrongSecret.bearer(token)).status, 503, 'the server refusing our client credentials is unavailable, not the client\'s fault')
})

t.test('JWT and introspection together: a JWT-shaped token is verified, any other is introspected', async (t) => {
  await issuer.addKey('ES256')
  const clock = new ManualClock()
  const next = scriptedUpstream(200)
  const layer = runLayer(
    auth,
    { jwt: { jwks: issuer.jwksUrl, issuer: issuer.url, audience: 'waypost-test' }, introspection: { url: issuer.introspectionUrl, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET } } as never,
    { next, clock },
  )
  const jwt = await issuer.sign({ sub: 'jwt-user' }, {}, Math.floor(clock.now() / 1000))
  const opaque = issuer.mintOpaque({ sub: 'opaque-user' })
  const before = issuer.introspections
  t.equal((await layer.call({ headers: { authorization: `Bearer ${jwt}` } })).status, 200)
  t.equal((await layer.call({ headers: { authorization: `Bearer ${opaque}` } })).status, 200)
  t.same(next.calls.map((call) => `${call.identity.kind}:${call.identity.subject}`), ['jwt:jwt-user', 'introspection:opaque-user'])
  t.equal(issuer.introspections, before + 1)
})
