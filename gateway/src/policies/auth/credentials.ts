// Finding a credential in the request (Authorization: Bearer, a header, a cookie, a query
// parameter) and taking it out of what is forwarded. A credential sent twice is refused rather
// than guessed at: the gateway would check one copy and the upstream might read the other.
import type { IncomingMessage } from 'node:http'
import type { ProxyRequest } from '../../core/exchange.js'

/** Where a credential is read: `bearer`, a header, a cookie or a query parameter. */
export type Source = 'bearer' | { readonly header: string } | { readonly cookie: string } | { readonly query: string }

export type Found =
  | { readonly kind: 'found'; readonly value: string; readonly source: Source }
  | { readonly kind: 'duplicate'; readonly source: Source }
  | { readonly kind: 'malformed'; readonly source: Source }

/** RFC 6750 §2.1: b64token. */
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

/** Every value of one header as it arrived (Node keeps only the first Authorization in `headers`). */
function headerValues(incoming: IncomingMessage, lowerName: string): string[] {
  const raw = incoming.rawHeaders
  const values: string[] = []
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === lowerName.length && raw[i]!.toLowerCase() === lowerName) values.push(raw[i + 1]!)
  return values
}

function cookieValues(incoming: IncomingMessage, name: string): string[] {
  const header = incoming.headers.cookie
  if (header === undefined) return []
  const values: string[] = []
  for (const pair of header.split(';')) {
    const equals = pair.indexOf('=')
    if (equals === -1) continue
    if (pair.slice(0, equals).trim() === name) values.push(pair.slice(equals + 1).trim())
  }
  return values
}

/** The query's raw `name=value` parts (of the client's normalized target). */
function queryParts(target: string): string[] {
  const mark = target.indexOf('?')
  return mark === -1 ? [] : target.slice(mark + 1).split('&')
}

function decodeComponent(text: string): string | undefined {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '))
  } catch {
    return undefined
  }
}

function queryValues(target: string, name: string): string[] {
  const values: string[] = []
  for (const part of queryParts(target)) {
    const equals = part.indexOf('=')
    const key = decodeComponent(equals === -1 ? part : part.slice(0, equals))
    if (key === name) values.push(decodeComponent(equals === -1 ? '' : part.slice(equals + 1)) ?? '')
  }
  return values
}

function valuesAt(request: ProxyRequest, source: Source): string[] {
  if (source === 'bearer') return headerValues(request.incoming, 'authorization')
  if ('header' in source) return headerValues(request.incoming, source.header.toLowerCase())
  if ('cookie' in source) return cookieValues(request.incoming, source.cookie)
  return queryValues(request.target, source.query)
}

/** The first source that holds a credential; undefined when none does. */
export function findCredential(request: ProxyRequest, sources: readonly Source[]): Found | undefined {
  for (const source of sources) {
    const values = valuesAt(request, source)
    if (values.length === 0) continue
    if (values.length > 1) return { kind: 'duplicate', source }
    const value = values[0]!
    if (source === 'bearer') {
      const match = BEARER.exec(value)
      // Another scheme (Basic, an admin's Bearer for something else...) is not this method's credential.
      if (match === null) {
        if (/^bearer\b/i.test(value)) return { kind: 'malformed', source }
        continue
      }
      return { kind: 'found', value: match[1]!, source }
    }
    if (value === '') return { kind: 'malformed', source }
    return { kind: 'found', value, source }
  }
  return undefined
}

/** A compact JWS: three base64url parts (the signature may be empty, as `alg: none` makes it). */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)
}

/** The request as it goes on, without the credential: header or cookie removed, query parameter dropped from the path. */
export function withoutCredential(request: ProxyRequest, source: Source): ProxyRequest {
  if (source !== 'bearer' && 'query' in source) return { ...request, path: withoutQueryParameter(request.path, source.query) }
  const name = source === 'bearer' ? 'authorization' : 'header' in source ? source.header.toLowerCase() : 'cookie'
  const headers: string[] = []
  const list = request.headers
  for (let i = 0; i < list.length; i += 2) {
    const header = list[i]!
    if (header.toLowerCase() !== name) {
      headers.push(header, list[i + 1]!)
      continue
    }
    if (source !== 'bearer' && 'cookie' in source) {
      const rest = list[i + 1]!.split(';').filter((pair) => pair.slice(0, Math.max(0, pair.indexOf('='))).trim() !== source.cookie)
      if (rest.length > 0) headers.push(header, rest.join(';').trim())
    }
  }
  return { ...request, headers }
}

/** `path` without every occurrence of query parameter `name`, the other parameters kept byte for byte. */
export function withoutQueryParameter(path: string, name: string): string {
  const mark = path.indexOf('?')
  if (mark === -1) return path
  const kept = path
    .slice(mark + 1)
    .split('&')
    .filter((part) => {
      const equals = part.indexOf('=')
      return decodeComponent(equals === -1 ? part : part.slice(0, equals)) !== name
    })
  return kept.length === 0 ? path.slice(0, mark) : `${path.slice(0, mark)}?${kept.join('&')}`
}

/**
 * A claim's value as a header value: strings, numbers and booleans as they are, lists joined with
 * commas, anything else (objects) as JSON; bytes outside printable ASCII percent-encoded, so a
 * claim can never smuggle a line break (a header of its own) or be refused by the HTTP client.
 */
export function headerValue(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined
  const text = Array.isArray(value) ? value.map((item) => (typeof item === 'string' ? item : JSON.stringify(item))).join(',') : typeof value === 'object' ? JSON.stringify(value) : String(value)
  return /^[\x20-\x7e]*$/.test(text) ? text : text.replace(/[^\x20-\x7e]+/g, (run) => encodeURIComponent(run))
}
