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
