// Upgrade requests (WebSocket and others): routed like any request, then handed to the proxy core.
// The route's request timeout bounds the handshake only; the upgraded stream lives until either side closes.
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { requestIdFor, upstreamRequestHeaders, clientAddress } from '../proxy/headers.js'
import { proxyUpgrade } from '../proxy/upgrade.js'
import { answerForError } from '../proxy/errors.js'
import { requestTarget, type ExchangeHost } from './exchange.js'

const HANDSHAKE_TIMEOUT_MS = 30_000

function refuse(socket: Duplex, status: string, reason: string): void {
  if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\nx-waypost-reason: ${reason}\r\n\r\n`)
  else socket.destroy()
}

export function handleUpgrade(host: ExchangeHost & { trackUpgrade(socket: Duplex): void }, request: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => socket.destroy())
  const plan = host.plan
  const started = performance.now()
  const requestId = requestIdFor(request.headers['x-request-id'])
  const target = requestTarget(request.url)
  const authority = target?.authority ?? request.headers.host ?? ''
  const route = target === undefined ? undefined : plan.router.match(request.method ?? '', authority, target.path, request.headers)
  let endpoint = ''
  const log = (status: number, reason = '', error?: unknown): void => {
    if (!plan.settings.accessLog || !host.accessLog.enabled) return
    host.accessLog.write({
      reqId: requestId,
      route: route?.info.name ?? '-',
      upstream: route?.info.upstream ?? '-',
      endpoint,
      method: request.method ?? '-',
      host: authority,
      path: target?.path ?? '-',
      status,
      durationMs: performance.now() - started,
      upstreamMs: -1,
      attempts: route === undefined ? 0 : 1,
      tries: '',
      bytesIn: 0,
      bytesOut: 0,
      reason,
      cache: '',
      error: (error as Error | undefined)?.message,
      remote: clientAddress(socket as { remoteAddress?: string }),
      upgrade: request.headers.upgrade,
    })
  }
  if (target === undefined || route === undefined) {
    const reason = target === undefined ? 'invalid-request-target' : 'no-route'
    refuse(socket, target === undefined ? '400 Bad Request' : '404 Not Found', `${reason} route=- upstream=-`)
    log(target === undefined ? 400 : 404, reason)
    return
  }
  // The handshake goes to one endpoint, picked like any attempt; the upgraded stream is not counted
  // in its in-flight load (it may live for hours) nor reported to outlier detection.
  const picked = route.endpoints.pick(null)
  if (picked === null) {
    refuse(socket, '503 Service Unavailable', `no-endpoints route=${route.info.name} upstream=${route.info.upstream}`)
    log(503, 'no-endpoints')
    return
  }
  endpoint = picked.address
  host.exchangeStarted(plan)
  const headers = upstreamRequestHeaders(request, { trustedProxies: plan.settings.trustedProxies, requestId, hostOverride: route.rewriteHost, authority: target.authority, protocol: host.protocol, dropUnderscoreHeaders: plan.settings.dropUnderscoreHeaders })
  const signal = AbortSignal.timeout(HANDSHAKE_TIMEOUT_MS)
  proxyUpgrade(picked.pool, { method: request.method ?? 'GET', path: target.target, headers, protocol: request.headers.upgrade ?? 'websocket', signal }, socket, head).then(
    () => {
      host.trackUpgrade(socket)
      route.metrics.observe(request.method ?? 'GET', 101, (performance.now() - started) / 1000)
      log(101)
    },
    (error: unknown) => {
      const { status, reason } = answerForError(error)
      const detail = `${reason === 'upstream-reset' ? 'upgrade-refused' : reason} route=${route.info.name} upstream=${route.info.upstream}`
      refuse(socket, status === 504 ? '504 Gateway Timeout' : '502 Bad Gateway', detail)
      route.metrics.observe(request.method ?? 'GET', status, (performance.now() - started) / 1000)
      log(status, reason, error)
    },
  ).finally(() => host.exchangeEnded(plan))
}
