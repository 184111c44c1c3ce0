// Targeted cache-control fields (RFC 9213): CDN-Cache-Control, or the field a route names instead,
// carries Cache-Control directives for this cache alone. It is a Structured Field Dictionary, parsed
// strictly: a field that does not parse, or is empty, is ignored (§2.1). Otherwise it alone decides
// storage and freshness: Cache-Control, Expires and Surrogate-Control are ignored for this cache,
// and go on for the caches after us. The field itself is removed before the response goes on.
import { parseDictionary } from '../../core/structured-field.js'
import type { ResponseHeaders } from '../../core/exchange.js'
import { parseCacheControl, type CacheControl } from './cache-control.js'
import { stripOurSurrogateControl, surrogateDirectives } from './surrogate-control.js'

export const DEFAULT_TARGETED_HEADER = 'CDN-Cache-Control'

/** Directives whose value is delta-seconds: an Integer here (a Decimal or a String is not consumed, §2.1). */
const SECONDS = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error'])
/** Directives without a value: Boolean true. */
const FLAGS = new Set(['no-store', 'must-revalidate', 'proxy-revalidate', 'public', 'must-understand'])
/** Directives that take either no value or a String of field names (treated as unqualified, as in Cache-Control). */
const FLAGS_OR_FIELDS = new Set(['no-cache', 'private'])

/**
 * The directives of a targeted field, or undefined when it is absent, empty or invalid. Members
 * of an unexpected type are skipped (§2.1: not consumed); parameters are ignored; unknown
 * directives (e.g. `none`, which RFC 9213 uses to say "store, no directive") count as a value.
 */
export function targetedDirectives(value: string | string[] | undefined): CacheControl | undefined {
  const members = parseDictionary(value)
  if (members === undefined || members.size === 0) return undefined
  const directives: string[] = []
  for (const [name, member] of members) {
    const item = member.value
    if (!('type' in item)) continue
    if (SECONDS.has(name)) {
      if (item.type === 'integer' && item.value >= 0) directives.push(`${name}=${item.value}`)
    } else if (FLAGS.has(name)) {
      if (item.type === 'boolean' && item.value) directives.push(name)
    } else if (FLAGS_OR_FIELDS.has(name)) {
      if ((item.type === 'boolean' && item.value) || item.type === 'string') directives.push(name)
    }
  }
  return { ...parseCacheControl(directives.join(', ')), targeted: true }
}

/**
 * The directives the cache acts on for this response: the targeted field's when valid and
 * non-empty (RFC 9213 §2.1), else Surrogate-Control's for us, else Cache-Control's.
 * `targetedHeader` is lower case.
 */
export function responseDirectives(headers: ResponseHeaders, targetedHeader: string): CacheControl {
  return targetedDirectives(headers[targetedHeader]) ?? surrogateDirectives(headers) ?? parseCacheControl(headers['cache-control'])
}

/** Takes what was for us out of a response before it leaves: the targeted field, our Surrogate-Control directives. */
export function stripOurControls(headers: ResponseHeaders, targetedHeader: string): void {
  if (headers[targetedHeader] !== undefined) delete headers[targetedHeader]
  stripOurSurrogateControl(headers)
}
