// One client exchange: route it, run the route's onion, stream the answer back, then write one
// access-log line and the metrics. The plan is read once at the start, so an exchange finishes on
// the plan it started with even if a reload swaps in another meanwhile.
import { STATUS_CODES, validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { AccessLog } from '../telemetry/access-log.js'
import type { CompiledRoute, Plan } from '../config/compile.js'
import type { BodySink, Exchange, ExchangeRecord, ProxyRequest, ProxyResponse, ResponseHeaders, StreamingBody } from '../core/exchange.js'
import { discardResponse, ExchangeSignal, localResponse, newExchangeRecord } from '../core/exchange.js'
import { clientAddress, clientResponseHeaders, requestIdFor, upstreamRequestHeaders } from '../proxy/headers.js'
import { answerForError, ClientGone } from '../proxy/errors.js'
import { normalizePath } from '../routing/normalize-path.js'
import { requestProblem } from './request-checks.js'
import type { Reason } from '../core/reasons.js'

/** What an exchange needs from the gateway around it. */
export interface ExchangeHost {
  readonly plan: Plan
  readonly draining: boolean
  readonly log: Logger
  readonly accessLog: AccessLog
  readonly protocol: 'http' | 'https'
  exchangeStarted(plan: Plan): void
  exchangeEnded(plan: Plan): void
}

function ignore(): void {}

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

  constructor(
    readonly host: ExchangeHost,
    readonly plan: Plan,
    readonly route: CompiledRoute | undefined,
    readonly request: IncomingMessage,
    readonly response: ServerResponse,
    readonly requestId: string,
    readonly path: string,
    readonly authority: string,
  ) {
    this.socket = request.socket
    this.bytesReadAtStart = this.socket.bytesRead
    this.bytesWrittenAtStart = this.socket.bytesWritten
    host.exchangeStarted(plan)
    if (route !== undefined) route.metrics.inFlight++
    response.once('close', this.onClose)
  }

  readonly onClose = (): void => {
    const response = this.response
    const finished = response.writableFinished
    if (!finished) {
      this.signal.abort(new ClientGone())
      this.body?.cancel(this.signal.reason as Error)
    }
    // Not finished: the client left (499), or the upstream cut the body off and we cut the client's (502).
    const status = finished ? response.statusCode : this.record.reason === 'upstream-reset-body' ? 502 : 499
    const seconds = (performance.now() - this.started) / 1000
    const route = this.route
    if (route !== undefined) {
      route.metrics.inFlight--
      route.metrics.observe(this.request.method ?? 'OTHER', status, seconds)
      if (this.record.reason !== '' && status !== 499) route.metrics.local(this.record.reason)
    }
    if (this.plan.settings.accessLog && this.host.accessLog.enabled) this.accessLog(status, seconds)
    this.host.exchangeEnded(this.plan)
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
    })
  }

  /** What a local answer needs when no route (or no exchange) is at hand. */
  bare(): Pick<Exchange, 'route' | 'record'> {
    return { route: this.route?.info ?? UNMATCHED, record: this.record }
  }
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

export function admit(plan: Plan, request: IncomingMessage): Admission {
  const problem = requestProblem(request)
  const target = problem === undefined ? requestTarget(request.url) : undefined
  const authority = target?.authority ?? request.headers.host ?? ''
  const route = target === undefined ? undefined : plan.router.match(request.method ?? '', authority, target.path, request.headers)
  let refusal: Admission['refusal']
  if (problem !== undefined) refusal = problem
  else if (target === undefined) refusal = { status: 400, reason: 'invalid-request-target' }
  else if (route === undefined) refusal = { status: 404, reason: 'no-route' }
  // TRACE echoes the request back, headers (cookies, tokens) included: only where a route asks for it.
  else if (request.method === 'TRACE' && !route.allowsTrace) refusal = { status: 405, reason: 'method-not-allowed', headers: TRACE_ALLOW }
  return { target, authority, route, refusal }
}

/**
 * The request as the route's layers see it. Plain exchanges and upgrades differ only in the last
 * three arguments (one object per request, of one shape for both).
 */
export function proxyRequestOf(
  protocol: ExchangeHost['protocol'],
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
    headers: upstreamRequestHeaders(request, { trustedProxies: plan.settings.trustedProxies, requestId, hostOverride: route.rewriteHost, authority: target.authority, protocol, dropUnderscoreHeaders: plan.settings.dropUnderscoreHeaders }),
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
  const admitted = admit(plan, request)
  const { target, route, refusal } = admitted
  const state = new ExchangeState(host, plan, route, request, response, requestId, target?.path ?? '-', admitted.authority)
  if (refusal !== undefined || target === undefined || route === undefined) {
    const { status, reason, headers } = refusal ?? { status: 400, reason: 'invalid-request-target' as const, headers: undefined }
    return deliver(state, localResponse(status, reason, state.bare(), headers))
  }
  const proxyRequest = proxyRequestOf(host.protocol, plan, request, route, target, admitted.authority, requestId, hasBody(request), expectsContinue ? continueOnce(response) : undefined, interimWriter(request, response), undefined)
  const exchange: Exchange = {
    request: proxyRequest,
    route: route.info,
    log: host.log,
    signal: state.signal,
    attempt: 0,
    record: state.record,
  }
  route.handler(exchange).then(
    (answer) => deliver(state, answer),
    (error: unknown) => {
      if (state.signal.reason instanceof ClientGone) return
      const { status, reason } = answerForError(error)
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
function continueOnce(response: ServerResponse): () => void {
  let sent = false
  return () => {
    if (sent) return
    sent = true
    response.writeContinue()
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
    if (this.state.response.write(chunk)) return true
    if (!this.draining) {
      this.draining = true
      this.state.response.on('drain', () => this.body.resume())
    }
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
