// What the gateway refuses before routing, as strictly as nginx does: framing it will not guess at
// (a Transfer-Encoding other than `chunked` alone, Transfer-Encoding on HTTP/1.0), a protocol
// version the HTTP/1 parser does not speak, and a Host that is not a host.
import type { IncomingMessage } from 'node:http'
import type { Reason } from '../core/reasons.js'
import { rememberLast } from '../core/remember-last.js'

export interface RequestProblem {
  readonly status: number
  readonly reason: Reason
}

/** A uri-host with an optional port: no path, query, fragment, user info or white space. */
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[^\s/?#@[\]]+)(:\d{0,5})?$/
/** Nearly every request repeats the last one's Host: it is checked again only when it changes. */
const isHost = rememberLast((host: string) => HOST.test(host))

export function requestProblem(request: IncomingMessage): RequestProblem | undefined {
  const version = request.httpVersion
  if (version !== '1.1' && version !== '1.0') return { status: 505, reason: 'http-version-not-supported' }
  const transferEncoding = request.headers['transfer-encoding']
  if (transferEncoding !== undefined) {
    if (version === '1.0') return { status: 400, reason: 'transfer-encoding-on-http-1.0' }
    if (transferEncoding.trim().toLowerCase() !== 'chunked') return { status: 501, reason: 'unsupported-transfer-encoding' }
  }
  const host = request.headers.host
  if (host !== undefined && !isHost(host)) return { status: 400, reason: 'invalid-host' }
  return undefined
}
