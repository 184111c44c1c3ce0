// The layer harness: one policy's layer built from its YAML section exactly as the compiler builds
// it (schema defaults filled in, the same Deps), around a fake `next` and a manual clock. A
// policy's logic is tested here, fast and without sockets or real sleeps; its wiring is tested end
// to end over real sockets in gateway/test/*.test.ts.
import { resolve as resolvePath } from 'node:path'
import { Readable } from 'node:stream'
import type { IncomingMessage } from 'node:http'
import type { Static, TSchema } from '@sinclair/typebox'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Clock, TimerHandle } from '../src/core/clock.js'
import { ExchangeSignal, newExchangeRecord, type BodySink, type Exchange, type ProxyResponse, type ResponseHeaders, type StreamingBody, type Upstream } from '../src/core/exchange.js'
import type { Deps, Policy, PolicyReport } from '../src/policies/policy.js'
import { checkOperator } from '../src/core/operator.js'
import { ANONYMOUS, type Identity } from '../src/core/identity.js'
import type { SecurityEvent } from '../src/telemetry/security-log.js'

interface Timer {
  readonly id: number
  readonly at: number
  readonly fire: () => void
}

/** A clock that moves only when told: `advance(ms)` fires the timers due, in order, letting promises settle between them. */
export class ManualClock implements Clock {
  private time = 1_700_000_000_000
  private nextId = 1
  private timers: Timer[] = []

  now(): number {
    return this.time
  }

  setTimeout<A extends unknown[]>(callback: (...args: A) => void, ms: number, ...args: A): TimerHandle {
    const timer = { id: this.nextId++, at: this.time + Math.max(0, ms), fire: () => callback(...args) }
    this.timers.push(timer)
    this.timers.sort((a, b) => a.at - b.at || a.id - b.id)
    return timer.id
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers = this.timers.filter((timer) => timer.id !== handle)
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.timers.length
  }

  async advance(ms: number): Promise<void> {
    const until = this.time + ms
    await settle()
    for (let timer = this.timers[0]; timer !== undefined && timer.at <= until; timer = this.timers[0]) {
      this.timers.shift()
      this.time = timer.at
      timer.fire()
      await settle()
    }
    this.time = until
  }

  /** Moves time from timer to timer until `promise` settles: for layers that sleep (backoff, Retry-After). */
  async until<T>(promise: Promise<T>, limitMs = 3_600_000): Promise<T> {
    let settled = false
    const watched = promise.finally(() => (settled = true))
    watched.catch(() => undefined) // the caller gets the rejection from the returned promise
    const start = this.time
    await settle()
    while (!settled) {
      const next = this.timers[0]
      if (next === undefined) throw new Error('the layer is waiting on something other than the clock')
      if (next.at - start > limitMs) throw new Error(`still pending after ${limitMs} ms of clock time`)
      await this.advance(next.at - this.time)
    }
    return watched
  }
}

/** Lets every promise reaction queued so far run (several rounds, for chains of .then). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

export interface FakeRequest {
  method?: string
  path?: string
  headers?: Record<string, string>
  /** Sent as the request body (the retry layer reads it for replay). */
  body?: string
  remoteAddress?: string
  /** Who the request comes from, as the listener or an outer auth layer said (anonymous by default). */
  identity?: Identity
}

/** A client request as far as layers look at it: headers, method, URL, the socket's address, a body stream. */
function fakeIncoming(request: FakeRequest): IncomingMessage {
  const body = request.body === undefined ? [] : [Buffer.from(request.body)]
  const stream = Readable.from(body)
  const headers: Record<string, string> = {
    host: 'test.local',
    ...(request.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(request.body)) }),
    ...Object.fromEntries(Object.entries(request.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value])),
  }
  return Object.assign(stream, {
    method: request.method ?? 'GET',
    url: request.path ?? '/',
    headers,
    rawHeaders: Object.entries(headers).flat(),
    socket: { remoteAddress: request.remoteAddress ?? '127.0.0.1' },
    // Only what layers read is here; the cast says so rather than pretending to be a whole IncomingMessage.
  }) as unknown as IncomingMessage
}

export function fakeExchange(request: FakeRequest = {}): Exchange {
  const incoming = fakeIncoming(request)
  const headers = Object.entries(incoming.headers).flatMap(([name, value]) => [name, String(value)])
  return {
    request: {
      method: request.method ?? 'GET',
      path: request.path ?? '/',
      authority: 'test.local',
      target: request.path ?? '/',
      headers,
      incoming,
      hasBody: request.body !== undefined,
      requestId: 'test-request',
      sendContinue: undefined,
      sendInterim: undefined,
    },
    identity: request.identity ?? ANONYMOUS,
    route: { name: 'test', upstream: 'app' },
    log: pino({ level: 'silent' }),
    signal: new ExchangeSignal(),
    attempt: 0,
    record: newExchangeRecord(),
  }
}

/** An upstream answer as the dispatch would give it (a buffered body is enough for most layer logic). */
export function upstreamResponse(status: number, headers: ResponseHeaders = {}, body = ''): ProxyResponse {
  return { status, headers: { ...headers }, body: Buffer.from(body), origin: 'upstream' }
}

/** A streaming body as the dispatch gives one (what the cache captures): delivers `content`, then ends. */
export function streamingBody(content: string): StreamingBody {
  let sink: BodySink | undefined
  const done: Array<() => void> = []
  let finished = false
  const finish = (): void => {
    finished = true
    for (const listener of done.splice(0)) listener()
  }
  return {
    pipe(target) {
      sink = target
      queueMicrotask(() => {
        if (finished) return
        if (content !== '') sink!.write(Buffer.from(content))
        sink!.end({})
        finish()
      })
    },
    resume() {},
    cancel() {
      finish()
    },
    onDone(listener) {
      if (finished) listener()
      else done.push(listener)
    },
  }
}

export type Step = number | Error | ((exchange: Exchange) => Promise<ProxyResponse> | ProxyResponse)

/**
 * A fake `next` (it counts attempts on the record as the real dispatch does): each call takes the next step of the script (the last one repeats): a status is
 * answered at once, an Error is thrown as the dispatch would, a function answers as it likes.
 */
export function scriptedUpstream(...script: Step[]): Upstream & { readonly calls: Exchange[] } {
  const calls: Exchange[] = []
  const upstream = (exchange: Exchange): Promise<ProxyResponse> => {
    const step = script[Math.min(calls.length, script.length - 1)]!
    calls.push(exchange)
    exchange.record.attempts++ // as the real dispatch counts them
    if (typeof step === 'number') return Promise.resolve(upstreamResponse(step))
    if (step instanceof Error) return Promise.reject(step)
    return Promise.resolve().then(() => step(exchange))
  }
  return Object.assign(upstream, { calls })
}

/** An upstream that answers only when the exchange's signal aborts it (a hung upstream). */
export function hungUpstream(): Upstream {
  return (exchange) =>
    new Promise((_resolve, reject) => {
      exchange.signal.subscribe({ onAbort: (reason) => reject(reason as Error) })
    })
}

/** An error as undici raises it, by code (ECONNREFUSED, UND_ERR_SOCKET, ...). */
export function upstreamError(code: string): Error {
  return Object.assign(new Error(code), { code })
}

export interface LayerUnderTest<Exposed> {
  readonly clock: ManualClock
  readonly metrics: Registry
  /** What the layer offered its admin endpoints. */
  readonly exposed: Exposed[]
  /** What it recorded in the security log. */
  readonly securityEvents: SecurityEvent[]
  /** What it asked `/ready` to wait for (deps.awaitBeforeReady). */
  readonly readiness: Array<{ what: string; ready: Promise<void> }>
  /** What the layer reports of its state (GET /stats), in the order registered. */
  readonly reports: Array<() => PolicyReport>
  /** The built handler: the policy's exchange layer around its attempt layer around `next`. */
  readonly handler: Upstream
  /** Sends one request through the layer. */
  call(request?: FakeRequest): Promise<ProxyResponse>
  /** The same with an exchange the test holds (to abort its signal, read its record). */
  send(exchange: Exchange): Promise<ProxyResponse>
}

export interface RunLayerOptions {
  next: Upstream
  clock?: ManualClock
  /** Other upstreams of the plan, for `deps.upstream(name)` (a breaker's fallback). */
  upstreams?: Record<string, Upstream>
  metrics?: Registry
  /** Kept state shared between builds, to test what survives a rebuild (a reload). */
  kept?: Map<string, unknown>
  /** The route's upstream section (deps.target). */
  target?: unknown
  /** admin.token, for what deps.operator() accepts besides loopback. */
  adminToken?: string
}

export function runLayer<Name extends string, S extends TSchema, Exposed>(policy: Policy<Name, S, Exposed>, section: Static<S>, options: RunLayerOptions): LayerUnderTest<Exposed> {
  const clock = options.clock ?? new ManualClock()
  const metrics = options.metrics ?? new Registry()
  const kept = options.kept ?? new Map<string, unknown>()
  const exposed: Exposed[] = []
  const securityEvents: SecurityEvent[] = []
  const readiness: Array<{ what: string; ready: Promise<void> }> = []
  const reports: Array<() => PolicyReport> = []
  const deps: Deps<Exposed> = {
    route: { name: 'test', upstream: 'app' },
    log: pino({ level: 'silent' }),
    metrics,
    clock,
    redis: undefined,
    trustedProxies: undefined,
    target: options.target ?? { url: 'http://127.0.0.1:3000' },
    keep: <T>(name: string, config: unknown, create: () => T): T => {
      const key = `${name}:${JSON.stringify(config)}`
      if (!kept.has(key)) kept.set(key, create())
      return kept.get(key) as T
    },
    upstream: (name) => {
      const upstream = options.upstreams?.[name]
      if (upstream === undefined) throw new Error(`no upstream "${name}" in this harness`)
      return upstream
    },
    expose: (value) => void exposed.push(value),
    report: (probe) => void reports.push(probe),
    operator: (request) => checkOperator(request, options.adminToken),
    security: { record: (event) => void securityEvents.push(event) },
    awaitBeforeReady: (what, ready) => void readiness.push({ what, ready }),
    path: (file) => resolvePath(file),
  }
  const config = section
  let handler = options.next
  const attempt = policy.buildAttempt?.(config, deps) ?? null
  if (attempt !== null) handler = attempt(handler)
  const layer = policy.build(config, deps)
  if (layer !== null) handler = layer(handler)
  return {
    clock,
    metrics,
    exposed,
    securityEvents,
    readiness,
    reports,
    handler,
    call: (request) => handler(fakeExchange(request)),
    send: (exchange) => handler(exchange),
  }
}

/** Reads a response's body as the client side would (a streaming body is piped to its end). */
export function readBody(response: ProxyResponse): Promise<Buffer> {
  const body = response.body
  if (body === null) return Promise.resolve(Buffer.alloc(0))
  if (Buffer.isBuffer(body)) return Promise.resolve(body)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    body.pipe({
      write: (chunk) => chunks.push(chunk) > 0,
      end: () => resolve(Buffer.concat(chunks)),
      fail: reject,
    })
  })
}

/** A promise's state without waiting for it. */
export async function stateOf(promise: Promise<unknown>): Promise<'pending' | 'fulfilled' | 'rejected'> {
  let state: 'pending' | 'fulfilled' | 'rejected' = 'pending'
  promise.then(
    () => (state = 'fulfilled'),
    () => (state = 'rejected'),
  )
  await settle()
  return state
}
