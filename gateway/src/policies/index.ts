// The ordered registry of policies: the one list that the layer order, the `policies:` schema (and
// so config/waypost.schema.json) and the docs' order come from. Adding a policy is its folder plus
// one line here. Outermost first; why this order:
// - auth: who the client is is settled before anything counts or spends on the request (a
//   refused credential costs nothing further), and identity-keyed rate limits need it;
// - authz: right after, on the identity auth proved (or the listener's client certificate);
// - rateLimit: a refused request costs nothing further (not even reading its body);
// - buffer: a body is read whole before anything below takes an upstream socket or a slot, and
//   before the request deadline starts, so upload time is the client's, not the upstream's;
// - timeout: the request deadline is outside everything that waits on the upstream, so injected
//   delays, queueing and retries count against it (its per-try deadline sits around each attempt,
//   inside retry);
// - cache: outside everything that guards the upstream, so a hit never takes a slot, a breaker
//   probe or a retry (waiting on another request's miss still counts against the deadline);
// - fault: injected faults land where the upstream would be, but outside the limits;
// - concurrency, adaptiveConcurrency: what is admitted to the upstream;
// - breaker outside retry, so it sees one outcome per exchange; retry innermost of the exchange layers.
import { Type, type Static, type TLiteral, type TSchema, type TObject, type TOptional, type TUnion } from '@sinclair/typebox'
import { auth } from './auth/auth.js'
import { authz } from './authz/authz.js'
import { timeout } from './timeout.js'
import { rateLimit } from './rate-limit/rate-limit.js'
import { buffer } from './buffer/buffer.js'
import { cache } from './cache/cache.js'
import { fault } from './fault.js'
import { concurrency } from './concurrency.js'
import { adaptiveConcurrency } from './adaptive-concurrency/adaptive-concurrency.js'
import { breaker } from './breaker.js'
import { retry } from './retry/retry.js'
import type { Policy } from './policy.js'

export const policies = [auth, authz, rateLimit, buffer, timeout, cache, fault, concurrency, adaptiveConcurrency, breaker, retry] as const

type Registered = (typeof policies)[number]

/** A route's `policies:` section: each registered policy's own section, or `false` to switch a default off. */
export type PoliciesConfig = { [P in Registered as P['name']]?: Static<P['schema']> | false }

type PoliciesSchema = TObject<{ [P in Registered as P['name']]: TOptional<TUnion<[P['schema'], TLiteral<false>]>> }>

export const PoliciesConfig = Type.Object(
  Object.fromEntries(policies.map((policy) => [policy.name, Type.Optional(Type.Union([policy.schema, Type.Literal(false)]))])),
  {
    additionalProperties: false,
    description: `Policies applied to a route, in a fixed order: ${policies.map((policy) => policy.name).join(' → ')} → per-try timeout → upstream. Each section may be \`false\` to switch off a default for one route.`,
  },
) as unknown as PoliciesSchema

/** The registry as the compiler and the admin API walk it, each policy's own types erased. */
export const registry: ReadonlyArray<Policy<string, TSchema, unknown>> = policies
