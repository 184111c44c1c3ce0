// An open-loop, fixed-rate load generator (undici). Request i is due at start + i/rate whatever
// the server does; its latency is measured from that scheduled time to the end of its body, so a
// stall is charged for the queue that builds up behind it (no coordinated omission). It is bounded:
// at most `maxInFlight` requests at once (a request due while the bound is reached is not sent and
// counts as failed, cause `generator-bound`), each request has a deadline, and stop() waits a
// bounded time for stragglers.
//
// Every request is either sent over a shared keep-alive pool or over a connection of its own
// (a new undici Client, closed after the answer), and carries the step label current when it is
// sent, so the report can split failures and latency by step.
import { Readable } from 'node:stream'
import type { IncomingHttpHeaders } from 'node:http'
import { Client, Pool, errors as undiciErrors } from 'undici'
import { now, sleep } from '../lib/log.js'

export interface PlannedRequest {
  /** `http://127.0.0.1:PORT` */
  origin: string
  path: string
  method: 'GET' | 'POST'
  headers?: Record<string, string>
  /** A Buffer is sent with content-length; a function makes a stream, sent chunked. */
  body?: Buffer | (() => Readable)
  /** A connection of its own instead of the keep-alive pool. */
  fresh: boolean
  /** A short name of the request type, for the report. */
  kind: string
  /** Returns a failure cause when the answer is wrong; undefined when it is right. */
  verify?: (answer: Answer) => string | undefined
}

export interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

export interface Sample {
  id: number
  step: string
  kind: string
  fresh: boolean
  /** performance.now() times, ms. `ended` is NaN when the request never finished. */
  scheduled: number
  sent: number
  ended: number
  status: number
  ok: boolean
  /** Set when !ok: `status-503`, `ECONNRESET`, `timeout`, `body-mismatch`, ... */
  cause: string | undefined
  detail: string | undefined
  /** `x-served-by` (set by the load balancer), when there is one. */
  server: string | undefined
  /** `x-waypost-reason`, when the gateway answered by itself. */
  reason: string | undefined
  /** Kept for failed requests only. */
  headers: IncomingHttpHeaders | undefined
}

export interface LoadOptions {
  rate: number
  maxInFlight: number
  /** Deadline of one request, headers and body included. */
  timeoutMs: number
  /** Connections of the keep-alive pool, per origin. */
  poolConnections: number
  plan: (id: number) => PlannedRequest
  /** The step label stamped on each request when it is sent. */
  step: () => string
}

export class LoadGenerator {
  readonly samples: Sample[] = []
  private readonly pools = new Map<string, Pool>()
  private readonly pending = new Set<Promise<void>>()
  private readonly freshClients = new Set<Client>()
  private readonly live = new Set<Sample>()
  private sent = 0
  private start = 0
  private running = false
  private timer: NodeJS.Timeout | undefined
  inFlight = 0
  maxInFlightSeen = 0
  /** How late the generator itself sent requests (its own scheduling lag), ms. */
  readonly sendLag: number[] = []

  constructor(private readonly options: LoadOptions) {}

  begin(): void {
    this.running = true
    this.start = now() + 5
    this.tick()
  }

  get elapsedMs(): number {
    return this.running ? now() - this.start : 0
  }

  /** Stops sending, then waits up to `graceMs` for the requests in flight; unfinished ones are failed. */
  async stop(graceMs: number): Promise<Sample[]> {
    this.running = false
    clearTimeout(this.timer)
    await Promise.race([Promise.allSettled([...this.pending]), sleep(graceMs)])
    for (const sample of this.samples) {
      if (Number.isNaN(sample.ended) && sample.cause === undefined) {
        sample.cause = 'unfinished'
        sample.detail = `still in flight ${graceMs} ms after the load stopped`
      }
    }
    for (const client of this.freshClients) void client.destroy().catch(() => undefined)
    await Promise.all([...this.pools.values()].map((pool) => pool.destroy().catch(() => undefined)))
    return this.samples
  }

  /** Requests in flight for longer than `ms`. */
  stalled(ms: number): Sample[] {
    const limit = now() - ms
    return [...this.live].filter((sample) => sample.sent < limit)
  }

  private tick = (): void => {
    if (!this.running) return
    const interval = 1000 / this.options.rate
    const t = now()
    while (this.running && this.start + this.sent * interval <= t) {
      const scheduled = this.start + this.sent * interval
      this.sendLag.push(t - scheduled)
      this.fire(this.sent, scheduled, t)
      this.sent++
    }
    const wait = this.start + this.sent * interval - now()
    // Timers are ~1 ms precise: sleep when the next request is far, otherwise come straight back
    // after I/O (setImmediate runs after the poll phase, so answers are still read).
    if (wait > 2) this.timer = setTimeout(this.tick, wait - 1)
    else setImmediate(this.tick)
  }

  private pool(origin: string): Pool {
    let pool = this.pools.get(origin)
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: this.options.poolConnections,
        pipelining: 1,
        // Below the load balancer's and the gateway's keep-alive timeouts: never reuse a socket the server is closing.
        keepAliveTimeout: 4000,
        keepAliveMaxTimeout: 4000,
        headersTimeout: this.options.timeoutMs,
        bodyTimeout: this.options.timeoutMs,
      })
      this.pools.set(origin, pool)
    }
    return pool
  }

  private fire(id: number, scheduled: number, sentAt: number): void {
    const planned = this.options.plan(id)
    const sample: Sample = {
      id,
      step: this.options.step(),
      kind: planned.kind,
      fresh: planned.fresh,
      scheduled,
      sent: sentAt,
      ended: NaN,
      status: 0,
      ok: false,
      cause: undefined,
      detail: undefined,
      server: undefined,
      reason: undefined,
      headers: undefined,
    }
    this.samples.push(sample)
    if (this.inFlight >= this.options.maxInFlight) {
      sample.cause = 'generator-bound'
      sample.detail = `${this.inFlight} requests already in flight`
      sample.ended = sentAt
      return
    }
    this.inFlight++
    this.maxInFlightSeen = Math.max(this.maxInFlightSeen, this.inFlight)
    this.live.add(sample)
    const done = this.exchange(planned, sample).finally(() => {
      this.inFlight--
      this.live.delete(sample)
      this.pending.delete(done)
    })
    this.pending.add(done)
  }

  private async exchange(planned: PlannedRequest, sample: Sample): Promise<void> {
    let client: Client | undefined
    const signal = AbortSignal.timeout(this.options.timeoutMs)
    try {
      let dispatcher: Client | Pool
      if (planned.fresh) {
        client = new Client(planned.origin, { pipelining: 1, headersTimeout: this.options.timeoutMs, bodyTimeout: this.options.timeoutMs })
        this.freshClients.add(client)
        dispatcher = client
      } else {
        dispatcher = this.pool(planned.origin)
      }
      const body = planned.body === undefined ? undefined : Buffer.isBuffer(planned.body) ? planned.body : planned.body()
      const response = await dispatcher.request({ path: planned.path, method: planned.method, headers: planned.headers, body, signal })
      const chunks: Buffer[] = []
      for await (const chunk of response.body) chunks.push(chunk as Buffer)
      sample.ended = now()
      sample.status = response.statusCode
      sample.server = header(response.headers['x-served-by'])
      sample.reason = header(response.headers['x-waypost-reason'])
      const answer: Answer = { status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) }
      const problem = planned.verify?.(answer) ?? (answer.status === 200 ? undefined : `status-${answer.status}`)
      if (problem === undefined) sample.ok = true
      else {
        sample.cause = problem
        sample.headers = response.headers
        sample.detail = answer.body.subarray(0, 200).toString('utf8')
      }
    } catch (error) {
      sample.ended = now()
      sample.cause = errorCause(error)
      sample.detail = (error as Error).message
    } finally {
      if (client !== undefined) {
        this.freshClients.delete(client)
        await client.close().catch(() => undefined)
      }
    }
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value
}

/** A short, stable name for a transport error. */
export function errorCause(error: unknown): string {
  if (error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError) return 'timeout'
  const named = error as { name?: string; code?: string; cause?: { code?: string } }
  if (named.name === 'TimeoutError' || named.name === 'AbortError') return 'timeout'
  if (named.code === 'UND_ERR_SOCKET') return `socket-closed(${named.cause?.code ?? 'other side closed'})`
  return named.code ?? named.cause?.code ?? named.name ?? 'error'
}

/** A readable that yields `data` in `pieces` chunks, so it is sent with chunked framing. */
export function chunkedBody(data: Buffer, pieces: number): () => Readable {
  return () => {
    const size = Math.max(1, Math.ceil(data.length / pieces))
    const chunks: Buffer[] = []
    for (let offset = 0; offset < data.length; offset += size) chunks.push(data.subarray(offset, offset + size))
    return Readable.from(chunks)
  }
}
