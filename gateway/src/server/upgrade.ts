// Upgrade requests (WebSocket and others): routed like any request and run through the route's
// layers (rate limit, concurrency, breaker, and soon authentication apply to handshakes too); the
// dispatch performs the handshake and splices the sockets. The request timeout bounds the
// handshake only; the upgraded stream lives until either side closes.
import type { IncomingMessage } from 'node:http'
import { http } from '../core/node-http.js'
import type { Duplex } from 'node:stream'
import { requestIdFor, clientAddress } from '../proxy/headers.js'
import { answerForError, ClientGone } from '../proxy/errors.js'
import { ExchangeSignal, newExchangeRecord, type Exchange, type ProxyResponse } from '../core/exchange.js'
import { admit, proxyRequestOf, type ExchangeHost } from './exchange.js'
import type { Socket } from 'node:net'

const { STATUS_CODES } = http

function refuse(socket: Duplex, status: string, reason: string): void {
  if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\nx-waypost-reason: ${reason}\r\n\r\n`)
  else socket.destroy()
}

/** A layer's local answer (429, 503 ...) written on the raw socket, which then closes. */
function answerLocally(socket: Duplex, response: ProxyResponse): void {
  if (!socket.writable) return void socket.destroy()
  const body = Buffer.isBuffer(response.body) ? response.body : Buffer.alloc(0)
  let head = `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? ''}\r\n`
  for (const [name, value] of Object.entries(response.headers)) {
    if (value === undefined || name === 'content-length' || name === 'connection') continue
    for (const item of Array.isArray(value) ? value : [value]) head += `${name}: ${item}\r\n`
  }
  socket.end(Buffer.concat([Buffer.from(`${head}content-length: ${body.length}\r\nconnection: close\r\n\r\n`), body]))
}

export function handleUpgrade(host: ExchangeHost & { trackUpgrade(socket: Duplex): void }, request: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => socket.destroy())
  const plan = host.plan
  const started = performance.now()
  const requestId = requestIdFor(request.headers['x-request-id'])
  // The socket of an upgrade is the connection's own (TLS or not), as for any request.
  const peer = host.peer(socket as Socket)
  const admitted = admit(plan, request, peer)
  const { target, authority, route, refusal } = admitted
  const record = newExchangeRecord()
  const trace = host.tracing?.serverSpan(request, { scheme: peer.protocol, authority, path: target?.path ?? '-', route: route?.info.name, upstream: route?.info.upstream, peer: clientAddress(request.socket), requestId })
  // Every outcome ends in log(): the span ends there too (a 101's span at the handshake, not when the stream closes).
  const log = (status: number, error?: unknown): void => {
    trace?.end({ status, finished: status !== 499, reason: record.reason, cache: '', attempts: record.attempts, error: (error as Error | undefined)?.message })
    if (!plan.settings.accessLog || !host.accessLog.enabled) return
    host.accessLog.write({
      reqId: requestId,
      route: route?.info.name ?? '-',
      upstream: route?.info.upstream ?? '-',
      endpoint: record.endpoint,
      method: request.method ?? '-',
      host: authority,
      path: target?.path ?? '-',
      status,
      durationMs: performance.now() - started,
      upstreamMs: record.upstreamMs,
      attempts: record.attempts,
      tries: record.tries,
      bytesIn: 0,
      bytesOut: 0,
      reason: record.reason,
      cache: '',
      error: (error as Error | undefined)?.message,
      remote: clientAddress(socket as { remoteAddress?: string }),
      upgrade: request.headers.upgrade,
      tlsVersion: peer.tlsVersion,
      tlsCipher: peer.tlsCipher,
      traceId: trace?.traceId,
      spanId: trace?.spanId,
    })
  }
  if (refusal !== undefined || target === undefined || route === undefined) {
    const { status, reason } = refusal ?? { status: 400, reason: 'invalid-request-target' as const }
    record.reason = reason
    refuse(socket, `${status} ${STATUS_CODES[status] ?? ''}`, `${reason} route=- upstream=-`)
    const unrouted = host.metrics.unrouted
    unrouted.observe(request.method ?? 'GET', status, (performance.now() - started) / 1000)
    unrouted.local(reason)
    log(status)
    return
  }
  const proxyRequest = proxyRequestOf(peer, plan, request, route, target, authority, requestId, false, undefined, undefined, {
    socket,
    head,
    protocol: request.headers.upgrade ?? 'websocket',
  })
  const signal = new ExchangeSignal()
  const clientGone = (): void => signal.abort(new ClientGone())
  socket.once('close', clientGone)
  const exchange: Exchange = { request: proxyRequest, identity: peer.identity, route: route.info, log: host.log, signal, attempt: 0, record, trace }
  host.exchangeStarted(plan)
  const observe = (status: number): void => route.metrics.observe(request.method ?? 'GET', status, (performance.now() - started) / 1000)
  route.handler(exchange)
    .then(
      (response) => {
        socket.off('close', clientGone)
        if (response.status === 101) {
          host.trackUpgrade(socket)
          observe(101)
          log(101)
          return
        }
        // A layer answered instead (429, 503 breaker-open, a fault): the handshake never went upstream.
        if (record.reason !== '') route.metrics.local(record.reason)
        answerLocally(socket, response)
        observe(response.status)
        log(response.status)
      },
      (error: unknown) => {
        socket.off('close', clientGone)
        if (signal.reason instanceof ClientGone) return log(499, error)
        const { status, reason } = answerForError(error)
        record.reason = reason === 'upstream-reset' ? 'upgrade-refused' : reason
        refuse(socket, `${status} ${STATUS_CODES[status] ?? ''}`, `${record.reason} route=${route.info.name} upstream=${route.info.upstream}`)
        observe(status)
        log(status, error)
      },
    )
    .finally(() => host.exchangeEnded(plan))
}
