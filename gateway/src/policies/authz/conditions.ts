// The rule language of `authz`: each condition of a rule compiled once, when the plan is built, into
// a predicate over the exchange. A rule matches when all of its conditions hold; one language
// covers roles (RBAC) and any attribute of the identity, the request or the time (ABAC).
import { Type, type Static } from '@sinclair/typebox'
import type { BlockList } from 'node:net'
import { RE2JS } from 're2js'
import type { Exchange } from '../../core/exchange.js'
import type { Identity } from '../../core/identity.js'
import { addressList, inList, parseCidr } from '../../core/cidr.js'
import type { Clock } from '../../core/clock.js'
import { originatingClient } from '../../proxy/headers.js'
import type { ConfigProblem } from '../policy.js'

const Scalar = Type.Union([Type.String(), Type.Number(), Type.Boolean()])

const StringMatch = Type.Union(
  [
    Type.String({ description: 'Exactly this value.' }),
    Type.Object({ equals: Type.String() }, { additionalProperties: false }),
    Type.Object({ oneOf: Type.Array(Type.String(), { minItems: 1 }) }, { additionalProperties: false }),
    Type.Object({ regex: Type.String() }, { additionalProperties: false }),
    Type.Object({ present: Type.Boolean() }, { additionalProperties: false }),
  ],
  { errorMessage: 'expected a value, { equals }, { oneOf: [...] }, { regex } or { present: true|false }' },
)
type StringMatch = Static<typeof StringMatch>

const ClaimMatch = Type.Union(
  [
    Type.Object({ equals: Scalar }, { additionalProperties: false }),
    Type.Object({ oneOf: Type.Array(Scalar, { minItems: 1 }) }, { additionalProperties: false }),
    Type.Object({ contains: Scalar }, { additionalProperties: false }),
    Type.Object({ regex: Type.String() }, { additionalProperties: false }),
    Type.Object({ present: Type.Boolean() }, { additionalProperties: false }),
  ],
  { errorMessage: 'expected { equals }, { oneOf: [...] }, { contains } (a list claim), { regex } or { present: true|false }' },
)
type ClaimMatch = Static<typeof ClaimMatch>

const ListMatch = Type.Union(
  [
    Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Any one of these.' }),
    Type.Object({ anyOf: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }) }, { additionalProperties: false }),
    Type.Object({ allOf: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }) }, { additionalProperties: false }),
  ],
  { errorMessage: 'expected a list (any of), { anyOf: [...] } or { allOf: [...] }' },
)
type ListMatch = Static<typeof ListMatch>

const KINDS = ['anonymous', 'mtls', 'jwt', 'apiKey', 'introspection'] as const
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const

export const Condition = Type.Object(
  {
    kind: Type.Optional(
      Type.Array(Type.Union(KINDS.map((kind) => Type.Literal(kind))), { minItems: 1, errorMessage: `expected a list of ${KINDS.join(', ')}`, description: 'The identity\'s kind is one of these.' }),
    ),
    subject: Type.Optional(StringMatch),
    issuer: Type.Optional(StringMatch),
    roles: Type.Optional(ListMatch),
    scopes: Type.Optional(ListMatch),
    claims: Type.Optional(Type.Record(Type.String({ minLength: 1 }), ClaimMatch, { description: 'Claims by name (a JWT\'s or an introspection answer\'s), each with its own match.' })),
    spiffeId: Type.Optional(StringMatch),
    san: Type.Optional(StringMatch),
    methods: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z]+$', errorMessage: 'expected an upper-case HTTP method' }), { minItems: 1 })),
    path: Type.Optional(
      Type.Object(
        {
          exact: Type.Optional(Type.String({ pattern: '^/' })),
          prefix: Type.Optional(Type.String({ pattern: '^/' })),
          regex: Type.Optional(Type.String()),
        },
        { additionalProperties: false, description: 'The normalized path routing matched (before any rewrite): exactly one of `exact`, `prefix` (whole segments) or `regex`.' },
      ),
    ),
    source: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: 'Client addresses or CIDRs (behind listen.trustedProxies, the forwarded client).' })),
    time: Type.Optional(
      Type.Object(
        {
          from: Type.String({ pattern: '^\\d\\d:\\d\\d$', errorMessage: 'expected HH:MM' }),
          to: Type.String({ pattern: '^\\d\\d:\\d\\d$', errorMessage: 'expected HH:MM' }),
          days: Type.Optional(Type.Array(Type.Union(DAYS.map((day) => Type.Literal(day))), { minItems: 1, errorMessage: `expected a list of ${DAYS.join(', ')}` })),
          timezone: Type.Optional(Type.String({ minLength: 1, default: 'UTC', description: 'An IANA time zone (Europe/Paris); default UTC.' })),
        },
        { additionalProperties: false, description: 'From `from` (included) to `to` (excluded), on `days`; `to` before `from` spans midnight.' },
      ),
    ),
  },
  { additionalProperties: false, description: 'Every condition given must hold; `{}` matches every request.' },
)
export type Condition = Static<typeof Condition>

type Predicate = (exchange: Exchange) => boolean

function compileRegex(source: string): RE2JS {
  return RE2JS.compile(source)
}

function regexProblem(source: string): string | undefined {
  try {
    compileRegex(source)
    return undefined
  } catch (error) {
    return `invalid regular expression for the linear-time engine (RE2 syntax: no backreferences or lookaround): ${(error as Error).message}`
  }
}

function stringTest(match: StringMatch): (value: string | undefined) => boolean {
  if (typeof match === 'string') return (value) => value === match
  if ('equals' in match) return (value) => value === match.equals
  if ('oneOf' in match) {
    const values = new Set(match.oneOf)
    return (value) => value !== undefined && values.has(value)
  }
  if ('regex' in match) {
    const regex = compileRegex(match.regex)
    return (value) => value !== undefined && regex.test(value)
  }
  return match.present ? (value) => value !== undefined && value !== '' : (value) => value === undefined || value === ''
}

function listTest(match: ListMatch): (values: readonly string[]) => boolean {
  if (Array.isArray(match) || 'anyOf' in match) {
    const wanted = Array.isArray(match) ? match : match.anyOf
    return (values) => wanted.some((value) => values.includes(value))
  }
  return (values) => match.allOf.every((value) => values.includes(value))
}

function claimTest(match: ClaimMatch): (value: unknown) => boolean {
  if ('equals' in match) return (value) => value === match.equals
  if ('oneOf' in match) return (value) => match.oneOf.some((candidate) => candidate === value)
  if ('contains' in match) return (value) => Array.isArray(value) && value.includes(match.contains)
  if ('regex' in match) {
    const regex = compileRegex(match.regex)
    return (value) => typeof value === 'string' && regex.test(value)
  }
  return match.present ? (value) => value !== undefined && value !== null : (value) => value === undefined || value === null
}

/** The path routing matched: the normalized target without its query. */
function pathOf(exchange: Exchange): string {
  const target = exchange.request.target
  const query = target.indexOf('?')
  return query === -1 ? target : target.slice(0, query)
}

function minutes(text: string): number {
  return Number(text.slice(0, 2)) * 60 + Number(text.slice(3, 5))
}

/** Day of the week (0 = Sunday) and minute of the day at `now` in `timezone`. */
function localTime(timezone: string): (now: number) => { day: number; minute: number } {
  if (timezone === 'UTC') {
    return (now) => {
      const date = new Date(now)
      return { day: date.getUTCDay(), minute: date.getUTCHours() * 60 + date.getUTCMinutes() }
    }
  }
  const format = new Intl.DateTimeFormat('en-US', { timeZone: timezone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
  return (now) => {
    let day = 0
    let minute = 0
    for (const part of format.formatToParts(now)) {
      if (part.type === 'weekday') day = DAYS.indexOf(part.value.slice(0, 3).toLowerCase() as (typeof DAYS)[number])
      else if (part.type === 'hour') minute += Number(part.value) * 60
      else if (part.type === 'minute') minute += Number(part.value)
    }
    return { day, minute }
  }
}

export interface ConditionDeps {
  readonly clock: Clock
  readonly trustedProxies: BlockList | undefined
}

/** One predicate for the whole condition: all of its parts, cheapest first. */
export function compileCondition(condition: Condition, deps: ConditionDeps): Predicate {
  const tests: Predicate[] = []
  const identityTest = (read: (identity: Identity) => string | undefined, match: StringMatch): Predicate => {
    const test = stringTest(match)
    return (exchange) => test(read(exchange.identity))
  }
  if (condition.methods !== undefined) {
    const methods = new Set(condition.methods)
    tests.push((exchange) => methods.has(exchange.request.method))
  }
  if (condition.kind !== undefined) {
    const kinds = new Set<string>(condition.kind)
    tests.push((exchange) => kinds.has(exchange.identity.kind))
  }
  const path = condition.path
  if (path !== undefined) {
    if (path.exact !== undefined) {
      const exact = path.exact
      tests.push((exchange) => pathOf(exchange) === exact)
    } else if (path.prefix !== undefined) {
      const prefix = path.prefix.endsWith('/') ? path.prefix.slice(0, -1) : path.prefix
      tests.push((exchange) => {
        const requestPath = pathOf(exchange)
        return prefix === '' || (requestPath.startsWith(prefix) && (requestPath.length === prefix.length || requestPath.charCodeAt(prefix.length) === 47))
      })
    } else if (path.regex !== undefined) {
      const regex = compileRegex(path.regex)
      tests.push((exchange) => regex.test(pathOf(exchange)))
    }
  }
  if (condition.subject !== undefined) tests.push(identityTest((identity) => identity.subject, condition.subject))
  if (condition.issuer !== undefined) tests.push(identityTest((identity) => identity.issuer, condition.issuer))
  if (condition.roles !== undefined) {
    const test = listTest(condition.roles)
    tests.push((exchange) => test(exchange.identity.roles))
  }
  if (condition.scopes !== undefined) {
    const test = listTest(condition.scopes)
    tests.push((exchange) => test(exchange.identity.scopes))
  }
  for (const [claim, match] of Object.entries(condition.claims ?? {})) {
    const test = claimTest(match)
    // Own properties only: a claim named `constructor` or `__proto__` is data, not the prototype's.
    tests.push((exchange) => test(Object.hasOwn(exchange.identity.claims, claim) ? exchange.identity.claims[claim] : undefined))
  }
  if (condition.spiffeId !== undefined) tests.push(identityTest((identity) => identity.certificate?.spiffeId, condition.spiffeId))
  if (condition.san !== undefined) {
    const match = condition.san
    const test = stringTest(match)
    const wantsAbsent = typeof match === 'object' && 'present' in match && !match.present
    tests.push((exchange) => {
      const san = exchange.identity.certificate?.san
      const all = san === undefined ? [] : [...san.dns, ...san.uri, ...san.email]
      if (wantsAbsent) return all.length === 0
      return all.some((value) => test(value))
    })
  }
  if (condition.source !== undefined) {
    const list = addressList(condition.source)!
    const trustedProxies = deps.trustedProxies
    tests.push((exchange) => inList(list, originatingClient(exchange.request.incoming, trustedProxies)))
  }
  const time = condition.time
  if (time !== undefined) {
    const from = minutes(time.from)
    const to = minutes(time.to)
    const days = time.days === undefined ? undefined : new Set(time.days.map((day) => DAYS.indexOf(day)))
    const local = localTime(time.timezone ?? 'UTC')
    const clock = deps.clock
    tests.push(() => {
      const { day, minute } = local(clock.now())
      if (days !== undefined && !days.has(day)) return false
      return from < to ? minute >= from && minute < to : minute >= from || minute < to
    })
  }
  if (tests.length === 0) return () => true
  if (tests.length === 1) return tests[0]!
  return (exchange) => {
    for (const test of tests) if (!test(exchange)) return false
    return true
  }
}

function stringMatchProblems(match: StringMatch | undefined, path: string, problems: ConfigProblem[]): void {
  if (match === undefined || typeof match === 'string' || !('regex' in match)) return
  const problem = regexProblem(match.regex)
  if (problem !== undefined) problems.push({ path: `${path}/regex`, message: problem })
}

function validTimezone(timezone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone })
    return true
  } catch {
    return false
  }
}

/** A condition that can never hold, or cannot be compiled, is a config error; `path` is its JSON pointer. */
export function conditionProblems(condition: Condition, path: string): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  stringMatchProblems(condition.subject, `${path}/subject`, problems)
  stringMatchProblems(condition.issuer, `${path}/issuer`, problems)
  stringMatchProblems(condition.spiffeId, `${path}/spiffeId`, problems)
  stringMatchProblems(condition.san, `${path}/san`, problems)
  for (const [claim, match] of Object.entries(condition.claims ?? {})) {
    if ('regex' in match) {
      const problem = regexProblem(match.regex)
      if (problem !== undefined) problems.push({ path: `${path}/claims/${claim.replace(/~/g, '~0').replace(/\//g, '~1')}/regex`, message: problem })
    }
  }
  const requestPath = condition.path
  if (requestPath !== undefined) {
    const kinds = (['exact', 'prefix', 'regex'] as const).filter((kind) => requestPath[kind] !== undefined)
    if (kinds.length !== 1) problems.push({ path: `${path}/path`, message: `expected exactly one of exact, prefix or regex, got ${kinds.length === 0 ? 'none' : kinds.join(' and ')}` })
    if (requestPath.regex !== undefined) {
      const problem = regexProblem(requestPath.regex)
      if (problem !== undefined) problems.push({ path: `${path}/path/regex`, message: problem })
    }
  }
  condition.source?.forEach((entry, index) => {
    if (parseCidr(entry) === undefined) problems.push({ path: `${path}/source/${index}`, message: `not an IP address or CIDR: "${entry}"` })
  })
  const time = condition.time
  if (time !== undefined) {
    for (const field of ['from', 'to'] as const) {
      const value = time[field]
      if (Number(value.slice(0, 2)) > 24 || Number(value.slice(3, 5)) > 59 || (value.startsWith('24') && value !== '24:00')) problems.push({ path: `${path}/time/${field}`, message: `not a time of day: "${value}"` })
    }
    if (time.from === time.to) problems.push({ path: `${path}/time`, message: 'from and to are the same time: the window is empty' })
    if (time.timezone !== undefined && !validTimezone(time.timezone)) problems.push({ path: `${path}/time/timezone`, message: `unknown time zone "${time.timezone}" (expected an IANA name such as Europe/Paris)` })
  }
  // Anonymous identities have no subject, issuer, roles, scopes or claims: such a rule never holds.
  if (condition.kind !== undefined && condition.kind.every((kind) => kind === 'anonymous')) {
    const impossible = (['subject', 'issuer', 'roles', 'scopes', 'claims'] as const).filter((field) => {
      const value = condition[field]
      if (value === undefined) return false
      // `present: false` is what an anonymous identity has.
      return !(typeof value === 'object' && !Array.isArray(value) && 'present' in value && value.present === false)
    })
    if (impossible.length > 0) problems.push({ path: `${path}/kind`, message: `anonymous identities have no ${impossible.join(', ')}: this condition can never hold` })
  }
  return problems
}
