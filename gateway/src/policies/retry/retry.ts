// Retries, safe by default. What users of other meshes get burnt by, and what this layer does:
// - non-idempotent requests retried: only GET, HEAD, OPTIONS, TRACE, PUT and DELETE are retried,
//   unless the route opts in or the request carries an `Idempotency-Key`;
// - bodies that cannot be replayed: a body is kept in memory up to `bodyLimit`; a bigger one
//   streams once and is not retried;
// - retry storms: a budget (budget.ts) caps retries at a fraction of live traffic;
// - thundering herds: exponential backoff with full jitter, `Retry-After` honoured;
// - invisible retries: `x-waypost-attempts` on the response, each attempt's outcome in the
//   access line (`tries`) and in `waypost_upstream_attempts_total`.
// It sits inside the breaker and outside the per-try timeout, so each attempt gets its own
// deadline and the whole exchange stays within `timeout.request`.
import { Type, type Static } from '@sinclair/typebox'
import { duration, size, toBytes, toMs } from '../../core/units.js'
import type { Reason } from '../../core/reasons.js'
import { answerForError } from '../../proxy/errors.js'
import { pendingCount, sharedCounter } from '../../telemetry/metrics.js'
import { callNext, discardResponse, sleep, type Exchange, type ProxyResponse, type Upstream } from '../../core/exchange.js'
import { definePolicy, recentIncrease } from '../policy.js'
import type { Defaulted } from '../../core/schema-defaults.js'
import { RetryBudget, RetryBudgetConfig } from './budget.js'
import { readReplayableBody } from '../../core/request-body.js'

const RetryCondition = Type.Union(
  [Type.Literal('connect-failure'), Type.Literal('reset'), Type.Literal('attempt-timeout'), Type.Literal('status')],
  { errorMessage: 'expected one of connect-failure, reset, attempt-timeout, status' },
)

export const RetryConfig = Type.Object(
  {
    attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 10, default: 3, description: 'Most attempts, the first included.' })),
    retryOn: Type.Optional(
      Type.Array(RetryCondition, {
        description:
          'What is retried: `connect-failure` (refused, unreachable, DNS, connect timeout), `reset` (connection reset or closed before the response), ' +
          '`attempt-timeout` (timeout.perTry passed), `status` (a status in `statuses`).',
        default: ['connect-failure', 'reset', 'attempt-timeout', 'status'],
      }),
    ),
    statuses: Type.Optional(Type.Array(Type.Integer({ minimum: 100, maximum: 599 }), { default: [502, 503, 504], description: 'Statuses retried under `status`.' })),
    backoff: Type.Optional(
      Type.Object(
        { base: Type.Optional(duration({ default: '25ms', description: 'The first retry waits up to this.' })), max: Type.Optional(duration({ default: '250ms', description: 'No retry waits longer than this.' })) },
        { additionalProperties: false, default: {}, description: 'Exponential backoff with full jitter: before retry n, wait a random time up to min(max, base × 2^(n-1)).' },
      ),
    ),
    retryAfterMax: Type.Optional(duration({ default: '1s', description: 'A Retry-After up to this is waited for; a longer one is not retried.' })),
    nonIdempotent: Type.Optional(Type.Boolean({ default: false, description: 'Also retry POST, PATCH and other non-idempotent methods (otherwise they are retried only with an Idempotency-Key header).' })),
    bodyLimit: Type.Optional(size({ default: '64KiB', description: 'Request bodies up to this are kept for replay; bigger ones are sent once and not retried.' })),
    budget: Type.Optional(Type.Union([RetryBudgetConfig, Type.Literal(false)], { default: {}, description: 'The retry budget; `false` turns it off.' })),
  },
  {
    additionalProperties: false,
    description:
      'Retries with backoff and a budget.',
  },
)
export type RetryConfig = Static<typeof RetryConfig>
type ResolvedRetryConfig = Defaulted<RetryConfig, 'attempts' | 'retryOn' | 'statuses' | 'backoff' | 'retryAfterMax' | 'nonIdempotent' | 'bodyLimit' | 'budget'> & {
  backoff: Defaulted<NonNullable<RetryConfig['backoff']>, 'base' | 'max'>
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
const CONNECT_FAILURES = new Set<Reason>(['connect-refused', 'connect-failed', 'connect-timeout', 'dns-failure'])
const RESETS = new Set<Reason>(['upstream-reset', 'upstream-closed'])
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx']

interface RetrySettings {
  readonly attempts: number
  readonly onConnectFailure: boolean
  readonly onReset: boolean
  readonly onAttemptTimeout: boolean
  readonly statuses: ReadonlySet<number>
  readonly backoffBaseMs: number
  readonly backoffMaxMs: number
  readonly retryAfterMaxMs: number
  readonly nonIdempotent: boolean
  readonly bodyLimit: number
}

function settingsOf(config: ResolvedRetryConfig): RetrySettings {
  const retryOn = new Set(config.retryOn)
  return {
    attempts: config.attempts,
    onConnectFailure: retryOn.has('connect-failure'),
    onReset: retryOn.has('reset'),
    onAttemptTimeout: retryOn.has('attempt-timeout'),
    statuses: new Set(retryOn.has('status') ? config.statuses : []),
    backoffBaseMs: toMs(config.backoff.base),
    backoffMaxMs: toMs(config.backoff.max),
    retryAfterMaxMs: toMs(config.retryAfterMax),
    nonIdempotent: config.nonIdempotent,
    bodyLimit: toBytes(config.bodyLimit),
  }
}

/** Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number | undefined {
  if (typeof value !== 'string') return undefined
  if (/^\d+$/.test(value)) return Number(value) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads retries of many clients apart. */
function backoffMs(settings: RetrySettings, retry: number): number {
  return Math.random() * Math.min(settings.backoffMaxMs, settings.backoffBaseMs * 2 ** (retry - 1))
}

/** One attempt's result, classified once. */
interface Outcome {
  readonly response: ProxyResponse | undefined
  readonly error: unknown
  /** The status, or the reason the attempt failed: what the metrics and the access line show. */
  readonly label: string
  readonly retriable: boolean
}

function classify(settings: RetrySettings, exchange: Exchange, response: ProxyResponse | undefined, error: unknown): Outcome {
  if (response !== undefined) {
    if (response.origin === 'local') {
      const reason = exchange.record.reason
      return { response, error, label: reason, retriable: reason === 'attempt-timeout' && settings.onAttemptTimeout }
    }
    return { response, error, label: String(response.status), retriable: settings.statuses.has(response.status) }
  }
  const reason = answerForError(error).reason
  const retriable = !exchange.signal.aborted && ((settings.onConnectFailure && CONNECT_FAILURES.has(reason)) || (settings.onReset && RESETS.has(reason)))
  return { response, error, label: reason, retriable }
}

export const retry = definePolicy({
  name: 'retry',
  schema: RetryConfig,
  validate(config) {
    const backoff = config.backoff
    if (backoff?.base !== undefined && backoff.max !== undefined && toMs(backoff.base) > toMs(backoff.max)) {
      return [{ path: '/backoff/base', message: `base (${backoff.base}) is longer than max (${backoff.max})` }]
    }
    return []
  },
  build(section, deps) {
    const config = section as ResolvedRetryConfig
    const settings = settingsOf(config)
    if (settings.attempts <= 1) return null
    const clock = deps.clock
    const budgetConfig = config.budget
    const budget = budgetConfig === false ? null : deps.keep('retry-budget', budgetConfig, () => RetryBudget.from(budgetConfig))
    const route = deps.route.name
    const attemptsCounter = sharedCounter(deps.metrics, 'waypost_upstream_attempts_total', 'Upstream attempts, by route and outcome (status class, or the reason the attempt failed).', ['route', 'outcome'])
    const retriesCounter = sharedCounter(deps.metrics, 'waypost_retries_total', 'Retries made, by route and the outcome that caused them.', ['route', 'cause'])
    const budgetExhausted = pendingCount(sharedCounter(deps.metrics, 'waypost_retry_budget_exhausted_total', 'Retries refused because the retry budget was spent, by route.', ['route']), route)
    const byClass = STATUS_CLASSES.map((statusClass) => pendingCount(attemptsCounter, route, statusClass))
    const spentLately = recentIncrease()
    deps.report(() => {
      const refused = spentLately(budgetExhausted.total)
      return {
        health: refused > 0 ? 'amber' : 'green',
        summary: `up to ${settings.attempts} attempts${budget === null ? ', no budget' : `; ${refused} retries refused by the budget in 10 s`}`,
        attempts: settings.attempts,
        budgetRefusedLately: refused,
      }
    })

    const countAttempt = (outcome: Outcome): void => {
      const status = outcome.response?.origin === 'upstream' ? outcome.response.status : 0
      if (status >= 100) byClass[Math.min(Math.floor(status / 100), 5) - 1]!.inc()
      else attemptsCounter.labels(route, outcome.label).inc()
    }

    /** Hands the last outcome to the client: its response with the attempt count, or its error. */
    const finish = (exchange: Exchange, outcome: Outcome): ProxyResponse => {
      if (outcome.response === undefined) throw outcome.error
      outcome.response.headers['x-waypost-attempts'] = String(exchange.record.attempts)
      return outcome.response
    }

    return (next: Upstream) => {
      /** Attempts after the first, entered only when the first one's outcome asks for a retry. */
      const retryAfterFirst = async (exchange: Exchange, current: Exchange, attempts: number, first: Outcome): Promise<ProxyResponse> => {
        const record = exchange.record
        let outcome = first
        for (let attempt = 1; ; attempt++) {
          if (attempt > 1) {
            let response: ProxyResponse | undefined
            let error: unknown
            try {
              response = await next(current)
            } catch (caught) {
              error = caught
            }
            outcome = classify(settings, exchange, response, error)
            countAttempt(outcome)
          }
          record.tries = attempt === 1 ? outcome.label : `${record.tries},${outcome.label}`
          if (!outcome.retriable || attempt >= attempts || exchange.signal.aborted) return finish(exchange, outcome)

          const response = outcome.response
          let waitMs = backoffMs(settings, attempt)
          if (response !== undefined && response.origin === 'upstream') {
            const retryAfter = retryAfterMs(response.headers['retry-after'], clock.now())
            if (retryAfter !== undefined) {
              if (retryAfter > settings.retryAfterMaxMs) {
                record.tries += ',retry-after-too-long'
                return finish(exchange, outcome)
              }
              waitMs = Math.max(waitMs, retryAfter)
            }
          }
          if (budget !== null && !budget.tryWithdraw(clock.now())) {
            record.tries += ',budget-exhausted'
            budgetExhausted.inc()
            return finish(exchange, outcome)
          }
          retriesCounter.labels(route, outcome.label).inc()
          if (response !== undefined) discardResponse(response, new Error('retried'))
          record.reason = ''
          await sleep(waitMs, exchange.signal, clock)
          current = { ...current, attempt }
        }
      }

      /** The first attempt: the common case, an outcome that needs no retry, ends here without the loop. */
      const firstAttempt = (exchange: Exchange, current: Exchange, attempts: number): Promise<ProxyResponse> => {
        const settle = (response: ProxyResponse | undefined, error: unknown): ProxyResponse | Promise<ProxyResponse> => {
          const outcome = classify(settings, exchange, response, error)
          countAttempt(outcome)
          if (!outcome.retriable || attempts === 1) return finish(exchange, outcome)
          return retryAfterFirst(exchange, current, attempts, outcome)
        }
        return callNext(next, current).then(
          (response) => settle(response, undefined),
          (error: unknown) => settle(undefined, error),
        )
      }

      /** A body that may be sent more than once is read into memory first (up to bodyLimit). */
      const withReplayableBody = async (exchange: Exchange, attempts: number): Promise<ProxyResponse> => {
        const request = exchange.request
        request.sendContinue?.()
        const body = await readReplayableBody(request.incoming, settings.bodyLimit, exchange.signal)
        if (body === undefined) return firstAttempt(exchange, exchange, 1)
        return firstAttempt(exchange, { ...exchange, request: { ...request, body, sendContinue: undefined } }, attempts)
      }

      return (exchange: Exchange) => {
        const request = exchange.request
        budget?.recordRequest(clock.now())
        const attempts = IDEMPOTENT.has(request.method) || settings.nonIdempotent || request.incoming.headers['idempotency-key'] !== undefined ? settings.attempts : 1
        if (attempts > 1 && request.hasBody && request.body === undefined) return withReplayableBody(exchange, attempts)
        return firstAttempt(exchange, exchange, attempts)
      }
    }
  },
})
