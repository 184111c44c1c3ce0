// Who counts as an operator of this gateway: a caller on loopback (the pod's own containers,
// `kubectl port-forward`) or one presenting the admin token as `Authorization: Bearer TOKEN`,
// compared in constant time. The admin API's mutating endpoints and a route's PURGE both ask it.
import { readFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

/** The admin token: the value itself, a file holding it (a mounted Secret, read at each use) or an environment variable. */
export type SecretSource = string | { file: string } | { env: string }

export type OperatorCheck =
  | { readonly ok: true }
  | { readonly ok: false; readonly status: number; readonly error: string; readonly headers?: Record<string, string> }

const ALLOWED: OperatorCheck = { ok: true }
const CHALLENGE = { 'www-authenticate': 'Bearer realm="waypost-admin"' }

export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address
  return plain === '::1' || (isIP(plain) === 4 && plain.startsWith('127.'))
}

async function secretValue(source: SecretSource): Promise<string | undefined> {
  if (typeof source === 'string') return source
  if ('env' in source) return process.env[source.env] || undefined
  try {
    return (await readFile(source.file, 'utf8')).trim() || undefined
  } catch {
    return undefined
  }
}

function sameSecret(presented: string, expected: string): boolean {
  const a = Buffer.from(presented)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

export async function checkOperator(request: IncomingMessage, token: SecretSource | undefined): Promise<OperatorCheck> {
  if (isLoopback(request.socket.remoteAddress)) return ALLOWED
  if (token === undefined) return { ok: false, status: 403, error: 'loopback callers only, unless admin.token is configured' }
  const authorization = request.headers.authorization
  const presented = authorization?.startsWith('Bearer ') === true ? authorization.slice(7).trim() : undefined
  if (presented === undefined) return { ok: false, status: 401, error: 'send the admin token: Authorization: Bearer TOKEN', headers: CHALLENGE }
  const expected = await secretValue(token)
  if (expected === undefined) return { ok: false, status: 503, error: 'the admin token is configured but cannot be read (admin.token file or env)' }
  if (!sameSecret(presented, expected)) return { ok: false, status: 401, error: 'wrong admin token', headers: CHALLENGE }
  return ALLOWED
}
