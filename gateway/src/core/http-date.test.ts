// HTTP-date (RFC 9110 §5.6.7): the three formats, and the near misses Date.parse would accept.
import t from 'tap'
import { parseHttpDate } from './http-date.js'

const AUG_18_2050 = Date.UTC(2050, 7, 18, 2, 1, 18)
const NOW = Date.UTC(2026, 11, 1, 12, 0, 0)

t.test('the three formats', async (t) => {
  t.equal(parseHttpDate('Thu, 18 Aug 2050 02:01:18 GMT'), AUG_18_2050, 'IMF-fixdate')
  t.equal(parseHttpDate('Thursday, 18-Aug-50 02:01:18 GMT', NOW), AUG_18_2050, 'RFC 850')
  t.equal(parseHttpDate('Thu Aug 18 02:01:18 2050'), AUG_18_2050, 'asctime')
  t.equal(parseHttpDate('Mon Aug  8 02:01:18 2050'), Date.UTC(2050, 7, 8, 2, 1, 18), 'asctime pads a one-digit day with a space')
  t.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), Date.UTC(1994, 10, 6, 8, 49, 37))
  t.equal(parseHttpDate(['Sun, 06 Nov 1994 08:49:37 GMT']), Date.UTC(1994, 10, 6, 8, 49, 37), 'one header line')
  t.equal(parseHttpDate('Wed, 31 Dec 2025 23:59:60 GMT'), Date.UTC(2026, 0, 1, 0, 0, 0), 'a leap second')
  t.equal(parseHttpDate('Mon, 01 Jan 0001 00:00:00 GMT'), new Date('0001-01-01T00:00:00Z').getTime(), 'a year below 100 is that year')
})

t.test('names match case-insensitively, as RFC 9111 §4.2 asks of a cache', async (t) => {
  t.equal(parseHttpDate('THU, 18 Aug 2050 02:01:18 GMT'), AUG_18_2050)
  t.equal(parseHttpDate('Thu, 18 AUG 2050 02:01:18 GMT'), AUG_18_2050)
  t.equal(parseHttpDate('Thu, 18 Aug 2050 02:01:18 gmt'), AUG_18_2050)
})

t.test('RFC 850 two-digit years: never more than 50 years ahead', async (t) => {
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', NOW), Date.UTC(1994, 10, 6, 8, 49, 37), '94 in 2026 is 1994')
  t.equal(parseHttpDate('Friday, 01-Jan-76 00:00:00 GMT', NOW), Date.UTC(2076, 0, 1), 'under 50 years ahead: this century')
  t.equal(parseHttpDate('Thursday, 31-Dec-76 23:59:59 GMT', NOW), Date.UTC(1976, 11, 31, 23, 59, 59), 'over 50 years ahead: the last century')
  t.equal(parseHttpDate('Tuesday, 29-Feb-00 00:00:00 GMT', NOW), Date.UTC(2000, 1, 29), 'a 29 February of a leap year the next century lacks')
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', Date.UTC(2090, 0, 1)), Date.UTC(2094, 10, 6, 8, 49, 37), 'read in 2090, 94 is 2094')
})

t.test('near misses are invalid (NaN), though Date.parse reads most of them', async (t) => {
  const invalid = [
    'Thu, 18 Aug 2050 02:01:18 UTC',
    'Thu, 18 Aug 2050 02:01:18 AEST',
    'Thu, 18 Aug 2050 02:01:18 +0000',
    'Thu 18 Aug 2050 02:01:18 GMT',
    'Thu, 18  Aug  2050 02:01:18 GMT',
    'Thu, 18-Aug-2050 02:01:18 GMT',
    'Thu, 18 Aug 2050 02.01.18 GMT',
    'Thu, 18 Aug 2050 2:01:18 GMT',
    'Thu, 18 Aug 50 02:01:18 GMT',
    'Thu, 8 Aug 2050 02:01:18 GMT',
    'Tue 19 Jan 2038 14:14:08 GMT',
    '2050-08-18T02:01:18Z',
    'Thursday, 18-Aug-2050 02:01:18 GMT',
    'Thu, 18-Aug-50 02:01:18 GMT',
    'Thu Aug 18 02:01:18 2050 GMT',
    'Thu Aug 8 02:01:18 2050',
    'Thu, 18 Aug 2050',
    '0',
    '',
  ]
  for (const text of invalid) {
    t.ok(Number.isNaN(parseHttpDate(text, NOW)), `"${text}" is not an HTTP-date`)
  }
})

t.test('out-of-range fields and several values are invalid', async (t) => {
  for (const text of ['Sat, 31 Feb 2026 00:00:00 GMT', 'Thu, 00 Jan 2026 00:00:00 GMT', 'Thu, 01 Jan 2026 24:00:00 GMT', 'Thu, 01 Jan 2026 00:60:00 GMT', 'Thu, 01 Jan 2026 00:00:61 GMT']) {
    t.ok(Number.isNaN(parseHttpDate(text)), text)
  }
  t.notOk(Number.isNaN(Date.parse('Sat, 31 Feb 2026 00:00:00 GMT')), 'Date.parse rolls 31 Feb over into March')
  t.ok(Number.isNaN(parseHttpDate(['Thu, 18 Aug 2050 02:01:18 GMT', 'Thu, 18 Aug 2050 02:01:19 GMT'])), 'two header lines')
  t.ok(Number.isNaN(parseHttpDate('Thu, 18 Aug 2050 02:01:18 GMT, Thu, 18 Aug 2050 02:01:19 GMT')), 'a list')
  t.ok(Number.isNaN(parseHttpDate(undefined)), 'absent')
})
