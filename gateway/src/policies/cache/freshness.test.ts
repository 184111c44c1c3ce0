// RFC 9111 arithmetic without sockets: directive parsing, storability, freshness and age.
import t from 'tap'
import { parseCacheControl, NO_DIRECTIVES } from './cache-control.js'
import { correctedInitialAge, currentAge, freshnessLifetime, notStorableBecause, type FreshnessSettings } from './freshness.js'

const settings: FreshnessSettings = { maxTtlS: 86_400, defaultTtlS: undefined, allowAuthorized: false }
const NOW = Date.parse('Wed, 01 Jan 2025 12:00:00 GMT')

t.test('Cache-Control: directives, arguments, quoted lists, repeats', async (t) => {
  t.equal(parseCacheControl(undefined), NO_DIRECTIVES)
  t.match(parseCacheControl('Public, MAX-AGE=60, s-maxage="30"'), { public: true, maxAge: 60, sMaxAge: 30 })
  t.match(parseCacheControl('no-cache="set-cookie, x-a", max-age=5'), { noCache: true, maxAge: 5 })
  t.match(parseCacheControl('max-age=60, max-age=10'), { maxAge: 0 }, 'a repeated max-age is treated as stale')
  t.match(parseCacheControl('max-age=abc'), { maxAge: 0 })
  t.match(parseCacheControl('max-stale'), { maxStale: Infinity })
  t.match(parseCacheControl(['max-stale=5', 'min-fresh=2, only-if-cached']), { maxStale: 5, minFresh: 2, onlyIfCached: true })
  t.match(parseCacheControl('stale-while-revalidate=30, stale-if-error=60'), { staleWhileRevalidate: 30, staleIfError: 60 })
})

t.test('storable only as RFC 9111 §3 and §3.5 allow', async (t) => {
  const storable = (status: number, headers: Record<string, string>, authorized = false, request = NO_DIRECTIVES, own = settings): string | undefined =>
    notStorableBecause(status, headers, parseCacheControl(headers['cache-control']), request, authorized, own)
  t.equal(storable(200, { 'cache-control': 'max-age=60' }), undefined)
  t.equal(storable(200, {}), undefined, '200 is heuristically cacheable')
  t.equal(storable(302, {}), 'no-freshness')
  t.equal(storable(302, { 'cache-control': 'max-age=60' }), undefined)
  t.equal(storable(206, { 'cache-control': 'max-age=60' }), 'status')
  t.equal(storable(200, { 'cache-control': 'no-store, max-age=60' }), 'no-store')
  t.equal(storable(200, { 'cache-control': 'max-age=60' }, false, parseCacheControl('no-store')), 'no-store')
  t.equal(storable(200, { 'cache-control': 'private, max-age=60' }), 'private')
  t.equal(storable(200, { 'cache-control': 'max-age=60' }, true), 'authorization')
  t.equal(storable(200, { 'cache-control': 's-maxage=60' }, true), undefined)
  t.equal(storable(200, { 'cache-control': 'max-age=60' }, true, NO_DIRECTIVES, { ...settings, allowAuthorized: true }), undefined)
  t.equal(storable(200, { 'cache-control': 'max-age=60', vary: 'Accept, *' }), 'vary-star')
})

t.test('freshness lifetime: s-maxage > max-age > Expires > heuristic, capped by maxTtl', async (t) => {
  const lifetime = (headers: Record<string, string>, own = settings, status = 200): number => freshnessLifetime(status, headers, parseCacheControl(headers['cache-control']), NOW, own)
  t.equal(lifetime({ 'cache-control': 'max-age=60, s-maxage=10' }), 10)
  t.equal(lifetime({ 'cache-control': 'max-age=60', expires: 'Wed, 01 Jan 2025 13:00:00 GMT' }), 60)
  t.equal(lifetime({ date: 'Wed, 01 Jan 2025 12:00:00 GMT', expires: 'Wed, 01 Jan 2025 12:05:00 GMT' }), 300)
  t.equal(lifetime({ expires: '0' }), 0, 'an invalid Expires is already expired')
  t.equal(lifetime({ 'last-modified': 'Wed, 01 Jan 2025 02:00:00 GMT' }), 3600, '10% of the time since Last-Modified')
  t.equal(lifetime({ 'last-modified': 'Wed, 01 Jan 2025 02:00:00 GMT' }, settings, 302), 0, 'no heuristic for a 302')
  t.equal(lifetime({}, { ...settings, defaultTtlS: 30 }), 30, 'defaultTtl where a heuristic is allowed')
  t.equal(lifetime({ 'cache-control': 'max-age=0' }, { ...settings, defaultTtlS: 30 }), 0, 'never over explicit freshness')
  t.equal(lifetime({ 'cache-control': 'max-age=999999' }, { ...settings, maxTtlS: 100 }), 100)
})

t.test('dates are HTTP-dates or nothing: Expires, Date and Last-Modified in other formats', async (t) => {
  const lifetime = (headers: Record<string, string>): number => freshnessLifetime(200, headers, NO_DIRECTIVES, NOW, settings)
  t.equal(lifetime({ expires: 'Wed, 01 Jan 2025 12:05:00 GMT' }), 300, 'IMF-fixdate')
  t.equal(lifetime({ expires: 'Wednesday, 01-Jan-25 12:05:00 GMT' }), 300, 'RFC 850')
  t.equal(lifetime({ expires: 'Wed Jan  1 12:05:00 2025' }), 300, 'asctime')
  for (const expires of ['Wed, 01 Jan 2025 12:05:00 UTC', 'Wed 01 Jan 2025 12:05:00 GMT', 'Wed, 01  Jan  2025 12:05:00 GMT', 'Wed, 01-Jan-2025 12:05:00 GMT', 'Wed, 01 Jan 2025 2:05:00 GMT']) {
    t.equal(lifetime({ expires }), 0, `Expires: ${expires} is invalid, so already expired`)
  }
  t.equal(lifetime({ date: 'Wed, 01 Jan 2025 11:00:00 UTC', expires: 'Wed, 01 Jan 2025 12:05:00 GMT' }), 300, 'an invalid Date: the response time stands in')
  t.equal(lifetime({ 'last-modified': 'Wed, 01 Jan 2025 02:00:00 UTC' }), 0, 'an invalid Last-Modified: no heuristic')
  t.equal(correctedInitialAge({ date: 'Wed, 01 Jan 2025 11:00:00 UTC' }, NOW, NOW), 0, 'an invalid Date gives no apparent age')
})

t.test('age: apparent age, Age header and transit delay (§4.2.3)', async (t) => {
  t.equal(correctedInitialAge({}, NOW - 2000, NOW), 2, 'the response delay counts')
  t.equal(correctedInitialAge({ age: '30' }, NOW, NOW), 30)
  t.equal(correctedInitialAge({ date: 'Wed, 01 Jan 2025 11:59:00 GMT', age: '10' }, NOW, NOW), 60, 'the larger of apparent and corrected age')
  t.equal(currentAge(5, NOW, NOW + 3000), 8)
})

t.test('Age (§5.1): the first member counts; one that is not a non-negative integer is ignored', async (t) => {
  for (const invalid of ['abc', '-7200', '7200.0', '1.5', '7200;foo=bar', '+5', '0x10', '']) t.equal(correctedInitialAge({ age: invalid }, NOW, NOW), 0, `Age: ${invalid} is ignored`)
  t.equal(correctedInitialAge({ age: '0, 7200' }, NOW, NOW), 0, 'a list: its first member')
  t.equal(correctedInitialAge({ age: '7200,0' }, NOW, NOW), 7200)
  t.equal(correctedInitialAge({ age: ['0', '7200'] }, NOW, NOW), 0, 'two lines: the first')
  t.equal(correctedInitialAge({ age: ['7200', '0'] }, NOW, NOW), 7200)
  t.equal(correctedInitialAge({ age: ['abc', '7200'] }, NOW, NOW), 0, 'an invalid first member: no Age at all, not the next one')
  t.equal(correctedInitialAge({ age: ' 30 ' }, NOW, NOW), 30)
  t.equal(correctedInitialAge({ age: '99999999999999' }, NOW, NOW), 2 ** 31, 'saturates')
  t.equal(correctedInitialAge({ date: 'Wed, 01 Jan 2025 11:59:00 GMT', age: 'abc' }, NOW, NOW), 60, 'the apparent age still counts')
})
