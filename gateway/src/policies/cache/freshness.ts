// The arithmetic of RFC 9111 for a shared cache: may a response be stored (§3, §3.5), how long it
// stays fresh (§4.2.1, heuristics §4.2.2), and how old it is (§4.2.3). Pure functions over header
// values and clock readings, so they are tested without sockets.
import type { ResponseHeaders } from '../../core/exchange.js'
import type { CacheControl } from './cache-control.js'
import { parseHttpDate } from '../../core/http-date.js'

/** Statuses a cache may store without explicit freshness (RFC 9110 §15.1). 206 is left out: partial responses are not stored (ranges are served from a stored 200). */
export const HEURISTICALLY_CACHEABLE = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])

/** Other statuses whose semantics we know, stored with explicit freshness. */
const UNDERSTOOD_EXPLICITLY = new Set([201, 202, 302, 303, 307, 400, 403, 500, 502, 503, 504])

/** Statuses stored at all (with explicit freshness when not heuristically cacheable). */
function understood(status: number): boolean {
  return status >= 200 && status !== 206 && status !== 304 && status < 600
}

export function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value
}


export interface FreshnessSettings {
  /** Upper bound on any freshness lifetime, in seconds. */
  readonly maxTtlS: number
  /** Freshness for responses without explicit expiry where a heuristic is allowed; undefined: the Last-Modified heuristic. */
  readonly defaultTtlS: number | undefined
  /** Stored even when the request carried Authorization. */
  readonly allowAuthorized: boolean
}

/** Why a response is not stored, or undefined when it may be. */
export function notStorableBecause(status: number, headers: ResponseHeaders, cc: CacheControl, requestCc: CacheControl, authorized: boolean, settings: FreshnessSettings): string | undefined {
  if (!understood(status)) return 'status'
  // must-understand (RFC 9111 §5.2.2.3): store only statuses whose caching rules we know.
  if (cc.mustUnderstand && !HEURISTICALLY_CACHEABLE.has(status) && !UNDERSTOOD_EXPLICITLY.has(status)) return 'must-understand'
  if (cc.noStore || requestCc.noStore) return 'no-store'
  if (cc.private) return 'private'
  // §3.5: a shared cache stores an answer to an authorized request only when the response says so.
  if (authorized && !settings.allowAuthorized && !cc.mustRevalidate && !cc.public && cc.sMaxAge === undefined) return 'authorization'
  if (headerText(headers.vary)?.includes('*') === true) return 'vary-star'
  // Per-user state must not be handed to every client: a choice most shared caches make too.
  if (headers['set-cookie'] !== undefined && !cc.public) return 'set-cookie'
  const explicit = cc.public || cc.maxAge !== undefined || cc.sMaxAge !== undefined || expiresOf(headers, cc) !== undefined
  if (!explicit && !HEURISTICALLY_CACHEABLE.has(status)) return 'no-freshness'
  return undefined
}

/** Expires as it counts: not at all when the directives come from a targeted field (RFC 9213 §2.1). */
function expiresOf(headers: ResponseHeaders, cc: CacheControl): string | string[] | undefined {
  return cc.targeted ? undefined : headers.expires
}

/** The freshness lifetime in seconds (§4.2.1), capped at maxTtl. `responseTime` stands in for a missing Date. */
export function freshnessLifetime(status: number, headers: ResponseHeaders, cc: CacheControl, responseTime: number, settings: FreshnessSettings): number {
  let lifetime: number | undefined
  if (cc.sMaxAge !== undefined) lifetime = cc.sMaxAge
  else if (cc.maxAge !== undefined) lifetime = cc.maxAge
  else if (expiresOf(headers, cc) !== undefined) {
    const expires = parseHttpDate(headers.expires)
    const date = parseHttpDate(headers.date)
    // An invalid Expires (e.g. "0", or a date in a format HTTP does not allow) means already expired (RFC 9111 §5.3).
    lifetime = Number.isNaN(expires) ? 0 : Math.max(0, (expires - (Number.isNaN(date) ? responseTime : date)) / 1000)
  } else if (HEURISTICALLY_CACHEABLE.has(status) || cc.public) {
    lifetime = heuristicLifetime(headers, responseTime, settings)
  }
  return Math.min(lifetime ?? 0, settings.maxTtlS)
}

/** §4.2.2: the configured default, else 10% of the time since Last-Modified; 0 when neither applies. */
function heuristicLifetime(headers: ResponseHeaders, responseTime: number, settings: FreshnessSettings): number {
  if (settings.defaultTtlS !== undefined) return settings.defaultTtlS
  const lastModified = parseHttpDate(headers['last-modified'])
  if (Number.isNaN(lastModified)) return 0
  const date = parseHttpDate(headers.date)
  const base = Number.isNaN(date) ? responseTime : date
  return Math.max(0, (base - lastModified) / 10_000)
}

/** §4.2.3: the age the response had when it arrived, corrected for transit. In seconds. */
export function correctedInitialAge(headers: ResponseHeaders, requestTime: number, responseTime: number): number {
  const date = parseHttpDate(headers.date)
  const apparentAge = Number.isNaN(date) ? 0 : Math.max(0, (responseTime - date) / 1000)
  const responseDelay = (responseTime - requestTime) / 1000
  return Math.max(apparentAge, ageSeconds(headers.age) + responseDelay)
}

/**
 * §5.1: Age's first member (of the first line, when there are several lines or a list); a value that
 * is not a non-negative integer (a float, a sign, a parameter) is ignored, as if there were no Age.
 * Huge values saturate at 2^31 (§1.2.2).
 */
export function ageSeconds(value: string | string[] | undefined): number {
  const first = Array.isArray(value) ? value[0] : value
  if (first === undefined) return 0
  const comma = first.indexOf(',')
  const member = (comma === -1 ? first : first.slice(0, comma)).trim()
  return /^\d+$/.test(member) ? Math.min(Number(member), 2 ** 31) : 0
}

/** Age now, in seconds: corrected initial age plus the time it has been resident. */
export function currentAge(initialAge: number, responseTime: number, now: number): number {
  return initialAge + Math.max(0, now - responseTime) / 1000
}
