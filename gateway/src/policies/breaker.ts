// A circuit breaker per route and upstream. Closed: every call is counted in a rolling window, and
// the breaker opens once more than `failureRatio` of at least `minRequests` calls in it failed.
// Open: the gateway answers itself (503 breaker-open, or the fallback) without touching the
// upstream. After `openFor`, half-open: exactly `halfOpenProbes` requests go through; the breaker
// closes once all of them succeeded (with an empty window) and reopens at the first that fails.
//
// A failing status still reaches the client as the upstream sent it; it only counts. A good status
// counts as a success only once its body has ended whole: a body the upstream cuts off
// (upstream-reset-body) is a connection error, though the client had its headers at once. Errors
// that are not the upstream's fault (the client left, the whole-exchange deadline passed) do not
// count as failures. The breaker is kept across reloads while its config is unchanged.
//
// Not opossum, though the project chose it at first: its fire() wraps each call in promises and
// events, and waiting there for a good answer's body to end took 12% more CPU per request than the
// bare route, against 6% for this window (docs/performance.md#what-profiling-changed). Its own
// open period and half-open did not fit either (one probe, closed by any success), so we ran those
// ourselves and used it only for the counting.
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

  /** A good answer's body has ended: whole, or cut off by the upstream (a connection error). */
  failedBody(exchange: Exchange): boolean {
    return this.connectionErrors && exchange.record.reason === 'upstream-reset-body'
  }

  failedError(error: unknown, exchange: Exchange): boolean {
    // The client left or the whole-exchange deadline passed: nothing the upstream did.
    if (exchange.signal.aborted) return false
    const status = answerForError(error).status
    if (status === 504) return this.timeouts
    if (status === 502) return this.connectionErrors
    return false // 4xx: the request was at fault
  }
}

/** What one slice of the window counts. */
export interface WindowCounts {
  fires: number
  successes: number
  failures: number
  rejects: number
}

/** Slices per window: a call leaves the window between 90% and 100% of `window` after it settled. */
const SLICES = 10

/**
 * The outcomes of the last `window`, in SLICES slices of time. A slice is cleared when the clock
 * first reaches it again, so the window needs no timer of its own and counting costs a clock read.
 */
export class RollingWindow {
  private readonly slices: WindowCounts[] = Array.from({ length: SLICES }, () => ({ fires: 0, successes: 0, failures: 0, rejects: 0 }))
  /** The number of the slice last counted in, since the epoch. */
  private currentSlice: number

  constructor(
    private readonly sliceMs: number,
    private readonly clock: Clock,
  ) {
    this.currentSlice = Math.floor(clock.now() / sliceMs)
  }

  /** The slice to count in now; slices the clock has moved past since are emptied first. */
  now(): WindowCounts {
    const slice = Math.floor(this.clock.now() / this.sliceMs)
    if (slice !== this.currentSlice) {
      // A clock stepped back counts on in its current slice rather than clearing the window.
      if (slice > this.currentSlice) for (let n = this.currentSlice + 1; n <= Math.min(slice, this.currentSlice + SLICES); n++) clearCounts(this.slices[n % SLICES]!)
      this.currentSlice = Math.max(slice, this.currentSlice)
    }
    return this.slices[this.currentSlice % SLICES]!
  }

  totals(): WindowCounts {
    this.now()
    const totals = { fires: 0, successes: 0, failures: 0, rejects: 0 }
    for (const slice of this.slices) {
      totals.fires += slice.fires
      totals.successes += slice.successes
      totals.failures += slice.failures
      totals.rejects += slice.rejects
    }
    return totals
  }

  clear(): void {
    for (const slice of this.slices) clearCounts(slice)
  }
}

function clearCounts(counts: WindowCounts): void {
  counts.fires = 0
  counts.successes = 0
  counts.failures = 0
  counts.rejects = 0
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
  private readonly window: RollingWindow
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
    this.window = new RollingWindow(settings.windowMs / SLICES, clock)
  }

  get stateCode(): number {
    return STATE_CODE[this.state]
  }

  handle(exchange: Exchange, next: Upstream, whenOpen: OpenAnswer): Promise<ProxyResponse> {
    if (this.state === 'closed') {
      exchange.trace?.event('waypost.breaker', { 'waypost.breaker.state': 'closed', 'waypost.breaker.decision': 'pass' })
      return this.pass(exchange, next)
    }
    if (this.state === 'half-open' && this.probesLeft > 0) {
      exchange.trace?.event('waypost.breaker', { 'waypost.breaker.state': 'half-open', 'waypost.breaker.decision': 'probe' })
      return this.probe(exchange, next)
    }
    exchange.trace?.event('waypost.breaker', { 'waypost.breaker.state': this.state, 'waypost.breaker.decision': 'reject' })
    this.rejections.inc()
    this.window.now().rejects++
    return Promise.resolve(whenOpen(exchange))
  }

  /** What `GET /stats` and the dashboard show: open is red, half-open amber. */
  report(): PolicyReport {
    const now = this.clock.now()
    const openedAt = this.openedAt
    const halfOpenAt = openedAt === undefined || this.state !== 'open' ? undefined : openedAt + this.settings.openForMs
    const stats = this.window.totals()
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
    const stats = this.window.totals()
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
  }

  /**
   * A closed breaker's call: counted when it starts, and its outcome when known. A good answer goes
   * on at its headers, but counts only once its body has ended, so a body the upstream cuts off
   * counts as the failure it is.
   */
  private pass(exchange: Exchange, next: Upstream): Promise<ProxyResponse> {
    this.window.now().fires++
    return callNext(next, exchange).then(
      (response) => {
        if (this.rule.failedResponse(response, exchange)) {
          this.failed()
          return response
        }
        const body = pendingBody(response)
        if (body === undefined) this.succeeded()
        else body.onDone(() => (this.rule.failedBody(exchange) ? this.failed() : this.succeeded()))
        return response
      },
      (error: unknown) => {
        // Not the upstream's doing (the client left, a 4xx): a call that did not fail.
        if (this.rule.failedError(error, exchange)) this.failed()
        else this.succeeded()
        throw error
      },
    )
  }

  private succeeded(): void {
    this.window.now().successes++
  }

  /** A failure in the window: a closed breaker opens once the window holds enough calls and too many failed. */
  private failed(): void {
    this.window.now().failures++
    if (this.state !== 'closed') return
    const { fires, failures } = this.window.totals()
    if (fires >= this.settings.minRequests && failures > fires * this.settings.failureRatio) this.transition('open')
  }

  /** A half-open probe: counted apart from the window, which starts empty once the probes close the breaker. */
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
    else body.onDone(() => this.probeSettled(round, this.rule.failedBody(exchange) ? 'failed' : 'succeeded'))
    return response
  }

  private probeSettled(round: number, outcome: ProbeOutcome): void {
    if (round !== this.halfOpenRound || this.state !== 'half-open') return
    if (outcome === 'failed') this.transition('open')
    else if (outcome === 'uncounted') this.probesLeft++ // the slot goes to the next request
    else if (++this.probesSucceeded >= this.settings.halfOpenProbes) this.transition('closed')
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
    const stats = this.window.totals()
    this.log.warn(
      { route: this.route.name, upstream: this.route.upstream, from, to, window: { ms: this.settings.windowMs, fires: stats.fires, successes: stats.successes, failures: stats.failures, rejects: stats.rejects } },
      `breaker ${from} → ${to}`,
    )
    // On closing, the failures from before it opened are forgotten: else the first failure after
    // would reopen it.
    if (to === 'closed') this.window.clear()
  }

  private readonly halfOpen = (): void => this.transition('half-open')
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
    // A longer timer would fire at once in Node, half-opening the breaker as soon as it opened.
    if (config.openFor !== undefined && toMs(config.openFor) > MAX_TIMER_MS) problems.push({ path: '/openFor', message: 'expected at most 596h (24.8 days)' })
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
