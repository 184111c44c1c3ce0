// Cache-Control (RFC 9111 §5.2) as the cache reads it: the directives it acts on, parsed once per
// message. Unknown directives are ignored (§5.2.3); a directive with an invalid number is treated
// as absent for max-stale (which then means "any"), and as 0 for the others, the cautious reading.

export interface CacheControl {
  readonly noStore: boolean
  readonly noCache: boolean
  readonly private: boolean
  readonly public: boolean
  readonly mustRevalidate: boolean
  readonly proxyRevalidate: boolean
  readonly onlyIfCached: boolean
  readonly mustUnderstand: boolean
  /** Seconds, or undefined when absent. */
  readonly maxAge: number | undefined
  readonly sMaxAge: number | undefined
  readonly minFresh: number | undefined
  /** Seconds; Infinity for a bare `max-stale` (any staleness). */
  readonly maxStale: number | undefined
  readonly staleWhileRevalidate: number | undefined
  readonly staleIfError: number | undefined
  /** From a targeted field (RFC 9213): Expires is ignored too. */
  readonly targeted: boolean
}

type MutableCacheControl = { -readonly [K in keyof CacheControl]: CacheControl[K] }

export const NO_DIRECTIVES: CacheControl = Object.freeze(blank())

function blank(): MutableCacheControl {
  return {
    noStore: false,
    noCache: false,
    private: false,
    public: false,
    mustRevalidate: false,
    proxyRevalidate: false,
    onlyIfCached: false,
    mustUnderstand: false,
    maxAge: undefined,
    sMaxAge: undefined,
    minFresh: undefined,
    maxStale: undefined,
    staleWhileRevalidate: undefined,
    staleIfError: undefined,
    targeted: false,
  }
}

/** delta-seconds (§1.2.2): digits only; anything else is invalid. Huge values saturate. */
function deltaSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const unquoted = value.length > 1 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value
  if (!/^\d+$/.test(unquoted)) return undefined
  return Math.min(Number(unquoted), 2 ** 31)
}

/** Splits on commas outside quoted strings (a `no-cache="a, b"` field list must stay whole). */
export function directives(text: string): string[] {
  if (!text.includes('"')) return text.split(',')
  const parts: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 34 /* " */) quoted = !quoted
    else if (c === 44 /* , */ && !quoted) {
      parts.push(text.slice(start, i))
      start = i + 1
    }
  }
  parts.push(text.slice(start))
  return parts
}

export function parseCacheControl(header: string | string[] | undefined): CacheControl {
  if (header === undefined || header === '') return NO_DIRECTIVES
  const text = Array.isArray(header) ? header.join(',') : header
  const out = blank()
  for (const part of directives(text)) {
    const equals = part.indexOf('=')
    const name = (equals === -1 ? part : part.slice(0, equals)).trim().toLowerCase()
    const argument = equals === -1 ? undefined : part.slice(equals + 1).trim()
    switch (name) {
      case 'no-store':
        out.noStore = true
        break
      case 'no-cache':
        out.noCache = true
        break
      case 'private':
        out.private = true
        break
      case 'public':
        out.public = true
        break
      case 'must-revalidate':
        out.mustRevalidate = true
        break
      case 'proxy-revalidate':
        out.proxyRevalidate = true
        break
      case 'only-if-cached':
        out.onlyIfCached = true
        break
      case 'must-understand':
        out.mustUnderstand = true
        break
      case 'max-age':
        // A repeated or invalid max-age makes the response stale (§4.2.1): take the cautious 0.
        out.maxAge = out.maxAge === undefined ? (deltaSeconds(argument) ?? 0) : 0
        break
      case 's-maxage':
        out.sMaxAge = out.sMaxAge === undefined ? (deltaSeconds(argument) ?? 0) : 0
        break
      case 'min-fresh':
        out.minFresh = deltaSeconds(argument) ?? 0
        break
      case 'max-stale':
        out.maxStale = argument === undefined ? Infinity : (deltaSeconds(argument) ?? Infinity)
        break
      case 'stale-while-revalidate':
        out.staleWhileRevalidate = deltaSeconds(argument)
        break
      case 'stale-if-error':
        out.staleIfError = deltaSeconds(argument)
        break
    }
  }
  return out
}
