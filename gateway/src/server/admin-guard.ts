// Who may call a mutating admin endpoint (POST /reload, /cache/purge and every later one). Read-only
// endpoints stay open, so kubelet probes work when the admin port listens on the pod IP.
// - A web page must not reach them from a browser on the same machine: a cross-site request
//   carries an Origin that is not the admin port's own, and a DNS-rebinding page a Host that is a
//   name, not an address or localhost. Both are refused.
// - The caller must be on loopback (the pod's own containers, `kubectl port-forward`) or present
//   the admin token as `Authorization: Bearer TOKEN`, compared in constant time.
import { readFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { AdminToken } from '../config/schema.js'

export interface Refusal {
  readonly status: number
  readonly error: string
  readonly headers?: Record<string, string>
}

/** The host name in a Host header ('[::1]:9901' → '::1'), lower case. */
function hostName(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']')).toLowerCase()
  const colon = host.indexOf(':')
  return (colon === -1 ? host : host.slice(0, colon)).toLowerCase()
}

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address
  return plain === '::1' || (isIP(plain) === 4 && plain.startsWith('127.'))
}

async function tokenValue(source: AdminToken): Promise<string | undefined> {
  if (typeof source === 'string') return source
  if ('env' in source) return process.env[source.env] || undefined
  try {
    return (await readFile(source.file, 'utf8')).trim() || undefined
  } catch {
    return undefined
  }
}

function sameToken(presented: string, expected: string): boolean {
  const a = Buffer.from(presented)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Undefined when the request may proceed; else why not, as the answer to give. */
export async function refuseMutation(request: IncomingMessage, token: AdminToken | undefined): Promise<Refusal | undefined> {
  const host = request.headers.host ?? ''
  const name = hostName(host)
  if (name !== 'localhost' && isIP(name) === 0) {
    return { status: 403, error: `Host "${host}" is not an IP address or localhost: mutating admin endpoints refuse names (DNS rebinding)` }
  }
  const origin = request.headers.origin
  if (origin !== undefined && origin !== `http://${host}`) {
    return { status: 403, error: 'a cross-origin request (a web page) may not call mutating admin endpoints' }
  }
  if (isLoopback(request.socket.remoteAddress)) return undefined
  const challenge = { 'www-authenticate': 'Bearer realm="waypost-admin"' }
  if (token === undefined) return { status: 403, error: 'mutating admin endpoints answer loopback callers only, unless admin.token is configured' }
  const authorization = request.headers.authorization
  const presented = authorization?.startsWith('Bearer ') === true ? authorization.slice(7).trim() : undefined
  if (presented === undefined) return { status: 401, error: 'send the admin token: Authorization: Bearer TOKEN', headers: challenge }
  const expected = await tokenValue(token)
  if (expected === undefined) return { status: 503, error: 'the admin token is configured but cannot be read (admin.token file or env)' }
  if (!sameToken(presented, expected)) return { status: 401, error: 'wrong admin token', headers: challenge }
  return undefined
}
