// HTTP-date (RFC 9110 §5.6.7) read strictly: the three formats HTTP allows and nothing else.
// `Date.parse` accepts far more (`UTC`, a missing comma, doubled spaces, `18-Aug-2050`, a one-digit
// hour, local time zones), and a cache that reads those as dates extends a response's life where
// the RFC has it expired (RFC 9111 §5.3: an invalid Expires means already expired).
//
// Names are matched case-insensitively: RFC 9110 makes HTTP-date case-sensitive, but RFC 9111 §4.2
// asks a cache recipient to match case-insensitively. The day name is not checked against the date.

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']
const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)'
const DAY_LONG = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)'
const MONTH = '(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)'
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})'
/** IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`. */
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`, 'i')
/** Obsolete RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`. */
const RFC_850 = new RegExp(`^${DAY_LONG}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`, 'i')
/** asctime(): `Sun Nov  6 08:49:37 1994` (a one-digit day is padded with a space). */
const ASCTIME = new RegExp(`^${DAY} ${MONTH} (\\d{2}| \\d) ${TIME} (\\d{4})$`, 'i')

/** Ms since the epoch of a UTC calendar time, or NaN when a field is out of range (31 Feb, 24:00:00). */
function utc(year: number, monthName: string, day: number, hour: number, minute: number, second: number): number {
  const month = MONTHS.indexOf(monthName.toLowerCase())
  // Second 60 is a leap second (RFC 9110 §5.6.7); it is read as the next minute's first.
  if (hour > 23 || minute > 59 || second > 60 || day < 1) return NaN
  const date = new Date(0)
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0–99 as 1900–1999.
  date.setUTCFullYear(year, month, day)
  if (date.getUTCMonth() !== month) return NaN
  date.setUTCHours(hour, minute, second, 0)
  return date.getTime()
}

/**
 * RFC 850's two-digit year: the year with those last digits that is not more than 50 years in the
 * future (RFC 9110 §5.6.7: one that appears more than 50 years ahead is the most recent past year
 * with the same last two digits).
 */
function rfc850(twoDigits: number, monthName: string, day: number, hour: number, minute: number, second: number, now: number): number {
  const current = new Date(now).getUTCFullYear()
  const limit = new Date(now)
  limit.setUTCFullYear(current + 50)
  // The latest candidate not past the limit; a 29 Feb is looked for in the candidate years that have one.
  for (let year = current - (current % 100) + twoDigits + 100; year > current - 100; year -= 100) {
    const time = utc(year, monthName, day, hour, minute, second)
    if (time <= limit.getTime()) return time
  }
  return NaN
}

/**
 * An HTTP-date in ms since the epoch, or NaN when absent or not one of the three formats. Several
 * values (header lines, or a list) are invalid: every field that carries a date is a singleton.
 * `now` places RFC 850's two-digit years.
 */
export function parseHttpDate(value: string | readonly string[] | undefined, now = Date.now()): number {
  if (value === undefined || typeof value !== 'string') return value?.length === 1 ? parseHttpDate(value[0], now) : NaN
  // Leading and trailing whitespace is not part of a field value (RFC 9110 §5.5); parsers drop it already.
  const text = value.replace(/^[ \t]+|[ \t]+$/g, '')
  let match = IMF_FIXDATE.exec(text)
  if (match !== null) return utc(Number(match[3]), match[2]!, Number(match[1]), Number(match[4]), Number(match[5]), Number(match[6]))
  match = RFC_850.exec(text)
  if (match !== null) return rfc850(Number(match[3]), match[2]!, Number(match[1]), Number(match[4]), Number(match[5]), Number(match[6]), now)
  match = ASCTIME.exec(text)
  if (match !== null) return utc(Number(match[6]), match[1]!, Number(match[2]!.trim()), Number(match[3]), Number(match[4]), Number(match[5]))
  return NaN
}
