// A circuit breaker per route and upstream, built on opossum. Closed: every call goes through
// opossum, whose rolling window opens the circuit once more than `failureRatio` of at least
// `minRequests` calls failed. Open: the gateway answers itself (503 breaker-open, or the fallback)
// without touching the upstream. After `openFor`, half-open: exactly `halfOpenProbes` requests go
// through; the breaker closes once all of them succeeded and reopens at the first that fails.
// opossum's own half-open lets one call through and closes on any success; the open period and
// half-open are ours instead (see `resetTimeout` below), with opossum kept open until we close it.
//
// What "failed" means is ours, not opossum's: it only counts rejections, so a response whose status
// is in `failOn.statuses` is thrown as a FailingResponse and unwrapped again after `fire()`, and the
// client still gets the upstream's answer. A good status counts as a success only once its body
// has ended whole: a body the upstream cuts off (upstream-reset-body) is a connection error, though
// the client had its headers at once. Errors that are not the upstream's fault (the client left, the
// whole-exchange deadline passed) are filtered out. The breaker is kept across reloads while its
// config is unchanged.
import CircuitBreaker from 'opossum'
import { Type, type Static } from '@sinclair/typebox'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Logger } from 'pino'
import { duration, toMs } from '../core/units.js'
import { unrefTimer, type Clock, type TimerHandle } from '../core/clock.js'
import { answerForError } from '../proxy/errors.js'
import { callNext, localResponse, type Exchange, type ProxyResponse, type RouteInfo, type StreamingBody, type Upstream } from '../core/exchange.js'
import { definePolicy, type AdminEndpoint, type Deps, type PolicyReport, type ValidateContext } from './policy.js'
import type { Defaulted } from '../core/schema-defaults.js'

const FailOn = Type.Object(
  {
    statuses: Type.Optional(Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), { default: [500, 502, 503, 504], description: 'Upstream statuses that count as failures.' })),
    timeouts: Type.Optional(Type.Boolean({ default: true, description: 'Per-try deadlines and upstream timeouts count as failures.' })),
    connectionErrors: Type.Optional(Type.Boolean({ default: true, description: 'Refused, reset and failed connections count as failures.' })),
  },
  { additionalProperties: false, default: {}, description: 'What counts as a failure. Client aborts and the whole-exchange deadline never do.' },
)

const StaticFallback = Type.Object(
  {
    status: Type.Integer({ minimum: 200, maximum: 599 }),
    body: Type.Optional(Type.String()),
    headers: Type.Optional(Type.Record(Type.String(), Type.String())),
  },
  { additionalProperties: false, description: 'Answer with this response while open (it still carries `x-waypost-reason: breaker-open ...`).' },
)

const UpstreamFallback = Type.Object(
  { upstream: Type.String({ minLength: 1, description: 'The name of another upstream.' }) },
  { additionalProperties: false, description: 'Send requests to this upstream while open.' },
)

export const BreakerConfig = Type.Object(
  {
    failureRatio: Type.Optional(Type.Number({ minimum: 0, maximum: 1, default: 0.5, description: 'Opens when more than this share of the calls in the window failed.' })),
    window: Type.Optional(duration({ default: '10s', description: 'The rolling window the failure ratio is counted over (at least 100ms).' })),
    minRequests: Type.Optional(Type.Integer({ minimum: 1, default: 20, description: 'Calls the window must hold before the breaker may open.' })),
    openFor: Type.Optional(duration({ default: '10s', description: 'How long the breaker stays open before it lets probes through.' })),
    halfOpenProbes: Type.Optional(Type.Integer({ minimum: 1, default: 1, description: 'Requests let through when half-open; all must succeed to close.' })),
    failOn: Type.Optional(FailOn),
    fallback: Type.Optional(Type.Union([StaticFallback, UpstreamFallback], { errorMessage: 'expected { status: 200-599, body?, headers? } or { upstream: NAME }' })),
  },
  {
    additionalProperties: false,
    description:
      'Circuit breaker per route and upstream: opens when more than `failureRatio` of at least `minRequests` calls in the rolling `window` failed; ' +
      'stays open `openFor`, then lets `halfOpenProbes` requests through. While open: 503 breaker-open, or `fallback`.',
  },
)
export type BreakerConfig = Static<typeof BreakerConfig>
type ResolvedBreakerConfig = Defaulted<BreakerConfig, 'failureRatio' | 'window' | 'minRequests' | 'openFor' | 'halfOpenProbes' | 'failOn'> & {
  failOn: Defaulted<NonNullable<BreakerConfig['failOn']>, 'statuses' | 'timeouts' | 'connectionErrors'>
}

export type BreakerState = 'closed' | 'half-open' | 'open'

const STATE_CODE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 }

/** The longest delay setTimeout takes (2^31 - 1 ms); beyond it Node fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** A failing upstream response on its way through opossum. Not an Error: no stack to capture. */
class FailingResponse {
  constructor(readonly response: ProxyResponse) {}
}

/** The upstream cut off a body whose headers said all was well: a failure, decided once the body ended. */
class BodyCutOff {}
const BODY_CUT_OFF = new BodyCutOff()

/**
 * The body a good answer's success waits for: an upstream body that streams. Buffers, local answers
 * and upgraded connections (which may live for hours) are decided at headers.
 */
function pendingBody(response: ProxyResponse): StreamingBody | undefined {
  const body = response.body
  if (body === null || Buffer.isBuffer(body) || response.origin !== 'upstream' || response.status === 101) return undefined
  return body
}

/** Which outcomes count as the upstream's failure (`failOn`). */
class FailureRule {
  private readonly statuses: ReadonlySet<number>
  private readonly timeouts: boolean
  private readonly connectionErrors: boolean

  constructor(config: ResolvedBreakerConfig['failOn']) {
    this.statuses = new Set(config.statuses)
    this.timeouts = config.timeouts
    this.connectionErrors = config.connectionErrors
  }

  /** The layers below answer with the upstream's response, or locally when the per-try deadline passed. */
  failedResponse(response: ProxyResponse, exchange: Exchange): boolean {
    if (response.origin === 'upstream') return this.statuses.has(response.status)
    return this.timeouts && exchange.record.reason === 'attempt-timeout'
  }

  failedError(error: unknown, exchange: Exchange): boolean {
    if (error instanceof FailingResponse) return true
    if (error instanceof BodyCutOff) return this.connectionErrors
    // The client left or the whole-exchange deadline passed: nothing the upstream did.
    if (exchange.signal.aborted) return false
    const status = answerForError(error).status
    if (status === 504) return this.timeouts
    if (status === 502) return this.connectionErrors
    return false // 4xx: the request was at fault
  }
}

/** A breaker's settings in milliseconds and counts. */
interface BreakerSettings {
  readonly failureRatio: number
  readonly windowMs: number
  readonly minRequests: number
  readonly openForMs: number
  readonly halfOpenProbes: number
}

function settingsOf(config: ResolvedBreakerConfig): BreakerSettings {
  return {
    failureRatio: config.failureRatio,
    windowMs: toMs(config.window),
    minRequests: config.minRequests,
    openForMs: toMs(config.openFor),
    halfOpenProbes: config.halfOpenProbes,
  }
}

type ProbeOutcome = 'succeeded' | 'failed' | 'uncounted'

/** What the breaker answers while open: built with each plan, since the fallback upstream's pool belongs to the plan. */
export type OpenAnswer = (exchange: Exchange) => ProxyResponse | Promise<ProxyResponse>

/** The breaker of one route and upstream; kept across reloads while its config is unchanged. */
export class RouteBreaker {
  state: BreakerState = 'closed'
  /** When the breaker last opened (ms since the epoch); undefined unless open or half-open. */
  openedAt: number | undefined
  private readonly circuit: CircuitBreaker<[Exchange, Upstream, (response: ProxyResponse) => void], ProxyResponse>
  private readonly rule: FailureRule
  private readonly rejections: ReturnType<Counter<'route' | 'upstream'>['labels']>
  /** waypost_breaker_transitions_total of this breaker, by the state entered. */
  private readonly transitions: Record<BreakerState, ReturnType<Counter<'route' | 'upstream' | 'to'>['labels']>>
  private probesLeft = 0
  private probesSucceeded = 0
  /** Counts half-open periods, so a probe that settles after its period ended changes nothing. */
  private halfOpenRound = 0
  private halfOpenTimer: TimerHandle | undefined

  constructor(
    readonly route: RouteInfo,
    readonly settings: BreakerSettings,
    failOn: ResolvedBreakerConfig['failOn'],
    private readonly log: Logger,
    counters: { readonly rejections: Counter<'route' | 'upstream'>; readonly transitions: Counter<'route' | 'upstream' | 'to'> },
    private readonly clock: Clock,
  ) {
    this.rule = new FailureRule(failOn)
    this.rejections = counters.rejections.labels(route.name, route.upstream)
    // From 0, so that rate() sees the first rejection and the first transition.
    this.rejections.inc(0)
    const transition = (to: BreakerState) => counters.transitions.labels(route.name, route.upstream, to)
    this.transitions = { closed: transition('closed'), 'half-open': transition('half-open'), open: transition('open') }
    for (const series of Object.values(this.transitions)) series.inc(0)
    const rule = this.rule
    this.circuit = new CircuitBreaker(callCounting(rule), {
      name: `${route.name}/${route.upstream}`,
      timeout: false, // our timeout layers own the deadlines
      errorThresholdPercentage: settings.failureRatio * 100,
      rollingCountTimeout: settings.windowMs,
      rollingCountBuckets: 10,
      volumeThreshold: settings.minRequests,
      // We run `openFor` and half-open ourselves, and opossum stays open meanwhile: in its own
      // half-open, any call that started before it opened and ends then (even a client abort,
      // which errorFilter reports as a success) would close it without a probe.
      resetTimeout: MAX_TIMER_MS,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      // opossum passes fire()'s arguments after the error; @types/opossum 8 leaves them out.
      errorFilter: ((error: unknown, exchange: Exchange) => !rule.failedError(error, exchange)) as (error: unknown) => boolean,
    })
    this.circuit.on('open', () => this.transition('open'))
    this.circuit.on('close', () => this.transition('closed'))
  }

  get stateCode(): number {
    return STATE_CODE[this.state]
  }

  handle(exchange: Exchange, next: Upstream, whenOpen: OpenAnswer): Promise<ProxyResponse> {
    const circuit = this.circuit
    if (circuit.closed) {
      exchange.trace?.event('waypost.breaker', { 'waypost.breaker.state': 'closed', 'waypost.breaker.decision': 'pass' })
      return this.pass(exchange, next)
    }
    if (this.state === 'half-open' && this.probesLeft > 0) {
      exchange.trace?.event('waypost.breaker', { 'waypost.breaker.state': 'half-open', 'waypost.breaker.decision': 'probe' })
      return this.probe(exchange, next)
    }
    exchange.trace?.event('waypost.breaker', { 'waypost.breaker.state': this.state, 'waypost.breaker.decision': 'reject' })
    this.rejections.inc()
    circuit.emit('reject') // opossum counts it in the window's `rejects`, as its own fire() would
    return Promise.resolve(whenOpen(exchange))
  }

  /** What `GET /stats` and the dashboard show: open is red, half-open amber. */
  report(): PolicyReport {
    const now = this.clock.now()
    const openedAt = this.openedAt
    const halfOpenAt = openedAt === undefined || this.state !== 'open' ? undefined : openedAt + this.settings.openForMs
    const stats = this.circuit.stats
    const window = { fires: stats.fires, failures: stats.failures, rejects: stats.rejects }
    if (this.state === 'closed') return { health: 'green', summary: `closed (${stats.failures} of ${stats.fires} failed in the window)`, state: 'closed', upstream: this.route.upstream, halfOpenAt: null, window }
    if (this.state === 'half-open') return { health: 'amber', summary: `half-open: ${this.probesLeft} of ${this.settings.halfOpenProbes} probes left`, state: 'half-open', upstream: this.route.upstream, halfOpenAt: null, window }
    const dueInMs = Math.max(0, (halfOpenAt ?? now) - now)
    return {
      health: 'red',
      summary: `open: half-open in ${(dueInMs / 1000).toFixed(1)} s`,
      state: 'open',
      upstream: this.route.upstream,
      openedAt: openedAt === undefined ? null : new Date(openedAt).toISOString(),
      halfOpenAt: halfOpenAt === undefined ? null : new Date(halfOpenAt).toISOString(),
      halfOpenInMs: dueInMs,
      window,
    }
  }

  /** What `GET /breakers` shows. */
  snapshot(): Record<string, unknown> {
    const stats = this.circuit.stats
    const openedAt = this.openedAt
    return {
      route: this.route.name,
      upstream: this.route.upstream,
      state: this.state,
      stats: { windowMs: this.settings.windowMs, fires: stats.fires, successes: stats.successes, failures: stats.failures, rejects: stats.rejects },
      openedAt: openedAt === undefined ? null : new Date(openedAt).toISOString(),
      halfOpenAt: openedAt === undefined || this.state !== 'open' ? null : new Date(openedAt + this.settings.openForMs).toISOString(),
      halfOpenProbes: this.settings.halfOpenProbes,
    }
  }

  shutdown(): void {
    this.clock.clearTimeout(this.halfOpenTimer)
    this.circuit.shutdown()
  }

  private pass(exchange: Exchange, next: Upstream): Promise<ProxyResponse> {
    // A good answer reaches the client at its headers (`deliver`), while opossum's call lasts until
    // its body has ended, so a body the upstream cuts off counts as the failure it is.
    return new Promise((resolve, reject) => {
      this.circuit.fire(exchange, next, resolve).then(resolve, (error: unknown) => {
        if (error instanceof FailingResponse) resolve(error.response)
        else if (!(error instanceof BodyCutOff)) reject(error) // a cut-off body was delivered already
      })
    })
  }

  /** A half-open probe goes straight to the upstream: opossum is still open, and we count the probes. */
  private async probe(exchange: Exchange, next: Upstream): Promise<ProxyResponse> {
    this.probesLeft--
    const round = this.halfOpenRound
    let response: ProxyResponse
    try {
      response = await next(exchange)
    } catch (error) {
      this.probeSettled(round, this.rule.failedError(error, exchange) ? 'failed' : 'uncounted')
      throw error
    }
    const body = pendingBody(response)
    if (this.rule.failedResponse(response, exchange)) this.probeSettled(round, 'failed')
    else if (body === undefined) this.probeSettled(round, 'succeeded')
    else body.onDone(() => this.probeSettled(round, exchange.record.reason === 'upstream-reset-body' && this.rule.failedError(BODY_CUT_OFF, exchange) ? 'failed' : 'succeeded'))
    return response
  }

  private probeSettled(round: number, outcome: ProbeOutcome): void {
    if (round !== this.halfOpenRound || this.state !== 'half-open') return
    if (outcome === 'failed') this.transition('open')
    else if (outcome === 'uncounted') this.probesLeft++ // the slot goes to the next request
    else if (++this.probesSucceeded >= this.settings.halfOpenProbes) this.circuit.close()
  }

  private transition(to: BreakerState): void {
    const from = this.state
    if (from === to) return
    this.state = to
    this.transitions[to].inc()
    this.clock.clearTimeout(this.halfOpenTimer)
    if (to === 'open') {
      this.openedAt = this.clock.now()
      this.halfOpenTimer = this.clock.setTimeout(this.halfOpen, this.settings.openForMs)
      unrefTimer(this.halfOpenTimer)
    } else if (to === 'closed') {
      this.openedAt = undefined
    } else {
      this.halfOpenRound++
      this.probesLeft = this.settings.halfOpenProbes
      this.probesSucceeded = 0
    }
    const stats = this.circuit.stats
    this.log.warn(
      { route: this.route.name, upstream: this.route.upstream, from, to, window: { ms: this.settings.windowMs, fires: stats.fires, successes: stats.successes, failures: stats.failures, rejects: stats.rejects } },
      `breaker ${from} → ${to}`,
    )
    if (to === 'closed') clearWindow(this.circuit)
  }

  private readonly halfOpen = (): void => this.transition('half-open')
}

/**
 * opossum's action: one per breaker, the exchange, the next layer and where to deliver a good answer
 * come as fire()'s arguments. It settles when the outcome is known: at a failing status or error, or
 * when a good answer's body has ended (rejecting if the upstream cut it off).
 */
function callCounting(rule: FailureRule) {
  return (exchange: Exchange, next: Upstream, deliver: (response: ProxyResponse) => void): Promise<ProxyResponse> =>
    callNext(next, exchange).then((response) => {
      // Unwrapped again in RouteBreaker.pass; thrown only because opossum counts rejections alone.
      if (rule.failedResponse(response, exchange)) throw new FailingResponse(response)
      const body = pendingBody(response)
      if (body === undefined) return response
      deliver(response)
      return new Promise<ProxyResponse>((resolve, reject) =>
        body.onDone(() => (exchange.record.reason === 'upstream-reset-body' ? reject(BODY_CUT_OFF) : resolve(response))),
      )
    })
}

/**
 * opossum keeps its window across a close; without this, the failures from before the breaker
 * opened would reopen it at the first failure after it closed. Its `window` holds the live buckets.
 */
function clearWindow(circuit: CircuitBreaker<[Exchange, Upstream, (response: ProxyResponse) => void], ProxyResponse>): void {
  for (const bucket of circuit.status.window) {
    bucket.fires = 0
    bucket.successes = 0
    bucket.failures = 0
    bucket.rejects = 0
    bucket.timeouts = 0
    bucket.latencyTimes.length = 0
  }
}

/**
 * The live breakers of one gateway (one metrics registry): the state gauge reads them at scrape. A
 * breaker joins when created and leaves when disposed (its plan retired); while a reload overlaps
 * two plans, the newest breaker of a route and upstream is the one counted.
 */
class BreakerBoard {
  readonly rejections: Counter<'route' | 'upstream'>
  readonly transitions: Counter<'route' | 'upstream' | 'to'>
  private readonly live = new Set<RouteBreaker>()

  constructor(registry: Registry) {
    // Read at scrape time, so a retired breaker's series goes with it.
    const state: Gauge<'route' | 'upstream'> = new Gauge({
      name: 'waypost_breaker_state',
      help: 'Circuit breaker state by route and upstream: 0 closed, 1 half-open, 2 open.',
      labelNames: ['route', 'upstream'] as const,
      registers: [registry],
      // Across workers (each has its own breakers): the most open any worker's is, never a sum.
      aggregator: 'max',
      collect: () => {
        state.reset()
        for (const breaker of this.list()) state.labels(breaker.route.name, breaker.route.upstream).set(breaker.stateCode)
      },
    })
    this.rejections = new Counter({
      name: 'waypost_breaker_rejections_total',
      help: 'Requests a breaker turned away from the upstream (open, or half-open beyond its probes), by route and upstream.',
      labelNames: ['route', 'upstream'] as const,
      registers: [registry],
    })
    // Transitions are rare (at most one per openFor): prom-client's own counter costs nothing here.
    this.transitions = new Counter({
      name: 'waypost_breaker_transitions_total',
      help: 'Circuit breaker state changes, by route, upstream and the state entered (to: open, half-open, closed).',
      labelNames: ['route', 'upstream', 'to'] as const,
      registers: [registry],
    })
  }

  add(breaker: RouteBreaker): RouteBreaker {
    this.live.add(breaker)
    return breaker
  }

  remove(breaker: RouteBreaker): void {
    this.live.delete(breaker)
  }

  list(): RouteBreaker[] {
    const newest = new Map<string, RouteBreaker>()
    for (const breaker of this.live) newest.set(`${breaker.route.name}\0${breaker.route.upstream}`, breaker)
    return [...newest.values()]
  }
}

const boards = new WeakMap<Registry, BreakerBoard>()

function boardFor(registry: Registry): BreakerBoard {
  let board = boards.get(registry)
  if (board === undefined) boards.set(registry, (board = new BreakerBoard(registry)))
  return board
}

function openAnswer(fallback: BreakerConfig['fallback'], deps: Deps<RouteBreaker>): OpenAnswer {
  if (fallback === undefined) return (exchange) => localResponse(503, 'breaker-open', exchange)
  if ('upstream' in fallback) {
    const name = fallback.upstream
    const upstream = deps.upstream(name)
    return async (exchange) => {
      exchange.record.reason = 'breaker-fallback'
      const response = await upstream(exchange)
      response.headers['x-waypost-reason'] = `breaker-fallback route=${exchange.route.name} upstream=${exchange.route.upstream} fallback=${name}`
      return response
    }
  }
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(fallback.headers ?? {})) headers[name.toLowerCase()] = value
  const body = fallback.body === undefined ? undefined : Buffer.from(fallback.body)
  return (exchange) => {
    const answer = localResponse(fallback.status, 'breaker-open', exchange, headers)
    return body === undefined ? answer : { ...answer, body }
  }
}

const breakersEndpoint: AdminEndpoint<RouteBreaker> = {
  method: 'GET',
  path: '/breakers',
  description: 'circuit breakers: state, window stats, when half-open is due',
  handle: (breakers) => ({ status: 200, body: { breakers: breakers.map((breaker) => breaker.snapshot()) } }),
}

export const breaker = definePolicy({
  name: 'breaker',
  schema: BreakerConfig,
  admin: [breakersEndpoint],
  localReasons: (config) => (config.fallback !== undefined && 'upstream' in config.fallback ? ['breaker-fallback'] : ['breaker-open']),
  validate(config, context: ValidateContext) {
    const problems = []
    const fallback = config.fallback
    if (fallback !== undefined && 'upstream' in fallback && !context.upstreams.has(fallback.upstream)) {
      problems.push({ path: '/fallback/upstream', message: `unknown upstream "${fallback.upstream}"; defined: ${[...context.upstreams].join(', ') || 'none'}` })
    }
    if (config.window !== undefined && toMs(config.window) < 100) problems.push({ path: '/window', message: 'expected at least 100ms' })
    return problems
  },
  build(section, deps: Deps<RouteBreaker>) {
    const config = section as ResolvedBreakerConfig
    const route = deps.route
    const board = boardFor(deps.metrics)
    // What it protects is part of the identity: a route moved to another upstream, or an upstream
    // moved to other endpoints (a rollback to a good address), starts closed.
    const kept = deps.keep(
      'breaker',
      { upstream: route.upstream, target: deps.target, config },
      () => board.add(new RouteBreaker(route, settingsOf(config), config.failOn, deps.log, board, deps.clock)),
      (retired) => {
        board.remove(retired)
        retired.shutdown()
      },
    )
    deps.expose(kept)
    deps.report(() => kept.report())
    const whenOpen = openAnswer(config.fallback, deps)
    return (next) => (exchange) => kept.handle(exchange, next, whenOpen)
  },
})
