// Range requests answered from a complete stored response (RFC 9110 §14): one byte range gets a
// 206 with its slice, an unsatisfiable one a 416; several ranges, another unit or a malformed
// header get the whole 200, which a server may always send instead (§14.2). If-Range (§13.1.5)
// asks for the range only while the stored response is the one the client has part of.
import { parseHttpDate } from '../../core/http-date.js'
import type { ResponseHeaders } from '../../core/exchange.js'
import { headerText } from './freshness.js'

export type RangeAnswer = { readonly start: number; readonly end: number } | 'unsatisfiable' | undefined

/** One `bytes=` range of a body of `length` bytes: inclusive offsets, 'unsatisfiable', or undefined (ignore the header). */
export function byteRange(header: string | undefined, length: number): RangeAnswer {
  if (header === undefined) return undefined
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  // Another unit, a malformed header, or several ranges (a comma): the whole response instead.
  if (match === null) return undefined
  const [, firstText, lastText] = match as unknown as [string, string, string]
  if (firstText === '') {
    // A suffix: the last N bytes.
    if (lastText === '') return undefined
    const suffix = Number(lastText)
    if (suffix === 0 || length === 0) return 'unsatisfiable'
    return { start: Math.max(0, length - suffix), end: length - 1 }
  }
  const first = Number(firstText)
  const last = lastText === '' ? Infinity : Number(lastText)
  if (last < first) return undefined
  if (first >= length) return 'unsatisfiable'
  return { start: first, end: Math.min(last, length - 1) }
}

/**
 * Whether If-Range lets the range be served from this stored response (RFC 9110 §13.1.5): an
 * entity tag matches only a strong, identical ETag; a date only a Last-Modified equal to it that is
 * a strong validator (at least a second before the response's Date, §8.8.2.2). No If-Range: yes.
 */
export function ifRangeHolds(ifRange: string | undefined, stored: ResponseHeaders): boolean {
  if (ifRange === undefined) return true
  const condition = ifRange.trim()
  if (condition.startsWith('"') || condition.startsWith('W/')) {
    const etag = headerText(stored.etag)
    return !condition.startsWith('W/') && etag !== undefined && !etag.startsWith('W/') && etag === condition
  }
  const since = parseHttpDate(condition)
  const lastModified = parseHttpDate(stored['last-modified'])
  const date = parseHttpDate(stored.date)
  return !Number.isNaN(since) && lastModified === since && !Number.isNaN(date) && date - lastModified >= 1000
}
