// The exchange contract every other folder stands on (see docs/architecture.md): the request as it
// goes upstream, the response and its streaming body, the record the access log reads, cancellation,
// and the Upstream/Layer shapes a route's onion is built from. Imports nothing of ours but core.
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { systemClock, type Clock } from './clock.js'
import type { Reason } from './reasons.js'
import type { Identity } from './identity.js'

/** The request as it will be sent upstream: headers already mapped (hop-by-hop stripped, forwarded set). */
export interface ProxyRequest {
  readonly method: string
  /** Path and query as sent upstream (after any route rewrite). */
  readonly path: string
  /** The client's request target, normalized: path and query before any route rewrite (the cache keys on it). */
  readonly target: string
  /**
   * The authority the request is for: an absolute-form target's, else the Host header ('' when
   * neither). Routing, the upstream Host, the cache key and the access log all use this one.
   */
  readonly authority: string
  /** Flat [name, value, name, value, ...] list, as undici accepts; keeps duplicates and order. */
  readonly headers: string[]
  /** The client's request: the body stream, the socket, and the original headers. */
  readonly incoming: IncomingMessage
  /** Whether the client sent a body (content-length > 0 or transfer-encoding). */
  readonly hasBody: boolean
  /** The body read into memory by a layer that may send it more than once (retries); else `incoming` streams. */
  readonly body?: Buffer
  readonly requestId: string
  /** Sends `100 Continue` once, when the client asked for it and a layer is about to read the body. */
  readonly sendContinue: (() => void) | undefined
  /**
   * Passes an upstream's interim (1xx) response, such as 103 Early Hints, on to the client while the
   * final one is awaited; it does nothing once the final response has begun. Undefined where no
   * client may get one: an HTTP/1.0 client, an upgrade, a request the gateway makes on its own.
   */
  readonly sendInterim: ((status: number, headers: ResponseHeaders) => void) | undefined
  /**
   * An Upgrade request (WebSocket): it runs through the route's layers like any request, and the
   * dispatch performs the handshake and splices the sockets; its 101's body ends when they close.
   */
  readonly upgrade?: UpgradeRequest
}

export interface UpgradeRequest {
  readonly socket: Duplex
  /** What the client sent past the request head (already read from the socket). */
  readonly head: Buffer
  /** The Upgrade header's protocol ("websocket"). */
  readonly protocol: string
}

export type ResponseHeaders = Record<string, string | string[] | undefined>

/** Where a streaming body goes: the client response, or a layer that inspects or keeps it. */
export interface BodySink {
  /** Returns false when the sink is full: the body pauses until `resume()` is called. */
  write(chunk: Buffer): boolean
  /** The body ended; `trailers` holds HTTP trailers when the upstream sent any. */
  end(trailers: ResponseHeaders): void
  /** The body failed midway (for example the upstream reset the connection). */
  fail(error: Error): void
}

/**
 * A response body that flows straight from the upstream socket into one sink, with backpressure.
 * Not a Node stream: on the hot path, Readable's buffering and events cost more than the proxying.
 */
export interface StreamingBody {
  /** Starts the flow into `sink`; chunks that arrived before are delivered first. Called once. */
  pipe(sink: BodySink): void
  /** The sink has room again. */
  resume(): void
  /** Abandons the body (the client left, a layer discarded it); the upstream request is cancelled. */
  cancel(reason: Error): void
  /** Runs `listener` once the body has ended, failed or been cancelled (at once if it already has). */
  onDone(listener: () => void): void
}

export interface ProxyResponse {
  readonly status: number
  readonly headers: ResponseHeaders
  /** A streaming body from the upstream, a buffer for local answers and cache hits, null for none. */
  readonly body: StreamingBody | Buffer | null
  /** 'cache': a stored upstream response, delivered with the same header mapping as 'upstream'. */
  readonly origin: 'upstream' | 'local' | 'cache'
}

/** Facts about one exchange that layers record and the access log reads; shared by derived exchanges. */
export interface ExchangeRecord {
  attempts: number
  /** Milliseconds from dispatch to response headers of the last attempt; -1 when none was made. */
  upstreamMs: number
  /** Why a layer answered locally or an attempt failed: `timeout`, `concurrency-limit`, ... */
  reason: Reason | ''
  /** Outcome of each attempt when there were several ("503,connect-refused,200"); empty otherwise. */
  tries: string
  /**
   * The endpoints this exchange's attempts went to, so the next attempt (a retry) avoids them where
   * the upstream has others. Opaque to layers; null until an upstream with several endpoints is used.
   */
  tried: object[] | null
  /** Address of the endpoint the last attempt went to (e.g. "http://10.0.0.7:8080"); '' when none. */
  endpoint: string
  /** The response cache's result (hit, stale-while-revalidate, stale-if-error, max-stale, revalidated, miss, bypass); '' when no cache looked. */
  cache: string
}

/** A record before any layer has written to it. */
export function newExchangeRecord(): ExchangeRecord {
  return { attempts: 0, upstreamMs: -1, reason: '', tries: '', tried: null, endpoint: '', cache: '' }
}

export interface RouteInfo {
  readonly name: string
  readonly upstream: string
}

export interface Exchange {
  readonly request: ProxyRequest
  /** Who the client is (core/identity.ts): anonymous, a client certificate, or what authentication proved. */
  readonly identity: Identity
  readonly route: RouteInfo
  readonly log: Logger
  /** Aborted when the client goes away or a deadline passes; every layer must honour it. */
  readonly signal: ExchangeSignal
  readonly attempt: number
  readonly record: ExchangeRecord
  /**
   * The exchange's server span when tracing is on; undefined when off. Layers note their decisions
   * with `exchange.trace?.event(...)`: when off that is one property read, the attributes never built.
   */
  readonly trace?: ExchangeTrace | undefined
}

/** Span attributes and event attributes: OpenTelemetry's primitive values. */
export type TraceAttributes = Readonly<Record<string, string | number | boolean>>

/**
 * What the layers and the dispatch see of an exchange's trace (telemetry/tracing.ts implements it).
 * Event names in use: `waypost.cache`, `waypost.rate_limit`, `waypost.breaker`, `waypost.retry`,
 * and `waypost.auth` for the authentication policy; attributes are named `waypost.<event>.<field>`.
 */
export interface ExchangeTrace {
  /** A decision a layer made (cache result, breaker state, rate-limit decision, auth), on the server span. */
  event(name: string, attributes?: TraceAttributes): void
  /**
   * A client span for one upstream attempt to `upstream`, a child of the server span; a retry
   * (`exchange.attempt` > 0) is noted on the server span with the previous attempt's outcome.
   */
  startAttempt(exchange: Exchange, upstream: string): AttemptTrace
}

/** One upstream attempt's client span. */
export interface AttemptTrace {
  /**
   * `headers` (the request's flat list) with the trace context replaced by this span's: exactly one
   * `traceparent`, and B3 in the form the client sent it.
   */
  headers(headers: readonly string[]): string[]
  /** The endpoint the attempt went to ("http://10.0.0.7:8080"). */
  sentTo(endpoint: string): void
  /** The upstream's status; the span ends with `end()` once the body is done. */
  answered(status: number): void
  /** Failed before a response: `reason` is the gateway's classification (connect-refused, ...). */
  failed(reason: string, error: unknown): void
  end(): void
}

export type Upstream = (exchange: Exchange) => Promise<ProxyResponse>
export type Layer = (next: Upstream) => Upstream

/**
 * Calls the next layer for a layer that chains on the promise with `.then()` (no async function: on
 * the hot path one reaction costs less than a suspended async frame). A synchronous throw, which
 * would be a bug below, still arrives as a rejection, so the caller's cleanup runs.
 */
export function callNext(next: Upstream, exchange: Exchange): Promise<ProxyResponse> {
  try {
    return next(exchange)
  } catch (error) {
    return Promise.reject(error as Error)
  }
}

/** A local answer: every one carries a machine-readable reason in a header and in the access log. */
export function localResponse(status: number, reason: Reason, exchange: Pick<Exchange, 'route' | 'record'>, extraHeaders?: ResponseHeaders): ProxyResponse {
  const detail = `${reason} route=${exchange.route.name} upstream=${exchange.route.upstream}`
  exchange.record.reason = reason
  return {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'x-waypost-reason': detail, ...extraHeaders },
    body: Buffer.from(`${status} ${detail}\n`),
    origin: 'local',
  }
}

export interface AbortListener {
  onAbort(reason: unknown): void
}

/**
 * Cancellation for one exchange (or one attempt). It does what an AbortSignal does for us at a
 * fraction of the cost: no EventTarget, no event objects, listeners kept in a plain array and
 * usually just one (the upstream dispatch). A child signal aborts with its parent, or alone.
 */
export class ExchangeSignal implements AbortListener {
  aborted = false
  reason: unknown = undefined
  private listeners: AbortListener[] | null = null

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listeners = this.listeners
    this.listeners = null
    if (listeners !== null) for (const listener of listeners) listener.onAbort(reason)
  }

  /** Calls the listener on abort, at once when already aborted. */
  subscribe(listener: AbortListener): void {
    if (this.aborted) listener.onAbort(this.reason)
    else (this.listeners ??= []).push(listener)
  }

  unsubscribe(listener: AbortListener): void {
    const listeners = this.listeners
    if (listeners === null) return
    const index = listeners.indexOf(listener)
    if (index !== -1) listeners.splice(index, 1)
  }

  /** As a listener: a child signal aborts with its parent. */
  onAbort(reason: unknown): void {
    this.abort(reason)
  }
}

/** The reason a deadline aborted an exchange; layers below see it as `signal.reason`. */
export class DeadlineExceeded extends Error {
  constructor(readonly reason: Reason, readonly afterMs: number) {
    super(`${reason} after ${afterMs}ms`)
    this.name = 'DeadlineExceeded'
  }
}

/** Calls `done` once the response has been fully delivered or abandoned. */
export function onResponseDone(response: ProxyResponse, done: () => void): void {
  const body = response.body
  if (body === null || Buffer.isBuffer(body)) done()
  else body.onDone(done)
}

/** Abandons a response a layer will not deliver. */
export function discardResponse(response: ProxyResponse, reason: Error): void {
  const body = response.body
  if (body !== null && !Buffer.isBuffer(body)) body.cancel(reason)
}

/** Waits `ms` on `clock`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal: ExchangeSignal, clock: Clock = systemClock): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason as Error)
  return new Promise((resolve, reject) => {
    const listener: AbortListener = {
      onAbort(reason) {
        clock.clearTimeout(timer)
        reject(reason as Error)
      },
    }
    const timer = clock.setTimeout(() => {
      signal.unsubscribe(listener)
      resolve()
    }, ms)
    signal.subscribe(listener)
  })
}

/**
 * The request without the headers named in `names` (lower-case): the same object when it has none
 * of them, so the common case allocates nothing.
 */
export function withoutRequestHeaders(request: ProxyRequest, names: ReadonlySet<string>): ProxyRequest {
  const headers = request.headers
  let first = -1
  for (let i = 0; i < headers.length; i += 2) {
    if (names.has(headers[i]!.toLowerCase())) {
      first = i
      break
    }
  }
  if (first === -1) return request
  const kept = headers.slice(0, first)
  for (let i = first; i < headers.length; i += 2) {
    const name = headers[i]!
    if (!names.has(name.toLowerCase())) kept.push(name, headers[i + 1]!)
  }
  return { ...request, headers: kept }
}
