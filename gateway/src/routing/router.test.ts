import t from 'tap'
import { Router, type RouteMatch } from './router.js'

function router(entries: Array<[string, RouteMatch]>): Router<string> {
  return new Router(entries.map(([route, match]) => ({ route, match })))
}

t.test('most specific path wins regardless of file order', async (t) => {
  const r = router([
    ['catch-all', { path: { prefix: '/' } }],
    ['api', { path: { prefix: '/api' } }],
    ['api-v2', { path: { prefix: '/api/v2' } }],
    ['users', { path: { regex: '^/api/users/[0-9]+$' } }],
    ['health', { path: { exact: '/api/health' } }],
  ])
  t.equal(r.match('GET', 'x', '/api/health', {}), 'health')
  t.equal(r.match('GET', 'x', '/api/users/42', {}), 'users')
  t.equal(r.match('GET', 'x', '/api/v2/things', {}), 'api-v2')
  t.equal(r.match('GET', 'x', '/api/other', {}), 'api')
  t.equal(r.match('GET', 'x', '/elsewhere', {}), 'catch-all')
})

t.test('prefixes match whole segments', async (t) => {
  const r = router([['api', { path: { prefix: '/api' } }], ['trailing', { path: { prefix: '/docs/' } }]])
  t.equal(r.match('GET', '', '/api', {}), 'api')
  t.equal(r.match('GET', '', '/api/', {}), 'api')
  t.equal(r.match('GET', '', '/apix', {}), undefined)
  t.equal(r.match('GET', '', '/docs', {}), 'trailing')
  t.equal(r.match('GET', '', '/docs/a', {}), 'trailing')
})

t.test('host: exact beats wildcard beats any; ports and case ignored', async (t) => {
  const r = router([
    ['any', {}],
    ['wild', { host: '*.example.com' }],
    ['exact', { host: 'api.example.com' }],
  ])
  t.equal(r.match('GET', 'API.example.com:8080', '/', {}), 'exact')
  t.equal(r.match('GET', 'www.example.com', '/', {}), 'wild')
  t.equal(r.match('GET', 'example.com', '/', {}), 'any', 'a wildcard does not cover the apex')
  t.equal(r.match('GET', undefined, '/', {}), 'any')
  const v6 = router([['v6', { host: '[::1]' }]])
  t.equal(v6.match('GET', '[::1]:8080', '/', {}), 'v6')
})

t.test('methods and headers narrow a match and rank above plain routes', async (t) => {
  const r = router([
    ['plain', { path: { prefix: '/' } }],
    ['writes', { path: { prefix: '/' }, methods: ['POST', 'PUT'] }],
    ['canary', { path: { prefix: '/' }, headers: [{ name: 'x-canary', test: (v) => v === '1' }] }],
  ])
  t.equal(r.match('POST', '', '/x', {}), 'writes')
  t.equal(r.match('GET', '', '/x', { 'x-canary': '1' }), 'canary')
  t.equal(r.match('GET', '', '/x', { 'x-canary': '0' }), 'plain')
  t.equal(r.match('GET', '', '/x', {}), 'plain')
})

t.test('ties go to the earlier route; no match is undefined', async (t) => {
  const r = router([['first', { path: { prefix: '/a' } }], ['second', { path: { prefix: '/a' } }]])
  t.equal(r.match('GET', '', '/a/b', {}), 'first')
  t.same(r.order, ['first', 'second'])
  t.equal(router([['only', { path: { exact: '/x' } }]]).match('GET', '', '/y', {}), undefined)
})

t.test('match.clientCert: SPIFFE ID (exact and /*), DNS SAN (exact and wildcard); a route with it protects what it matches', async (t) => {
  const { clientCertTest } = await import('./client-cert.js')
  const certificate = (spiffeId: string | undefined, dns: string[] = []) => ({
    subject: 'CN=x',
    issuer: 'CN=ca',
    san: { dns, uri: spiffeId === undefined ? [] : [spiffeId], email: [] },
    spiffeId,
    fingerprint: 'ab',
    serial: '01',
    notAfter: 0,
  })
  const app = certificate('spiffe://td/ns/default/sa/app', ['app.default.svc'])
  const other = certificate('spiffe://td/ns/other/sa/x')
  const r = router([
    ['public', { path: { prefix: '/' } }],
    ['workload', { path: { prefix: '/admin' }, clientCert: clientCertTest({ spiffeId: 'spiffe://td/ns/default/sa/app' }) }],
    ['namespace', { path: { prefix: '/ns' }, clientCert: clientCertTest({ spiffeId: 'spiffe://td/ns/default/*' }) }],
    ['dns', { path: { prefix: '/dns' }, clientCert: clientCertTest({ dns: '*.default.svc' }) }],
    ['twin-public', { path: { prefix: '/twin' } }],
    ['twin-mtls', { path: { prefix: '/twin' }, clientCert: clientCertTest(true) }],
  ])
  t.equal(r.match('GET', '', '/admin/x', {}, app), 'workload')
  t.equal(r.match('GET', '', '/admin/x', {}, other), undefined, "another workload's certificate: not the broader public route")
  t.equal(r.match('GET', '', '/admin/x', {}), undefined, 'no certificate: neither')
  t.ok(r.wantsOtherCertificate('GET', '', '/admin/x', {}), 'a certificate would have made the difference')
  t.equal(r.match('GET', '', '/ns/a', {}, app), 'namespace')
  t.equal(r.match('GET', '', '/ns/a', {}, certificate('spiffe://td/ns/default')), undefined, '/* needs a path below')
  t.equal(r.match('GET', '', '/dns', {}, app), 'dns')
  t.equal(r.match('GET', '', '/dns', {}, certificate(undefined, ['default.svc'])), undefined, 'a wildcard does not cover its apex')
  t.equal(r.match('GET', '', '/twin', {}, other), 'twin-mtls', 'the route asking for a certificate is tried first')
  t.equal(r.match('GET', '', '/twin', {}), 'twin-public', 'an equally specific public route takes the others')
  t.equal(r.match('GET', '', '/elsewhere', {}, app), 'public')
})
