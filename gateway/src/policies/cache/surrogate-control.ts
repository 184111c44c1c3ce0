// Surrogate-Control (W3C Edge Architecture Specification 1.0): the origin's instructions for
// gateway caches, as opposed to Cache-Control, which is for every cache down to the browser. A
// directive is for us when it is untargeted or targeted at our device token (`max-age=60;waypost`);
// the origin learns the token from the Surrogate-Capability request header we add on the way up.
// When the header holds directives for us they alone decide storage and freshness, as in the CDNs
// that honour it; and they are removed before the response goes on, leaving the other devices' ones.
import { directives, parseCacheControl, type CacheControl } from './cache-control.js'
import { headerText } from './freshness.js'
import type { ResponseHeaders } from '../../core/exchange.js'

export const DEVICE_TOKEN = 'waypost'
/** Sent upstream on every request the cache forwards (appended to any downstream surrogate's). */
export const SURROGATE_CAPABILITY = `${DEVICE_TOKEN}="Surrogate/1.0"`

interface Split {
  /** Our directives, without their target. */
  readonly ours: string[]
  /** The rest, as they came. */
  readonly others: string[]
}

function split(value: string): Split {
  const ours: string[] = []
  const others: string[] = []
  for (const raw of directives(value)) {
    const part = raw.trim()
    if (part === '') continue
    const semicolon = part.lastIndexOf(';')
    // A ';' inside a quoted argument (content="a;b") is not a target.
    const target = semicolon === -1 || part.indexOf('"', semicolon) !== -1 ? undefined : part.slice(semicolon + 1).trim().toLowerCase()
    if (target === undefined) ours.push(part)
    else if (target === DEVICE_TOKEN) ours.push(part.slice(0, semicolon))
    else others.push(part)
  }
  return { ours, others }
}

/** The directives of Surrogate-Control for us, or undefined when there are none (Cache-Control decides then). */
export function surrogateDirectives(headers: ResponseHeaders): CacheControl | undefined {
  const surrogate = headerText(headers['surrogate-control'])
  return surrogate === undefined ? undefined : fromSurrogate(split(surrogate).ours)
}

/**
 * `max-age=N[+M]` gives the freshness (as s-maxage would), `no-store` forbids storing; the rest
 * (`content=`, `no-store-remote`) is not ours to act on. Undefined when none of the two is there.
 */
function fromSurrogate(ours: readonly string[]): CacheControl | undefined {
  const kept: string[] = []
  for (const directive of ours) {
    const equals = directive.indexOf('=')
    const name = (equals === -1 ? directive : directive.slice(0, equals)).trim().toLowerCase()
    // The `+M` extension (how long past max-age it may be served when the origin is down) is not supported.
    if (name === 'max-age') kept.push(`s-maxage=${directive.slice(equals + 1).trim().split('+', 1)[0]}`)
    else if (name === 'no-store') kept.push('no-store')
  }
  return kept.length === 0 ? undefined : parseCacheControl(kept.join(','))
}

/** Takes our directives out of the response's Surrogate-Control before it leaves; a header left empty goes. */
export function stripOurSurrogateControl(headers: ResponseHeaders): void {
  const surrogate = headerText(headers['surrogate-control'])
  if (surrogate === undefined) return
  const { ours, others } = split(surrogate)
  if (ours.length === 0) return
  if (others.length === 0) delete headers['surrogate-control']
  else headers['surrogate-control'] = others.join(', ')
}
