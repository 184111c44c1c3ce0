// Targeted cache control (RFC 9213) without sockets: which field decides, what it means, what goes on.
import t from 'tap'
import { responseDirectives, stripOurControls, targetedDirectives } from './targeted.js'
import { freshnessLifetime, notStorableBecause } from './freshness.js'
import { NO_DIRECTIVES } from './cache-control.js'
import { cache } from './cache.js'

const CDN = 'cdn-cache-control'
const settings = { maxTtlS: 86_400, defaultTtlS: undefined, allowAuthorized: false }

t.test('a valid, non-empty targeted field replaces Cache-Control and Surrogate-Control', async (t) => {
  t.match(responseDirectives({ 'cache-control': 'no-store', [CDN]: 'max-age=600' }, CDN), { noStore: false, maxAge: 600, targeted: true })
  t.match(responseDirectives({ 'cache-control': 'max-age=600', [CDN]: 'no-store' }, CDN), { noStore: true, maxAge: undefined })
  t.match(responseDirectives({ 'surrogate-control': 'max-age=5', [CDN]: 'max-age=600' }, CDN), { maxAge: 600, sMaxAge: undefined }, 'over Surrogate-Control too')
  t.match(responseDirectives({ 'cache-control': 'no-store', [CDN]: 'none' }, CDN), { noStore: false, maxAge: undefined, targeted: true }, 'an unknown directive is a value: Cache-Control is still ignored')
  t.match(responseDirectives({ 'cache-control': 'no-store', 'waypost-cache-control': 'max-age=60', [CDN]: 'no-store' }, 'waypost-cache-control'), { noStore: false, maxAge: 60 }, 'the configured name, not CDN-Cache-Control')
})

t.test('an empty or invalid targeted field is ignored: the other fields decide', async (t) => {
  for (const value of ['', 'Max-Age=60', 'max-age=60,', 'max-age=60 s-maxage=5']) {
    t.match(responseDirectives({ 'cache-control': 'max-age=5', [CDN]: value }, CDN), { maxAge: 5, targeted: false }, JSON.stringify(value))
  }
  t.match(responseDirectives({ 'cache-control': 'max-age=5', 'surrogate-control': 'max-age=50', [CDN]: '' }, CDN), { sMaxAge: 50 }, 'then Surrogate-Control')
})

t.test('directives of the wrong type are not consumed; parameters are ignored', async (t) => {
  t.match(targetedDirectives('max-age=1.5, s-maxage="60", stale-if-error=-1, no-store=?0, must-revalidate=1'), { maxAge: undefined, sMaxAge: undefined, staleIfError: undefined, noStore: false, mustRevalidate: false, targeted: true })
  t.match(targetedDirectives('max-age=60;foo=bar, no-cache="set-cookie", private, stale-while-revalidate=30, public, must-understand'), { maxAge: 60, noCache: true, private: true, staleWhileRevalidate: 30, public: true, mustUnderstand: true })
  t.match(targetedDirectives('s-maxage=10, max-age=60, proxy-revalidate'), { sMaxAge: 10, maxAge: 60, proxyRevalidate: true })
})

t.test('Expires is ignored for freshness when a targeted field decides', async (t) => {
  const now = Date.parse('Wed, 01 Jan 2025 12:00:00 GMT')
  const headers = { date: 'Wed, 01 Jan 2025 12:00:00 GMT', expires: 'Wed, 01 Jan 2025 13:00:00 GMT', [CDN]: 'must-revalidate' }
  const cc = responseDirectives(headers, CDN)
  t.equal(freshnessLifetime(200, headers, cc, now, settings), 0, 'no max-age in it and no Last-Modified: no freshness')
  t.equal(notStorableBecause(302, headers, cc, NO_DIRECTIVES, false, settings), 'no-freshness', 'Expires does not make a 302 storable either')
  const plain = { date: headers.date, expires: headers.expires }
  t.equal(freshnessLifetime(200, plain, responseDirectives(plain, CDN), now, settings), 3600, 'without it, Expires counts')
})

t.test('the targeted field is removed before the response goes on, with our Surrogate-Control', async (t) => {
  const headers: Record<string, string> = { 'cache-control': 'no-store', [CDN]: 'max-age=600', 'surrogate-control': 'max-age=60;waypost, no-store;other' }
  stripOurControls(headers, CDN)
  t.same(headers, { 'cache-control': 'no-store', 'surrogate-control': 'no-store;other' })
  const invalid: Record<string, string> = { [CDN]: 'Max-Age=60' }
  stripOurControls(invalid, CDN)
  t.same(invalid, {}, 'addressed to us by name: removed even when it does not parse')
  const other: Record<string, string> = { [CDN]: 'max-age=600' }
  stripOurControls(other, 'waypost-cache-control')
  t.same(other, { [CDN]: 'max-age=600' }, 'not on our target list: passed through')
})

t.test('targetedHeader cannot name a field the cache reads by other rules', async (t) => {
  const validate = (targetedHeader: string): unknown => cache.validate!({ targetedHeader }, { upstreams: new Set(), redis: false })
  t.same(validate('Cache-Control'), [{ path: '/targetedHeader', message: '"Cache-Control" cannot be a targeted field: the cache reads it by its own rules' }])
  t.equal((validate('surrogate-control') as unknown[]).length, 1)
  t.same(validate('Waypost-Cache-Control'), [])
})
