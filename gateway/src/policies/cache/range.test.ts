// Byte ranges and If-Range (RFC 9110 §14, §13.1.5) without sockets.
import t from 'tap'
import { byteRange, ifRangeHolds } from './range.js'

t.test('one byte range: first-last, open-ended, suffix; clamped to the body', async (t) => {
  t.same(byteRange('bytes=0-9', 100), { start: 0, end: 9 })
  t.same(byteRange('bytes=90-', 100), { start: 90, end: 99 })
  t.same(byteRange('bytes=-10', 100), { start: 90, end: 99 })
  t.same(byteRange('bytes=-1000', 100), { start: 0, end: 99 }, 'a suffix longer than the body is all of it')
  t.same(byteRange('bytes=50-1000', 100), { start: 50, end: 99 })
  t.same(byteRange('Bytes = 5 - 6', 100), { start: 5, end: 6 }, 'the unit is case-insensitive; spaces are tolerated')
})

t.test('unsatisfiable: 416', async (t) => {
  t.equal(byteRange('bytes=100-', 100), 'unsatisfiable')
  t.equal(byteRange('bytes=200-300', 100), 'unsatisfiable')
  t.equal(byteRange('bytes=-0', 100), 'unsatisfiable')
  t.equal(byteRange('bytes=0-', 0), 'unsatisfiable', 'nothing to take a range of')
})

t.test('ignored (the whole 200): several ranges, other units, malformed', async (t) => {
  for (const header of ['bytes=0-1,5-6', 'items=0-1', 'bytes=5-2', 'bytes=-', 'bytes=a-b', 'bytes 0-1', undefined]) t.equal(byteRange(header, 100), undefined, String(header))
})

t.test('If-Range: a strong, identical ETag, or the exact Last-Modified when it is a strong validator', async (t) => {
  const stored = { etag: '"v1"', 'last-modified': 'Wed, 01 Jan 2025 10:00:00 GMT', date: 'Wed, 01 Jan 2025 12:00:00 GMT' }
  t.ok(ifRangeHolds(undefined, stored))
  t.ok(ifRangeHolds('"v1"', stored))
  t.notOk(ifRangeHolds('"v2"', stored))
  t.notOk(ifRangeHolds('W/"v1"', stored), 'a weak tag never matches')
  t.notOk(ifRangeHolds('"v1"', { etag: 'W/"v1"' }), 'nor a weak stored tag')
  t.ok(ifRangeHolds('Wed, 01 Jan 2025 10:00:00 GMT', stored))
  t.notOk(ifRangeHolds('Wed, 01 Jan 2025 10:00:01 GMT', stored), 'only the exact date')
  t.notOk(ifRangeHolds('Wed, 01 Jan 2025 10:00:00 UTC', stored), 'not an HTTP-date')
  t.notOk(ifRangeHolds('Wed, 01 Jan 2025 12:00:00 GMT', { 'last-modified': 'Wed, 01 Jan 2025 12:00:00 GMT', date: 'Wed, 01 Jan 2025 12:00:00 GMT' }), 'a Last-Modified as late as Date is weak')
  t.notOk(ifRangeHolds('Wed, 01 Jan 2025 10:00:00 GMT', { 'last-modified': 'Wed, 01 Jan 2025 10:00:00 GMT' }), 'no Date: not known to be strong')
})
