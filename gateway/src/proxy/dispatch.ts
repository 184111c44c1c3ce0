// The innermost layer: pick an endpoint of the upstream, send the exchange to its pool and hand back
// the streaming response. It speaks undici's dispatch-handler API directly (what `pool.request()`
// wraps) and hands body chunks straight to the sink that delivers them, pausing the upstream socket
// when the sink is full: one handler object per request, no AsyncResource, AbortSignal or Readable.
// Each attempt's outcome (status, or a failure before headers) goes back to the endpoint group for
// outlier detection, and the endpoint counts the attempt in flight until its body is done.
import type { Dispatcher } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'
import { DeadlineExceeded, onResponseDone, type UpgradeRequest, type AbortListener, type BodySink, type Exchange, type ExchangeRecord, type ExchangeSignal, type ProxyRequest, type ProxyResponse, type ResponseHeaders, type StreamingBody, type Upstream } from '../core/exchange.js'
import type { EndpointGroup } from './upstream/group.js'
import type { Endpoint } from './upstream/endpoint.js'
import { answerForError, NoEndpoints, withTlsCause } from './errors.js'
import { proxyUpgrade } from './upgrade.js'

type Controller = Dispatcher.DispatchController

/** Chunks that arrive before the sink is attached are held; the upstream pauses beyond this. */
const EARLY_BUFFER_LIMIT = 64 * 1024

class ResponseHandler implements Dispatcher.DispatchHandler, AbortListener, StreamingBody {
  private controller: Controller | null = null
  private started = false
  private sink: BodySink | null = null
  private early: Buffer[] | null = null
  private earlyBytes = 0
  private trailers: ResponseHeaders | null = null
  private error: Error | null = null
  private done = false
  private doneListeners: Array<() => void> | null = null
  private released = false
  /** A layer (or the client leaving) abandoned the body: an error after that is not the upstream's. */
  private cancelled = false
  /** A status below 500, reported to outlier detection when the body has ended; 0 when none. */
  private goodStatus = 0
  private readonly sentAt = performance.now()

  constructor(
    private readonly signal: ExchangeSignal,
    private readonly record: ExchangeRecord,
    private readonly group: EndpointGroup,
    private readonly endpoint: Endpoint,
    private readonly resolve: (response: ProxyResponse) => void,
    private readonly reject: (error: unknown) => void,
    private readonly sendInterim: ProxyRequest['sendInterim'],
  ) {}

  // ---- cancellation from the exchange (client gone, deadline)
  onAbort(reason: unknown): void {
    this.controller?.abort(reason as Error)
  }

  // ---- undici's side
  onRequestStart(controller: Controller): void {
    this.controller = controller
    if (this.signal.aborted) controller.abort(this.signal.reason as Error)
    else this.signal.subscribe(this)
  }

  onResponseStart(_controller: Controller, statusCode: number, headers: IncomingHttpHeaders): void {
    // 1xx: the final response follows. undici reports each interim response here (100 and 101 it
    // handles itself); they go on to the client and are never the exchange's response.
    if (statusCode < 200) {
      this.sendInterim?.(statusCode, headers)
      return
    }
    this.started = true
    const ms = performance.now() - this.sentAt
    this.record.upstreamMs = ms
    this.group.observeAttempt(this.endpoint, statusCode, ms / 1000)
    // A failing status counts at once; a good one only once its body has arrived whole, so a body
    // cut off after a 200 counts as the failure it is (onResponseError), not as a success.
    if (statusCode >= 500) this.group.reportStatus(this.endpoint, statusCode)
    else this.goodStatus = statusCode
    // Only the gateway says why it answered: an upstream's own x-waypost-reason would pass for ours.
    if (headers['x-waypost-reason'] !== undefined) delete headers['x-waypost-reason']
    this.resolve({ status: statusCode, headers, body: this, origin: 'upstream' })
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    const sink = this.sink
    if (sink !== null) {
      if (!sink.write(chunk)) controller.pause()
      return
    }
    ;(this.early ??= []).push(chunk)
    this.earlyBytes += chunk.length
    if (this.earlyBytes > EARLY_BUFFER_LIMIT) controller.pause()
  }

  onResponseEnd(_controller: Controller, trailers: IncomingHttpHeaders): void {
    this.signal.unsubscribe(this)
    this.release()
    if (this.goodStatus !== 0) this.group.reportStatus(this.endpoint, this.goodStatus)
    if (this.done) return
    this.trailers = trailers
    if (this.sink !== null) {
      this.sink.end(trailers)
      this.finish()
    }
  }

  onResponseError(_controller: Controller, error: Error): void {
    this.signal.unsubscribe(this)
    this.release()
    if (!this.started) {
      if (this.upstreamFailed(error)) {
        this.group.reportFailure(this.endpoint)
        this.group.observeAttempt(this.endpoint, 0, (performance.now() - this.sentAt) / 1000)
      }
      this.reject(withTlsCause(error, this.endpoint.address))
      return
    }
    if (this.done) return
    this.error = error
    // The upstream cut its body off: its failure, not the client's (who sees a cut connection and is
    // logged 502, not 499), and outlier detection hears of it. A client that left, or a layer that
    // discarded the body, is not.
    if (!this.cancelled && this.upstreamFailed(error)) {
      this.record.reason = 'upstream-reset-body'
      this.group.reportFailure(this.endpoint)
    }
    if (this.sink !== null) {
      this.sink.fail(error)
      this.finish()
    }
  }

  // ---- the StreamingBody the layers and the client response see
  pipe(sink: BodySink): void {
    this.sink = sink
    const early = this.early
    this.early = null
    let room = true
    if (early !== null) for (const chunk of early) room = sink.write(chunk)
    if (this.trailers !== null) {
      sink.end(this.trailers)
      this.finish()
    } else if (this.error !== null) {
      sink.fail(this.error)
      this.finish()
    } else if (early !== null && room) {
      this.controller?.resume()
    }
  }

  resume(): void {
    this.controller?.resume()
  }

  cancel(reason: Error): void {
    if (this.done) return
    this.cancelled = true
    if (this.trailers === null && this.error === null) this.controller?.abort(reason)
    this.finish()
  }

  onDone(listener: () => void): void {
    if (this.done) listener()
    else (this.doneListeners ??= []).push(listener)
  }

  /** The endpoint is done with this attempt (body ended or failed): no longer in flight. */
  private release(): void {
    if (this.released) return
    this.released = true
    this.endpoint.inFlight--
  }

  /**
   * Whether a failure before headers counts against the endpoint: connect failures, resets and
   * deadlines do; a client that left or a request undici refused to send (400) do not.
   */
  private upstreamFailed(error: Error): boolean {
    if (this.signal.aborted && !(this.signal.reason instanceof DeadlineExceeded)) return false
    const status = answerForError(error).status
    return status === 502 || status === 504
  }

  private finish(): void {
    if (this.done) return
    this.done = true
    const listeners = this.doneListeners
    this.doneListeners = null
    if (listeners !== null) for (const listener of listeners) listener()
  }
}

/**
 * The innermost Upstream of every route to `group`. Each call is one attempt: it goes to an
 * endpoint this exchange has not tried yet where the group has another to offer (a retry layer
 * just calls it again with the same `exchange.record`), and records the endpoint on the record.
 */
export function dispatchTo(group: EndpointGroup): Upstream {
  return (exchange: Exchange) => {
    const record = exchange.record
    const endpoint = group.pick(record.tried)
    if (endpoint === null) return Promise.reject(new NoEndpoints(group.name))
    record.endpoint = endpoint.address
    // With one endpoint there is nothing to avoid: no array allocated.
    if (group.size > 1) (record.tried ??= []).push(endpoint)
    const request = exchange.request
    record.attempts++
    if (request.upgrade !== undefined) return upgradeAttempt(group, endpoint, exchange, request.upgrade)
    request.sendContinue?.()
    endpoint.inFlight++
    return new Promise<ProxyResponse>((resolve, reject) => {
      endpoint.pool.dispatch(
        {
          method: request.method as Dispatcher.HttpMethod,
          path: request.path,
          headers: request.headers,
          body: request.body ?? (request.hasBody ? request.incoming : null),
        },
        new ResponseHandler(exchange.signal, record, group, endpoint, resolve, reject, request.sendInterim),
      )
    })
  }
}

/**
 * `dispatchTo` with a client span around each attempt, compiled into the plan only when tracing is
 * on (with it off, the plan holds the plain dispatch: no span, no header copy, no closure). The
 * upstream gets exactly one `traceparent`, the attempt's: the caller's trace-context fields are
 * replaced in the header list here rather than by instrumenting undici, which would add a second.
 */
export function tracedDispatchTo(group: EndpointGroup): Upstream {
  const dispatch = dispatchTo(group)
  const upstream = group.name
  return (exchange: Exchange) => {
    const trace = exchange.trace
    // An exchange without a server span (none is made without tracing, but a layer may build its own): as is.
    if (trace === undefined) return dispatch(exchange)
    const attempt = trace.startAttempt(exchange, upstream)
    const request = exchange.request
    const record = exchange.record
    const attemptsBefore = record.attempts
    const sent = dispatch({ ...exchange, request: { ...request, headers: attempt.headers(request.headers) } })
    // The dispatch picks the endpoint synchronously; with none to pick it rejects before counting an attempt.
    if (record.attempts !== attemptsBefore) attempt.sentTo(record.endpoint)
    return sent.then(
      (response) => {
        attempt.answered(response.status)
        // An upgraded connection's body lasts as long as the connection: its attempt ends at the 101.
        if (response.status === 101) attempt.end()
        else onResponseDone(response, () => attempt.end())
        return response
      },
      (error: unknown) => {
        attempt.failed(answerForError(error).reason, error)
        throw error
      },
    )
  }
}

/** Longest an upgrade handshake may take when no request deadline bounds it sooner. */
const HANDSHAKE_TIMEOUT_MS = 30_000

/**
 * An Upgrade request's attempt: the handshake through the endpoint's pool, then the sockets are
 * spliced and the 101 comes back with the connection as its body. The upgraded stream is not
 * counted in the endpoint's in-flight load (it may live for hours) nor reported to outlier detection.
 */
function upgradeAttempt(group: EndpointGroup, endpoint: Endpoint, exchange: Exchange, upgrade: UpgradeRequest): Promise<ProxyResponse> {
  const controller = new AbortController()
  const listener: AbortListener = { onAbort: (reason) => controller.abort(reason) }
  exchange.signal.subscribe(listener)
  const timer = setTimeout(() => controller.abort(new DeadlineExceeded('upstream-headers-timeout', HANDSHAKE_TIMEOUT_MS)), HANDSHAKE_TIMEOUT_MS)
  const request = exchange.request
  const started = performance.now()
  return proxyUpgrade(endpoint.pool, { method: request.method, path: request.path, headers: request.headers, protocol: upgrade.protocol, signal: controller.signal }, upgrade.socket, upgrade.head).then(
    (connection): ProxyResponse => {
      const ms = performance.now() - started
      exchange.record.upstreamMs = ms
      group.observeAttempt(endpoint, 101, ms / 1000)
      return { status: 101, headers: {}, body: connection, origin: 'upstream' }
    },
    (error: unknown) => {
      // A refused handshake (the upstream answered without switching) or a failed connection; not a client that left.
      if (!(exchange.signal.aborted && !(exchange.signal.reason instanceof DeadlineExceeded))) group.observeAttempt(endpoint, 0, (performance.now() - started) / 1000)
      throw error instanceof Error ? withTlsCause(error, endpoint.address) : error
    },
  ).finally(() => {
    clearTimeout(timer)
    exchange.signal.unsubscribe(listener)
  })
}

