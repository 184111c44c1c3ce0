// Authorization (`policies.authz`): rules over the identity `auth` proved (or the listener's client
// certificate) and the request. Deny rules first, then allow rules, then the route's default (deny
// unless configured). A refusal is 403 `forbidden`; which rule refused goes to the security log,
// never to the client.
import { Type, type Static } from '@sinclair/typebox'
import { localResponse, type Exchange, type Upstream } from '../../core/exchange.js'
import { originatingClient } from '../../proxy/headers.js'
import { definePolicy, type ConfigProblem } from '../policy.js'
import { compileCondition, Condition, conditionProblems } from './conditions.js'

const Rule = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$', errorMessage: 'expected a name of letters, digits, ".", "_" or "-"', description: 'Named in the security log when it decides.' }),
    allow: Type.Optional(Condition),
    deny: Type.Optional(Condition),
  },
  { additionalProperties: false, description: 'A named rule: exactly one of `allow: CONDITIONS` or `deny: CONDITIONS`.' },
)

export const AuthzConfig = Type.Object(
  {
    default: Type.Optional(
      Type.Union([Type.Literal('deny'), Type.Literal('allow')], { default: 'deny', errorMessage: 'expected deny or allow', description: 'What happens when no rule matched: `deny` (403) or `allow`.' }),
    ),
    rules: Type.Optional(Type.Array(Rule, { default: [], description: 'Deny rules are checked first (any match refuses), then allow rules (any match lets through), then `default`.' })),
  },
  { additionalProperties: false, description: 'Authorization rules on the identity (kind, subject, roles, scopes, claims, certificate) and the request (method, normalized path, source address, time).' },
)
export type AuthzConfig = Static<typeof AuthzConfig>

function problems(config: AuthzConfig): ConfigProblem[] {
  const found: ConfigProblem[] = []
  const names = new Map<string, number>()
  ;(config.rules ?? []).forEach((rule, index) => {
    const first = names.get(rule.name)
    if (first !== undefined) found.push({ path: `/rules/${index}/name`, message: `duplicate rule name "${rule.name}" (first used by rules[${first}])` })
    else names.set(rule.name, index)
    if ((rule.allow === undefined) === (rule.deny === undefined)) {
      found.push({ path: `/rules/${index}`, message: 'expected exactly one of allow or deny' })
      return
    }
    const effect = rule.allow !== undefined ? 'allow' : 'deny'
    found.push(...conditionProblems((rule.allow ?? rule.deny)!, `/rules/${index}/${effect}`))
  })
  return found
}

export const authz = definePolicy({
  name: 'authz',
  schema: AuthzConfig,
  localReasons: () => ['forbidden'],
  validate: problems,
  build(section, deps) {
    const config = section as Required<AuthzConfig>
    const compiled = config.rules.map((rule) => ({ name: rule.name, deny: rule.deny !== undefined, matches: compileCondition((rule.allow ?? rule.deny)!, deps) }))
    const denies = compiled.filter((rule) => rule.deny)
    const allows = compiled.filter((rule) => !rule.deny)
    const allowByDefault = config.default === 'allow'
    const route = deps.route.name

    const refuse = (exchange: Exchange, rule: string, reason: string) => {
      const identity = exchange.identity
      deps.security.record({
        event: 'authorization-denied',
        reason,
        rule,
        requestId: exchange.request.requestId,
        route,
        kind: identity.kind,
        subject: identity.subject,
        method: exchange.request.method,
        path: exchange.request.target.split('?', 1)[0],
        remote: originatingClient(exchange.request.incoming, deps.trustedProxies),
      })
      return Promise.resolve(localResponse(403, 'forbidden', exchange))
    }

    return (next: Upstream) => (exchange: Exchange) => {
      for (const rule of denies) if (rule.matches(exchange)) return refuse(exchange, rule.name, 'deny-rule')
      for (const rule of allows) if (rule.matches(exchange)) return next(exchange)
      return allowByDefault ? next(exchange) : refuse(exchange, 'default', 'no-rule-allowed')
    }
  },
})
