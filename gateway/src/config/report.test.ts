// The compliance report's reading of a policy file: per-route authentication, authorization,
// TLS and rate limit, and the findings, including sections other issues define (listen.tls,
// upstream TLS verification, CORS), read loosely by name.
import t from 'tap'
import type { GatewayConfig } from './schema.js'
import { buildReport, reportMarkdown } from './report.js'

const base = { upstreams: { app: { url: 'http://127.0.0.1:3000' } } }

t.test('each route: authentication, authorization default, TLS, rate limit', async (t) => {
  const config = {
    ...base,
    defaults: { policies: { rateLimit: { rate: 10, burst: 20, key: 'identity' } } },
    routes: [
      { name: 'api', match: { path: { prefix: '/api' }, methods: ['GET'] }, upstream: 'app', policies: { auth: { jwt: { jwks: 'https://issuer/jwks', issuer: 'https://issuer', audience: 'api' } }, authz: { rules: [{ name: 'r', allow: {} }] } } },
      { name: 'keys', match: { path: { exact: '/k' } }, upstream: 'app', policies: { auth: { apiKeys: { file: 'keys.yaml', from: [{ query: 'key' }] }, optional: true }, rateLimit: false } },
    ],
  } as unknown as GatewayConfig
  const report = buildReport(config, 'p.yaml', 'abc')
  t.match(report.routes, [
    { name: 'api', match: 'prefix /api (GET)', authentication: /^JWT \(RS256\/ES256, JWKS https:\/\/issuer\/jwks, iss "https:\/\/issuer", aud "api"\)$/, authorization: 'deny by default, 1 rule', tls: 'none (plain HTTP)', rateLimit: '10/s, burst 20, per identity' },
    { name: 'keys', match: 'exact /k', authentication: 'API keys (keys.yaml; query key); optional (anonymous passes)', authorization: 'none', rateLimit: 'none' },
  ])
  t.match(report.findings, [
    { severity: 'medium', route: 'keys', message: /optional and no authorization default denies/ },
    { severity: 'low', route: 'keys', message: /query string/ },
  ])
  t.equal(report.findings.length, 2)
})

t.test('findings: weak HS256 secret, upstream verification off, admin off loopback, wildcard CORS, mTLS listener', async (t) => {
  const config = {
    listen: { address: '0.0.0.0:8443', tls: { cert: 'c.pem', key: 'k.pem', clientAuth: 'require' } },
    admin: { address: '0.0.0.0:9901' },
    upstreams: { app: { url: 'https://app:8443', tls: { verify: false } }, other: { url: 'http://other' } },
    routes: [
      { name: 'hs', upstream: 'app', policies: { auth: { jwt: { secret: 'short-secret', algorithms: ['HS256'], issuer: 'x', audience: 'y' } } } },
      { name: 'open', upstream: 'other', policies: { cors: { origins: ['*'] } } },
      { name: 'fail-open', upstream: 'other', policies: { auth: { introspection: { url: 'http://as.example/introspect', clientId: 'g', clientSecret: 'inline', whenUnavailable: 'anonymous' } } } },
    ],
  } as unknown as GatewayConfig
  const report = buildReport(config, 'p.yaml', 'abc')
  const messages = report.findings.map((finding) => `${finding.severity} ${finding.route ?? '-'}: ${finding.message}`)
  t.match(messages, [
    /^high -: the admin listener is on 0\.0\.0\.0:9901, not loopback/,
    /^high -: upstream app: TLS verification is off \(tls\.verify\)/,
    /^high hs: JWT HS256 with a 12-byte secret/,
    /^high fail-open: tokens are sent for introspection over plain HTTP/,
    /^medium hs: the JWT secret is written in the policy file/,
    /^medium open: CORS allows any origin/,
    /^medium fail-open: introspection fails open/,
    /^medium fail-open: the introspection client secret is written in the policy file/,
  ])
  t.notOk(messages.some((message) => /reachable without authentication/.test(message)), 'an mTLS listener that requires client certificates authenticates every route')
  t.equal(report.routes[0]!.tls, 'TLS + client certificates (clientAuth: require)')
  const markdown = reportMarkdown(report)
  t.match(markdown, /^# Compliance report: p\.yaml\n/)
  t.match(markdown, /\| `hs` \| `prefix \/` \| app \| JWT \(HS256, shared secret, iss "x", aud "y"\) \| none \| TLS \+ client certificates/)
  t.match(markdown, /- \*\*high\*\*: the admin listener/)
})
