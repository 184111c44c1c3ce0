// Header mapping for an HTTP/1.1 intermediary (RFC 9110 §7.6): drop connection-specific fields and
// every field the Connection header names, then add our own forwarding fields. Incoming
// X-Forwarded-* and Forwarded values are kept (and appended to) only from trusted proxies;
// otherwise a client could forge its own address.
import { randomUUID } from 'node:crypto'
import { isIP, type BlockList } from 'node:net'
import type { IncomingMessage } from 'node:http'
import type { ResponseHeaders } from '../core/exchange.js'
import type { ClientCertificate } from '../core/identity.js'
import { rememberLast } from '../core/remember-last.js'

/** RFC 9110 §7.6.1 connection-specific fields, plus legacy ones still seen in the wild. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'upgrade', 'proxy-authorization', 'proxy-authenticate'])
/** Fields we set ourselves on the upstream request (expect: we answer 100-continue ourselves). */
const REPLACED = new Set(['x-request-id', 'expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'via', 'x-forwarded-client-cert'])

const VIA = '1.1 waypost'
const REQUEST_ID = /^[\w.:@/+=-]{1,200}$/

/** Keeps a sane incoming x-request-id (so a trace spans hops), else makes one. */
export function requestIdFor(incoming: string | string[] | undefined): string {
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID()
}

/** Lower-case names listed in Connection (never `host`, which a client must not be able to strip). */
function nominatedByConnection(connection: string | string[] | undefined): Set<string> | undefined {
  // The common values name nothing beyond the hop-by-hop set: skip the Set per message.
  if (connection === undefined || connection === 'keep-alive' || connection === 'close') return undefined
  const names = new Set<string>()
  for (const part of (Array.isArray(connection) ? connection.join(',') : connection).split(',')) {
    const name = part.trim().toLowerCase()
    if (name !== '' && name !== 'host') names.add(name)
  }
  return names.size === 0 ? undefined : names
}

/** The client's address as it should appear in forwarding headers. */
export function clientAddress(socket: { readonly remoteAddress?: string | undefined }): string {
  const address = socket.remoteAddress ?? ''
  return address.startsWith('::ffff:') ? address.slice(7) : address
}

function forwardedNode(address: string): string {
  return address.includes(':') ? `"[${address}]"` : address
}

/** Nearly every request names the same host, and host:port always needs quoting: the last one's is kept. */
const forwardedValue = rememberLast((value: string): string => (/^[!#$%&'*+.^_`|~\w-]+$/.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`))

export interface ForwardingContext {
  readonly trustedProxies: BlockList | undefined
  readonly requestId: string
  readonly hostOverride: string | undefined
  /** Drop request headers whose names hold an underscore (listen.underscoreHeaders). */
  readonly dropUnderscoreHeaders?: boolean
  /** An absolute-form target's authority, which replaces the Host header (RFC 9112 §3.2.2). */
  readonly authority?: string | undefined
  readonly protocol: 'http' | 'https'
  /** What to do with X-Forwarded-Client-Cert (listen.forwardClientCert); default sanitizeSet. */
  readonly forwardClientCert?: ForwardClientCertMode
  /** This connection's XFCC element (xfccElement), when its client certificate was verified. */
  readonly clientCertElement?: string | undefined
}

/** Envoy's forward_client_cert_details, by its names. */
export type ForwardClientCertMode = 'sanitize' | 'forwardOnly' | 'appendForward' | 'sanitizeSet' | 'alwaysForwardOnly'

/** An XFCC value: quoted when it holds a separator (`,` `;` `=`), a quote or a space, as Envoy writes it. */
function xfccValue(value: string, alwaysQuote = false): string {
  if (!alwaysQuote && !/[,;="\\\s]/.test(value)) return value
  return `"${value.replace(/["\\]/g, '\\$&')}"`
}

/**
 * One client's element of X-Forwarded-Client-Cert in Envoy's format:
 * `By=<our URI SAN>;Hash=<SHA-256 of the client's DER, hex>;Subject="<DN>";URI=<each>;DNS=<each>`.
 * Computed once per connection.
 */
export function xfccElement(certificate: ClientCertificate, by: readonly string[]): string {
  let element = ''
  for (const uri of by) element += `By=${xfccValue(uri)};`
  element += `Hash=${certificate.fingerprint};Subject=${xfccValue(certificate.subject, true)}`
  for (const uri of certificate.san.uri) element += `;URI=${xfccValue(uri)}`
  for (const dns of certificate.san.dns) element += `;DNS=${xfccValue(dns)}`
  return element
}

/** The X-Forwarded-Client-Cert to send upstream; `prior` is what a trusted proxy sent ('' when none, or untrusted). */
function forwardedClientCert(mode: ForwardClientCertMode, prior: string, element: string | undefined): string | undefined {
  switch (mode) {
    case 'sanitize':
      return undefined
    case 'sanitizeSet':
      return element
    case 'forwardOnly':
      return element !== undefined && prior !== '' ? prior : undefined
    case 'appendForward':
      return element === undefined ? undefined : prior === '' ? element : `${prior},${element}`
    case 'alwaysForwardOnly':
      return prior === '' ? undefined : prior
  }
}

/** The flat header list for the upstream request. */
export function upstreamRequestHeaders(request: IncomingMessage, context: ForwardingContext): string[] {
  const raw = request.rawHeaders
  const nominated = nominatedByConnection(request.headers.connection)
  const remote = clientAddress(request.socket)
  const trusted = context.trustedProxies !== undefined && remote !== '' && context.trustedProxies.check(remote, remote.includes(':') ? 'ipv6' : 'ipv4')
  const out: string[] = []
  let priorFor = ''
  let priorForwarded = ''
  let priorProto: string | undefined
  let priorHost: string | undefined
  let priorVia = ''
  let priorClientCert = ''
  let host: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    const lower = name.toLowerCase()
    // Fields we derive ourselves come first: Connection cannot nominate them away, so a trusted
    // proxy's X-Forwarded-For chain is kept, and the upstream and the rate limiter read the same client.
    if (REPLACED.has(lower)) {
      if (lower === 'via') priorVia = priorVia === '' ? value : `${priorVia}, ${value}`
      else if (trusted) {
        if (lower === 'x-forwarded-for') priorFor = priorFor === '' ? value : `${priorFor}, ${value}`
        else if (lower === 'forwarded') priorForwarded = priorForwarded === '' ? value : `${priorForwarded}, ${value}`
        else if (lower === 'x-forwarded-proto') priorProto ??= value
        else if (lower === 'x-forwarded-host') priorHost ??= value
        else if (lower === 'x-forwarded-client-cert') priorClientCert = priorClientCert === '' ? value : `${priorClientCert},${value}`
      }
      continue
    }
    if (HOP_BY_HOP.has(lower) || nominated?.has(lower) === true) continue
    if (context.dropUnderscoreHeaders === true && lower.includes('_')) continue
    if (lower === 'host') {
      host ??= value
      if (context.hostOverride !== undefined || context.authority !== undefined) continue
    }
    out.push(name, value)
  }
  const sentHost = context.hostOverride ?? context.authority
  if (sentHost !== undefined) out.push('host', sentHost)
  // The host the client asked for: the absolute-form authority wins over its Host header.
  if (context.authority !== undefined) host = context.authority
  const proto = priorProto ?? context.protocol
  const forwardedHost = priorHost ?? host
  out.push('x-request-id', context.requestId)
  out.push('x-forwarded-for', priorFor === '' ? remote : `${priorFor}, ${remote}`)
  out.push('x-forwarded-proto', proto)
  if (forwardedHost !== undefined) out.push('x-forwarded-host', forwardedHost)
  let element = `for=${forwardedNode(remote)};proto=${context.protocol}`
  if (host !== undefined) element += `;host=${forwardedValue(host)}`
  out.push('forwarded', priorForwarded === '' ? element : `${priorForwarded}, ${element}`)
  out.push('via', priorVia === '' ? VIA : `${priorVia}, ${VIA}`)
  const clientCert = forwardedClientCert(context.forwardClientCert ?? 'sanitizeSet', priorClientCert, context.clientCertElement)
  if (clientCert !== undefined) out.push('x-forwarded-client-cert', clientCert)
  return out
}

/** A response's end-to-end headers: connection-specific ones dropped (what a cache may store, RFC 9111 §3.1). */
export function endToEndHeaders(upstream: ResponseHeaders): ResponseHeaders {
  const nominated = nominatedByConnection(upstream.connection)
  const out: ResponseHeaders = {}
  for (const name in upstream) {
    if (HOP_BY_HOP.has(name) || nominated?.has(name) === true) continue
    out[name] = upstream[name]
  }
  return out
}

/** Response headers for the client: upstream's minus connection-specific ones, plus Via. */
export function clientResponseHeaders(upstream: ResponseHeaders): ResponseHeaders {
  const out = endToEndHeaders(upstream)
  const via = upstream.via
  out.via = via === undefined ? VIA : `${Array.isArray(via) ? via.join(', ') : via}, ${VIA}`
  return out
}

/**
 * The address of the client behind any trusted proxies: the peer itself unless it is trusted, else
 * the right-most X-Forwarded-For entry that is not a trusted proxy (left-most entries are whatever
 * the client chose to send, so they cannot be believed).
 */
export function originatingClient(request: IncomingMessage, trustedProxies: BlockList | undefined): string {
  const peer = clientAddress(request.socket)
  if (trustedProxies === undefined || !isTrusted(trustedProxies, peer)) return peer
  const forwardedFor = request.headers['x-forwarded-for']
  if (forwardedFor === undefined) return peer
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',')
  let client = peer
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!.trim()
    if (hop === '') continue
    client = hop
    if (!isTrusted(trustedProxies, hop)) break
  }
  return client
}

function isTrusted(trustedProxies: BlockList, address: string): boolean {
  return address !== '' && isIP(address) !== 0 && trustedProxies.check(address, address.includes(':') ? 'ipv6' : 'ipv4')
}
