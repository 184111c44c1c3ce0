// Who may call a mutating admin endpoint (POST /reload, /cache/purge and every later one). Read-only
// endpoints stay open, so kubelet probes work when the admin port listens on the pod IP.
// - A web page must not reach them from a browser on the same machine: a cross-site request
//   carries an Origin that is not the admin port's own, and a DNS-rebinding page a Host that is a
//   name, not an address or localhost. Both are refused.
// - The caller must be on loopback (the pod's own containers, `kubectl port-forward`) or present
//   the admin token as `Authorization: Bearer TOKEN`, compared in constant time.
import { isIP } from 'node:net'
import type { IncomingMessage } from 'node:http'
import { checkOperator, type SecretSource } from '../core/operator.js'

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

/** Undefined when the request may proceed; else why not, as the answer to give. */
export async function refuseMutation(request: IncomingMessage, token: SecretSource | undefined): Promise<Refusal | undefined> {
  const host = request.headers.host ?? ''
  const name = hostName(host)
  if (name !== 'localhost' && isIP(name) === 0) {
    return { status: 403, error: `Host "${host}" is not an IP address or localhost: mutating admin endpoints refuse names (DNS rebinding)` }
  }
  const origin = request.headers.origin
  if (origin !== undefined && origin !== `http://${host}`) {
    return { status: 403, error: 'a cross-origin request (a web page) may not call mutating admin endpoints' }
  }
  const operator = await checkOperator(request, token)
  if (operator.ok) return undefined
  return { status: operator.status, error: operator.status === 403 ? `mutating admin endpoints answer ${operator.error}` : operator.error, headers: operator.headers }
}
