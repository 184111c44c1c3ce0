// One client exchange: route it, run the route's onion, stream the answer back, then write one
// access-log line and the metrics. The plan is read once at the start, so an exchange finishes on
// the plan it started with even if a reload swaps in another meanwhile.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { http } from '../core/node-http.js'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { AccessLog } from '../telemetry/access-log.js'
import type { GatewayMetrics, RouteMetrics } from '../telemetry/metrics.js'
import type { ServerTrace, Tracing } from '../telemetry/tracing-config.js'
import type { CompiledRoute, Plan } from '../config/compile.js'
import type { BodySink, Exchange, ExchangeRecord, ProxyRequest, ProxyResponse, ResponseHeaders, StreamingBody } from '../core/exchange.js'
import { discardResponse, ExchangeSignal, localResponse, newExchangeRecord } from '../core/exchange.js'
import { clientAddress, clientResponseHeaders, originatingClient, requestIdFor, upstreamRequestHeaders } from '../proxy/headers.js'
import { answerForError, ClientGone } from '../proxy/errors.js'
import { ClientTransfer, type ClientGuard } from './client-guard.js'
import { normalizePath } from '../routing/normalize-path.js'
import { requestProblem } from './request-checks.js'
import type { Reason } from '../core/reasons.js'
import type { ConnectionPeer } from './peer.js'

const { STATUS_CODES, validateHeaderName, validateHeaderValue } = http

/** What an exchange needs from the gateway around it. */
export interface ExchangeHost {
  readonly plan: Plan
  readonly draining: boolean
  readonly log: Logger
  readonly accessLog: AccessLog
  /** Where requests no route took are counted (GatewayMetrics.unrouted). */
  readonly metrics: GatewayMetrics
  readonly clients: ClientGuard
  /** What the connection says about its client (scheme, verified certificate, identity), worked out once per connection. */
  peer(socket: Socket): ConnectionPeer
  /** Undefined when tracing is off: then no span, no propagation, nothing else of tracing runs. */
  readonly tracing: Tracing | undefined
  exchangeStarted(plan: Plan): void
  exchangeEnded(plan: Plan): void
}

function ignore(): void {}

/** Why an exchange was ended: its client did not keep up with its body (listen.clients). */
class ClientTooSlow extends Error {
  constructor(readonly reason: 'client-upload-too-slow' | 'client-download-too-slow') {
    super(reason)
    this.name = 'ClientTooSlow'
  }
}

/** A request body the client has not finished sending: watched until it ends, or the exchange does. */
class Upload extends ClientTransfer {
  constructor(private readonly state: ExchangeState) {
    super(state.socket, state.plan.settings.clients)
  }

  protected bytes(): number {
    return this.socket.bytesRead
  }

  /** Data we have not passed on yet: the upstream (or a layer) is the slow one. */
  protected ourSideBehind(): boolean {
    return this.state.request.readableLength > 0
  }

  cut(): void {
    this.state.tooSlow('client-upload-too-slow')
  }
}

/** A response the client is not reading as fast as it comes: watched from a full write to its drain. */
class Download extends ClientTransfer {
  constructor(private readonly state: ExchangeState) {
    super(state.socket, state.plan.settings.clients)
  }

  /** What the socket has handed to the kernel, not what waits in its buffer. */
  protected bytes(): number {
    return this.socket.bytesWritten - this.socket.writableLength
  }

  protected ourSideBehind(): boolean {
    return false
  }

  cut(): void {
    this.state.tooSlow('client-download-too-slow')
  }
}

const UNMATCHED = { name: '-', upstream: '-' }

/**
 * Splits the request target into the normalized path to route on and the target (that path and
 * the query) to send upstream, and for the absolute-form the authority it names, which replaces
 * Host (RFC 9112 §3.2.2). Undefined when the target cannot be parsed or normalized (a 400).
 */
export function requestTarget(url: string | undefined): { path: string; target: string; authority?: string } | undefined {
  if (url === undefined || url === '') return undefined
  if (url.charCodeAt(0) === 47 /* / */) {
    const query = url.indexOf('?')
    const path = normalizePath(query === -1 ? url : url.slice(0, query))
    if (path === undefined) return undefined
    return { path, target: query === -1 ? path : path + url.slice(query) }
  }
  // absolute-form (RFC 9112 §3.2.2): a server must accept it; we route on its path.
  if (url.startsWith('http://') || url.startsWith('https://')) {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return undefined
    }
    const path = normalizePath(parsed.pathname)
    if (path === undefined) return undefined
    return { path, target: path + parsed.search, authority: parsed.host }
  }
  return undefined
}

function rewrite(route: CompiledRoute, target: string): string {
  const prefix = route.rewritePrefix
  if (prefix === undefined) return target
  const rest = target.slice(prefix.from.length)
  if (prefix.to.endsWith('/') && rest.startsWith('/')) return prefix.to + rest.slice(1)
  if (!prefix.to.endsWith('/') && rest !== '' && !rest.startsWith('/') && !rest.startsWith('?')) return `${prefix.to}/${rest}`
  return prefix.to + rest || '/'
}

function hasBody(request: IncomingMessage): boolean {
  const contentLength = request.headers['content-length']
  return request.headers['transfer-encoding'] !== undefined || (contentLength !== undefined && contentLength !== '0')
}

/** The state of one exchange; its `onClose` runs once, when the client response closes. */
class ExchangeState {
  readonly signal = new ExchangeSignal()
  readonly record: ExchangeRecord = newExchangeRecord()
  readonly started = performance.now()
  /** Node detaches the socket from the request when it closes, so keep our own reference. */
  readonly socket: Socket
  readonly bytesReadAtStart: number
  readonly bytesWrittenAtStart: number
  body: StreamingBody | undefined
  error: unknown
  /** The upload or download being watched for a slow client, if any. */
  transfer: ClientTransfer | undefined
  /** The client address counted against `exchangesPerAddress`, when that cap is on. */
  countedAs: string | undefined
  /** The route's series, or those of requests no route took: every exchange is counted. */
  readonly metrics: RouteMetrics
  /** The server span, when tracing is on. */
  trace: ServerTrace | undefined = undefined

  constructor(
    readonly host: ExchangeHost,
    readonly plan: Plan,
    readonly route: CompiledRoute | undefined,
    readonly request: IncomingMessage,
    readonly response: ServerResponse,
    readonly requestId: string,
    readonly path: string,
    readonly authority: string,
    readonly peer: ConnectionPeer,
  ) {
    this.socket = request.socket
    this.bytesReadAtStart = this.socket.bytesRead
    this.bytesWrittenAtStart = this.socket.bytesWritten
    host.exchangeStarted(plan)
    this.metrics = route?.metrics ?? host.metrics.unrouted
    this.metrics.inFlight++
    // 'close' fires once per response: `on` spares the wrapper `once` allocates per exchange.
    response.on('close', this.onClose)
  }

  readonly onClose = (): void => {
    const response = this.response
    const finished = response.writableFinished
    if (!finished) {
      this.signal.abort(new ClientGone())
      this.body?.cancel(this.signal.reason as Error)
    }
    if (this.transfer !== undefined) this.host.clients.unwatch(this.transfer)
    if (this.countedAs !== undefined) this.host.clients.exchangeEnded(this.countedAs)
    const status = finished ? response.statusCode : unfinishedStatus(this.record.reason)
    const seconds = (performance.now() - this.started) / 1000
    const metrics = this.metrics
    metrics.inFlight--
    metrics.observe(this.request.method ?? 'OTHER', status, seconds)
    if (this.record.reason !== '' && status !== 499) metrics.local(this.record.reason)
    if (this.trace !== undefined) this.endTrace(this.trace, status, finished)
    if (this.plan.settings.accessLog && this.host.accessLog.enabled) this.accessLog(status, seconds)
    this.host.exchangeEnded(this.plan)
  }

  private endTrace(trace: ServerTrace, status: number, finished: boolean): void {
    const record = this.record
    trace.end({ status, finished, reason: record.reason, cache: record.cache, attempts: record.attempts, error: this.error === undefined ? undefined : (this.error as Error).message })
  }

  private accessLog(status: number, seconds: number): void {
    const socket = this.socket
    this.host.accessLog.write({
      reqId: this.requestId,
      route: this.route?.info.name ?? '-',
      upstream: this.route?.info.upstream ?? '-',
      endpoint: this.record.endpoint,
      method: this.request.method ?? '-',
      host: this.authority,
      path: this.path,
      status,
      durationMs: seconds * 1e3,
      upstreamMs: this.record.upstreamMs,
      attempts: this.record.attempts,
      tries: this.record.tries,
      bytesIn: socket.bytesRead - this.bytesReadAtStart,
      bytesOut: socket.bytesWritten - this.bytesWrittenAtStart,
      reason: this.record.reason,
      cache: this.record.cache,
      error: this.error === undefined ? undefined : (this.error as Error).message,
      remote: clientAddress(socket),
      tlsVersion: this.peer.tlsVersion,
      tlsCipher: this.peer.tlsCipher,
      traceId: this.trace?.traceId,
      spanId: this.trace?.spanId,
    })
  }

  /** Watches the upload until the request body has arrived (or the exchange ends). */
  watchUpload(): void {
    const request = this.request
    if (request.complete) return
    const upload = new Upload(this)
    this.transfer = upload
    this.host.clients.watch(upload)
    request.once('end', () => {
      if (this.transfer !== upload) return
      this.host.clients.unwatch(upload)
      this.transfer = undefined
    })
  }

  /** A response write the client has not taken: watched until it drains. */
  watchDownload(): void {
    if (this.transfer !== undefined) return
    this.transfer = new Download(this)
    this.host.clients.watch(this.transfer)
  }

  downloadDrained(): void {
    if (!(this.transfer instanceof Download)) return
    this.host.clients.unwatch(this.transfer)
    this.transfer = undefined
  }

  /** The client did not keep up: before the answer, a 408; once it is under way, a cut connection. */
  tooSlow(reason: ClientTooSlow['reason']): void {
    this.transfer = undefined
    const response = this.response
    if (!response.headersSent) {
      this.signal.abort(new ClientTooSlow(reason))
      return
    }
    this.record.reason = reason
    this.error = new ClientTooSlow(reason)
    response.destroy()
  }

  /** What a local answer needs when no route (or no exchange) is at hand. */
  bare(): Pick<Exchange, 'route' | 'record'> {
    return { route: this.route?.info ?? UNMATCHED, record: this.record }
  }
}

/**
 * The status logged for a response that did not finish: the upstream cut the body off and we cut the
 * client's (502), we cut a client that did not keep up (408), or the client left (499).
 */
function unfinishedStatus(reason: Reason | ''): number {
  if (reason === 'upstream-reset-body') return 502
  if (reason === 'client-upload-too-slow' || reason === 'client-download-too-slow') return 408
  return 499
}

const TRACE_ALLOW = { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS' }

/** A request before its route runs: routed, or refused with why. Plain exchanges and upgrades share it. */
export interface Admission {
  readonly target: RequestTarget | undefined
  /** One authority per request, for routing, the upstream Host, the cache key and the log alike. */
  readonly authority: string
  readonly route: CompiledRoute | undefined
  /** Undefined when the request may go on to its route. */
  readonly refusal: { readonly status: number; readonly reason: Reason; readonly headers?: ResponseHeaders } | undefined
}

type RequestTarget = NonNullable<ReturnType<typeof requestTarget>>

export function admit(plan: Plan, request: IncomingMessage, peer: ConnectionPeer): Admission {
  const problem = requestProblem(request)
  const target = problem === undefined ? requestTarget(request.url) : undefined
  const authority = target?.authority ?? request.headers.host ?? ''
  const method = request.method ?? ''
  const route = target === undefined ? undefined : plan.router.match(method, authority, target.path, request.headers, peer.certificate)
  let refusal: Admission['refusal']
  if (problem !== undefined) refusal = problem
  else if (target === undefined) refusal = { status: 400, reason: 'invalid-request-target' }
  // A route would take it with a (different) client certificate: say so, rather than that nothing would.
  else if (route === undefined) refusal = plan.router.wantsOtherCertificate(method, authority, target.path, request.headers) ? { status: 403, reason: 'client-cert-required' } : { status: 404, reason: 'no-route' }
  // TRACE echoes the request back, headers (cookies, tokens) included: only where a route asks for it.
  else if (request.method === 'TRACE' && !route.allowsTrace) refusal = { status: 405, reason: 'method-not-allowed', headers: TRACE_ALLOW }
  return { target, authority, route, refusal }
}

/**
 * The request as the route's layers see it. Plain exchanges and upgrades differ only in the last
 * three arguments (one object per request, of one shape for both).
 */
export function proxyRequestOf(
  peer: ConnectionPeer,
  plan: Plan,
  request: IncomingMessage,
  route: CompiledRoute,
  target: RequestTarget,
  authority: string,
  requestId: string,
  hasBody: boolean,
  sendContinue: ProxyRequest['sendContinue'],
  sendInterim: ProxyRequest['sendInterim'],
  upgrade: ProxyRequest['upgrade'],
): ProxyRequest {
  return {
    method: request.method ?? 'GET',
    path: rewrite(route, target.target),
    target: target.target,
    headers: upstreamRequestHeaders(request, {
      trustedProxies: plan.settings.trustedProxies,
      requestId,
      hostOverride: route.rewriteHost,
      authority: target.authority,
      protocol: peer.protocol,
      dropUnderscoreHeaders: plan.settings.dropUnderscoreHeaders,
      forwardClientCert: plan.settings.forwardClientCert,
      clientCertElement: peer.xfcc,
    }),
    authority,
    incoming: request,
    hasBody,
    requestId,
    sendContinue,
    sendInterim,
    upgrade,
  }
}

export function handleExchange(host: ExchangeHost, request: IncomingMessage, response: ServerResponse, expectsContinue: boolean): void {
  const plan = host.plan
  request.on('error', ignore)
  const requestId = requestIdFor(request.headers['x-request-id'])
  const peer = host.peer(request.socket)
  const admitted = admit(plan, request, peer)
  const { target, route, refusal } = admitted
  const limits = plan.settings.clients
  // Whatever a connection over its address's cap sends is never proxied (it was answered 429).
  if (limits.connectionsPerAddress > 0 && host.clients.isRefused(request.socket)) return void request.socket.destroy()
  const state = new ExchangeState(host, plan, route, request, response, requestId, target?.path ?? '-', admitted.authority, peer)
  const tracing = host.tracing
  if (tracing !== undefined) state.trace = tracing.serverSpan(request, { scheme: peer.protocol, authority: admitted.authority, path: state.path, route: route?.info.name, upstream: route?.info.upstream, peer: clientAddress(request.socket), requestId })
  if (refusal !== undefined || target === undefined || route === undefined) {
    const { status, reason, headers } = refusal ?? { status: 400, reason: 'invalid-request-target' as const, headers: undefined }
    return deliver(state, localResponse(status, reason, state.bare(), headers))
  }
  if (limits.exchangesPerAddress > 0) {
    const client = originatingClient(request, plan.settings.trustedProxies)
    if (!host.clients.exchangeStarted(client, limits.exchangesPerAddress)) return deliver(state, localResponse(429, 'client-exchange-limit', state.bare()))
    state.countedAs = client
  }
  const withBody = hasBody(request)
  // A client that asked for 100 Continue sends nothing until it gets it: watched from then on.
  if (withBody && !expectsContinue) state.watchUpload()
  const proxyRequest = proxyRequestOf(peer, plan, request, route, target, admitted.authority, requestId, withBody, expectsContinue ? continueOnce(state) : undefined, interimWriter(request, response), undefined)
  const exchange: Exchange = {
    request: proxyRequest,
    identity: peer.identity,
    route: route.info,
    log: host.log,
    signal: state.signal,
    attempt: 0,
    record: state.record,
    trace: state.trace,
  }
  route.handler(exchange).then(
    (answer) => deliver(state, answer),
    (error: unknown) => {
      const cause = state.signal.reason
      if (cause instanceof ClientGone) return
      const { status, reason } = cause instanceof ClientTooSlow ? { status: 408, reason: cause.reason } : answerForError(error)
      state.error = error
      deliver(state, localResponse(status, reason, exchange))
    },
  )
}

/** Interim responses one exchange passes on at most: an upstream cannot make the gateway buffer without end. */
const MAX_INTERIM_RESPONSES = 16

/** What ServerResponse has, unlisted in its types, to write raw bytes in this response's place in the connection. */
interface RawWriter {
  _writeRaw(data: string, encoding: BufferEncoding): boolean
}

/**
 * Writes an upstream's 1xx to the client (RFC 9110 §15.2: a proxy forwards them), with the same
 * header mapping as a final response, until the final response's head is written. Never to an
 * HTTP/1.0 client, which a server must not send one to (§15.2). Node has no public call for an
 * arbitrary 1xx: writeContinue, writeProcessing and writeEarlyHints (103 with a Link only) are each
 * built on _writeRaw, which also keeps the bytes behind any earlier pipelined response still being sent.
 */
function interimWriter(request: IncomingMessage, response: ServerResponse): ProxyRequest['sendInterim'] {
  if (request.httpVersionMajor !== 1 || request.httpVersionMinor === 0) return undefined
  let sent = 0
  return (status, headers) => {
    if (response.headersSent || response.destroyed || sent >= MAX_INTERIM_RESPONSES || status < 102 || status > 199) return
    sent++
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Informational'}\r\n`
    const mapped = clientResponseHeaders(headers)
    for (const name in mapped) {
      const value = mapped[name]
      if (value === undefined) continue
      for (const line of Array.isArray(value) ? value : [value]) {
        // undici has parsed these already; a value Node would refuse in a final response is dropped here.
        try {
          validateHeaderName(name)
          validateHeaderValue(name, line)
        } catch {
          continue
        }
        head += `${name}: ${line}\r\n`
      }
    }
    ;(response as unknown as RawWriter)._writeRaw(head + '\r\n', 'latin1')
  }
}

/** Layers may each ask for the body (a retry reads it, then the dispatch sends it): one 100 Continue is enough. */
function continueOnce(state: ExchangeState): () => void {
  let sent = false
  return () => {
    if (sent) return
    sent = true
    state.response.writeContinue()
    state.watchUpload()
  }
}

/** Writes a streaming body into the client response, honouring backpressure both ways. */
class ClientSink implements BodySink {
  private draining = false

  constructor(
    private readonly state: ExchangeState,
    private readonly body: StreamingBody,
    private readonly forwardTrailers: boolean,
  ) {}

  write(chunk: Buffer): boolean {
    const state = this.state
    if (state.response.write(chunk)) return true
    if (!this.draining) {
      this.draining = true
      state.response.on('drain', () => {
        state.downloadDrained()
        this.body.resume()
      })
    }
    state.watchDownload()
    return false
  }

  end(trailers: ResponseHeaders): void {
    const response = this.state.response
    if (this.forwardTrailers) response.addTrailers(trailers as Record<string, string>)
    response.end()
  }

  fail(error: Error): void {
    // Headers are gone already: all we can do is cut the response so the client sees it failed.
    this.state.error = error
    this.state.response.destroy()
  }
}

function deliver(state: ExchangeState, answer: ProxyResponse): void {
  const response = state.response
  if (response.destroyed) {
    discardResponse(answer, new ClientGone())
    return
  }
  // Cache hits are upstream responses too: they get the same hop-by-hop stripping and Via.
  const headers: ResponseHeaders = answer.origin === 'local' ? answer.headers : clientResponseHeaders(answer.headers)
  headers['x-request-id'] = state.requestId
  const trace = state.trace
  if (trace !== undefined && trace.traceResponse !== undefined) headers.traceresponse = trace.traceResponse
  // A request body that was not read to its end (an upload the upstream refused or reset, a local
  // answer) leaves the connection in an unknown place: close it rather than read the next request
  // from the middle of this one's body. And a draining gateway asks every client to go elsewhere.
  if (state.host.draining || (!state.request.complete && hasBody(state.request))) headers.connection = 'close'
  try {
    response.writeHead(answer.status, headers)
  } catch (error) {
    // An upstream header Node refuses to write (invalid characters): fail loudly, not silently.
    discardResponse(answer, error as Error)
    state.error = error
    const fallback = localResponse(502, 'invalid-upstream-header', state.bare())
    response.writeHead(fallback.status, fallback.headers)
    response.end(fallback.body)
    return
  }
  const body = answer.body
  if (body === null) {
    response.end()
    return
  }
  if (Buffer.isBuffer(body)) {
    response.end(body)
    return
  }
  state.body = body
  body.pipe(new ClientSink(state, body, headers.trailer !== undefined))
}
