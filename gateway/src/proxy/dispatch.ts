// The innermost layer: send the exchange to the upstream pool and hand back the streaming response.
// It speaks undici's dispatch-handler API directly (what `pool.request()` wraps), so a request
// costs one handler and one body stream: no AsyncResource, no AbortSignal listener. Bodies stream
// both ways with backpressure; nothing is buffered here.
import { Readable } from 'node:stream'
import type { Dispatcher, Pool } from 'undici'
import type { IncomingHttpHeaders } from 'node:http'
import type { AbortListener, Exchange, ExchangeRecord, ExchangeSignal, ProxyResponse, Upstream } from '../policies/policy.js'

type Controller = Dispatcher.DispatchController

/** The upstream response body: pulls from undici as the client reads, cancels upstream when destroyed early. */
class UpstreamBody extends Readable {
  ended = false

  constructor(private readonly controller: Controller) {
    super()
  }

  override _read(): void {
    this.controller.resume()
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.ended) this.controller.abort(error ?? new Error('response body closed before its end'))
    callback(error)
  }
}

class ResponseHandler implements Dispatcher.DispatchHandler, AbortListener {
  private controller: Controller | null = null
  private body: UpstreamBody | null = null
  private readonly trailers: Record<string, string | string[] | undefined> = {}
  private readonly started = performance.now()

  constructor(
    private readonly signal: ExchangeSignal,
    private readonly record: ExchangeRecord,
    private readonly resolve: (response: ProxyResponse) => void,
    private readonly reject: (error: unknown) => void,
  ) {}

  onAbort(reason: unknown): void {
    this.controller?.abort(reason as Error)
  }

  onRequestStart(controller: Controller): void {
    this.controller = controller
    if (this.signal.aborted) controller.abort(this.signal.reason as Error)
    else this.signal.subscribe(this)
  }

  onResponseStart(controller: Controller, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return // 1xx informational: the final response follows
    this.record.upstreamMs = performance.now() - this.started
    const body = new UpstreamBody(controller)
    this.body = body
    this.resolve({ status: statusCode, headers, body, origin: 'upstream', trailers: this.trailers })
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    if (this.body !== null && !this.body.push(chunk)) controller.pause()
  }

  onResponseEnd(_controller: Controller, trailers: IncomingHttpHeaders): void {
    this.signal.unsubscribe(this)
    for (const name in trailers) this.trailers[name] = trailers[name]
    const body = this.body!
    body.ended = true
    body.push(null)
  }

  onResponseError(_controller: Controller, error: Error): void {
    this.signal.unsubscribe(this)
    if (this.body === null) this.reject(error)
    else this.body.destroy(error)
  }
}

export function dispatchTo(pool: Pool): Upstream {
  return (exchange: Exchange) => {
    const request = exchange.request
    request.sendContinue?.()
    exchange.record.attempts++
    return new Promise<ProxyResponse>((resolve, reject) => {
      pool.dispatch(
        {
          method: request.method as Dispatcher.HttpMethod,
          path: request.path,
          headers: request.headers,
          body: request.hasBody ? request.incoming : null,
        },
        new ResponseHandler(exchange.signal, exchange.record, resolve, reject),
      )
    })
  }
}
