// The policy contract (docs/architecture.md): a policy is a YAML section under `policies:` with its
// schema, a factory for its layer, an optional cross-field check, and optional admin endpoints. It
// reaches the gateway only through `Deps`; the server never names a policy.
import type { BlockList } from 'node:net'
import type { Static, TSchema } from '@sinclair/typebox'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { IncomingMessage } from 'node:http'
import type { Clock } from '../core/clock.js'
import type { OperatorCheck } from '../core/operator.js'
import type { Layer, RouteInfo, Upstream } from '../core/exchange.js'
import type { Reason } from '../core/reasons.js'
import type { RedisConfig } from '../store/redis.js'
import type { SecurityEvents } from '../telemetry/security-log.js'
import { withDefaults } from '../core/schema-defaults.js'

/** What a policy may use when it builds its layer. `Exposed` is what it offers its admin endpoints. */
export interface Deps<Exposed = never> {
  readonly route: RouteInfo
  readonly log: Logger
  readonly metrics: Registry
  readonly clock: Clock
  /** The top-level `redis` section, for policies that share state across replicas. */
  readonly redis: RedisConfig | undefined
  /** Peers whose X-Forwarded-For is believed (listen.trustedProxies), for layers that key on the client. */
  readonly trustedProxies: BlockList | undefined
  /**
   * State that survives a reload while the policy's config is unchanged: the compiler keys it by
   * route name, policy name and config hash, and drops what the new plan no longer uses.
   */
  keep<T>(name: string, config: unknown, create: () => T, dispose?: (value: T) => void): T
  /** The dispatch to another upstream of the plan (for fallbacks); the name is known to exist. */
  upstream(name: string): Upstream
  /**
   * The route's upstream section as written (its endpoints, DNS name, pools): part of the identity of
   * state about that upstream, so a changed target (a rollback to another address) starts afresh.
   */
  readonly target: unknown
  /** Offers a value to this policy's admin endpoints for as long as this plan is in force. */
  expose(value: Exposed): void
  /**
   * Offers the route's state of this policy to `GET /stats` and the dashboard, for as long as this
   * plan is in force: `probe` is called about once a second, and must be cheap.
   */
  report(probe: () => PolicyReport): void
  /** Whether the caller may act as an operator: on loopback, or presenting the admin token. */
  operator(request: IncomingMessage): Promise<OperatorCheck>
  /** The security log (authentication failures, denials): never given a credential. */
  readonly security: SecurityEvents
  /**
   * Holds `/ready` at 503 until `ready` resolves (a JWKS fetched, keys loaded), for as long as this
   * plan is in force; `what` is named in the 503's body. Never rejects: a dependency that fails
   * keeps trying and resolves when it first succeeds.
   */
  awaitBeforeReady(what: string, ready: Promise<void>): void
  /** A file path from the policy file, made absolute: relative paths are read from the policy file's folder. */
  path(file: string): string
}

/** Green: nothing to see; amber: working as configured but under pressure (limiting, half-open); red: refusing (open breaker). */
export type Health = 'green' | 'amber' | 'red'

/** What the dashboard shows of one policy on one route: a colour, one line, and details for /stats. */
export interface PolicyReport {
  readonly health: Health
  readonly summary: string
  readonly [detail: string]: unknown
}

/**
 * How much a running total grew over the last `windowMs` (default 10 s), for reports that turn
 * amber while a policy is acting (limiting, shedding): call it with the total at each probe.
 */
export function recentIncrease(windowMs = 10_000): (total: number, now?: number) => number {
  const samples: Array<{ at: number; total: number }> = []
  return (total, now = performance.now()) => {
    samples.push({ at: now, total })
    while (samples.length > 2 && samples[1]!.at <= now - windowMs) samples.shift()
    return total - samples[0]!.total
  }
}

/** A problem a policy's own check found; `path` is a JSON pointer below its section ('' for the section). */
export interface ConfigProblem {
  readonly path: string
  readonly message: string
}

/** What a policy's cross-field check may know of the rest of the file. */
export interface ValidateContext {
  readonly upstreams: ReadonlySet<string>
  readonly redis: boolean
}

export interface AdminRequest {
  readonly query: URLSearchParams
  /** The parsed JSON body of a POST; undefined when it had none. */
  readonly body: unknown
}

/** A JSON answer. */
export interface AdminReply {
  readonly status: number
  readonly body: unknown
}

/** An admin endpoint a policy offers (GET /breakers, POST /cache/purge): the server lists and routes them. */
export interface AdminEndpoint<Exposed> {
  readonly method: 'GET' | 'POST'
  readonly path: string
  /** One line for the admin API's index and docs. */
  readonly description: string
  /** `exposed`: what this policy's layers in the plan in force offered through `deps.expose()`. */
  handle(exposed: ReadonlyArray<Exposed>, request: AdminRequest): AdminReply | Promise<AdminReply>
}

export interface Policy<Name extends string = string, S extends TSchema = TSchema, Exposed = never> {
  /** The YAML key under `policies:`. */
  readonly name: Name
  /** Its section; fields' `default`s are filled in (by definePolicy) before its functions see the config. */
  readonly schema: S
  /** The layer around the exchange, at the policy's place in the registry; null when the config asks for none. */
  build(config: Static<S>, deps: Deps<Exposed>): Layer | null
  /** A layer around each upstream attempt, inside retry (the per-try timeout); null for none. */
  buildAttempt?(config: Static<S>, deps: Deps<Exposed>): Layer | null
  /** Checks the schema cannot express (a reference to an upstream, base ≤ max). */
  validate?(config: Static<S>, context: ValidateContext): ConfigProblem[]
  readonly admin?: ReadonlyArray<AdminEndpoint<Exposed>>
  /**
   * Request headers this policy sets for the upstream (identity headers): the compiler strips them
   * from the client's request on every route of the plan, with or without this policy, so a client
   * can never forge them on a route that does not set them. Lower-case names.
   */
  ownedRequestHeaders?(config: Static<S>): readonly string[]
  /**
   * The reasons of the local answers this config may make: on a route using it, their series of
   * waypost_local_responses_total exist from the start, at 0 (rate() then sees the first one too).
   */
  localReasons?(config: Static<S>): readonly Reason[]
  /**
   * The config one of `workers` processes applies when each keeps its own state (docs/operations/workers.md):
   * a limit meant for the whole gateway, divided among them. Called by the compiler only when
   * workers > 1; `divided` says what changed, for GET /config. Without it, the config applies as
   * written in every worker (its state is per worker, and the docs say so).
   */
  perWorker?(config: Static<S>, workers: number): { config: Static<S>; divided: ReadonlyArray<PerWorkerLimit> }
}

/** One limit a policy divided among the workers (GET /config `workers.limits`). */
export interface PerWorkerLimit {
  readonly field: string
  readonly configured: number
  readonly perWorker: number
}

/**
 * Keeps a policy's literal name and its types for the registry, and fills the schema's defaults
 * into the section before `build`, `buildAttempt` and `validate` see it, whoever calls them: a
 * policy may rely on every defaulted field being there.
 */
export function definePolicy<const Name extends string, S extends TSchema, Exposed = never>(policy: Policy<Name, S, Exposed>): Policy<Name, S, Exposed> {
  const { build, buildAttempt, validate, localReasons, ownedRequestHeaders, perWorker } = policy
  return {
    ...policy,
    perWorker: perWorker === undefined ? undefined : (config, workers) => perWorker(withDefaults(policy.schema, config), workers),
    ownedRequestHeaders: ownedRequestHeaders === undefined ? undefined : (config) => ownedRequestHeaders(withDefaults(policy.schema, config)),
    localReasons: localReasons === undefined ? undefined : (config) => localReasons(withDefaults(policy.schema, config)),
    build: (config, deps) => build(withDefaults(policy.schema, config), deps),
    buildAttempt: buildAttempt === undefined ? undefined : (config, deps) => buildAttempt(withDefaults(policy.schema, config), deps),
    validate: validate === undefined ? undefined : (config, context) => validate(withDefaults(policy.schema, config), context),
  }
}
