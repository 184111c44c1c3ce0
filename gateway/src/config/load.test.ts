import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseConfig, formatError } from './load.js'
import { jsonSchema } from '../../scripts/gen-schema.js'
import { toMs } from '../core/units.js'
import { Value } from '@sinclair/typebox/value'
import { Kind } from '@sinclair/typebox'
import { GatewayConfig } from './schema.js'

const valid = `
upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: all
    upstream: app
`

function errorsOf(text: string): string[] {
  const result = parseConfig(text, 'w.yaml')
  return result.ok ? [] : result.errors.map(formatError)
}

t.test('a valid file loads and hashes', async (t) => {
  const result = parseConfig(valid, 'w.yaml')
  t.ok(result.ok)
  if (result.ok) t.match(result.hash, /^[0-9a-f]{16}$/)
})

t.test('the bundled example config is valid', async (t) => {
  const file = fileURLToPath(new URL('../../../config/waypost.yaml', import.meta.url))
  const result = parseConfig(readFileSync(file, 'utf8'), file)
  t.same(result.ok ? [] : result.errors.map(formatError), [])
})

t.test('every example in config/examples/ is valid', async (t) => {
  const dir = fileURLToPath(new URL('../../../config/examples/', import.meta.url))
  // api-keys.yaml is the keys file auth.yaml reads, not a policy file.
  const files = readdirSync(dir).filter((name) => name.endsWith('.yaml') && name !== 'api-keys.yaml')
  t.ok(files.length >= 2, `examples found: ${files.join(', ')}`)
  for (const name of files) {
    const result = parseConfig(readFileSync(join(dir, name), 'utf8'), name)
    t.same(result.ok ? [] : result.errors.map(formatError), [], name)
  }
})

t.test('errors name file, line, column and field path', async (t) => {
  const text = `upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: all
    upstream: app
    policies:
      timeout: { request: 5 seconds }
      concurrency: { max: 0 }
`
  const errors = errorsOf(text)
  t.equal(errors.length, 2, errors.join('\n'))
  t.match(errors[0], /^w\.yaml:7:27: routes\[0\]\.policies\.timeout\.request: expected a duration/)
  t.match(errors[1], /^w\.yaml:8:\d+: routes\[0\]\.policies\.concurrency\.max: Expected integer to be greater or equal to 1/)
})

t.test('unknown fields, unknown upstreams and duplicate names are rejected', async (t) => {
  const errors = errorsOf(`upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: a
    upstream: app
  - name: a
    upstream: nope
    timeuot: 5s
`)
  t.match(errors.join('\n'), /w\.yaml:8:\d+: routes\[1\]\.timeuot: unknown field/)
  const semantic = errorsOf(`upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: a
    upstream: app
  - name: a
    upstream: nope
`)
  t.match(semantic.join('\n'), /w\.yaml:6:\d+: routes\[1\]\.name: duplicate route name "a"/)
  t.match(semantic.join('\n'), /w\.yaml:7:\d+: routes\[1\]\.upstream: unknown upstream "nope"; defined: app/)
})

t.test('YAML syntax errors carry their position', async (t) => {
  const errors = errorsOf('upstreams:\n  app: { url: "http://x\nroutes: [')
  t.ok(errors.length > 0)
  t.match(errors[0], /^w\.yaml:\d+:\d+: YAML syntax:/)
})

t.test('semantic checks: path kinds, regexes, upstream URLs, CIDRs, rewrites', async (t) => {
  const errors = errorsOf(`listen:
  trustedProxies: [10.0.0.0/8, not-an-ip]
upstreams:
  app: { url: "http://127.0.0.1:3000/base" }
  ftp: { url: "ftp://x" }
routes:
  - name: a
    upstream: app
    match: { path: { exact: /x, prefix: /y } }
  - name: b
    upstream: app
    match: { path: { regex: "(" } }
    rewrite: { pathPrefix: /z }
`).join('\n')
  t.match(errors, /listen\.trustedProxies\[1\]: not an IP address or CIDR/)
  t.match(errors, /upstreams\.app\.url: expected an origin only/)
  t.match(errors, /upstreams\.ftp\.url: expected an http:\/\/ or https:\/\/ URL/)
  t.match(errors, /routes\[0\]\.match\.path: expected exactly one of exact, prefix or regex, got exact and prefix/)
  t.match(errors, /routes\[1\]\.match\.path\.regex: invalid regular expression/)
  t.match(errors, /routes\[1\]\.rewrite\.pathPrefix: needs match\.path\.prefix/)
})

t.test('breaker checks: the fallback upstream exists, the window has some length', async (t) => {
  const errors = errorsOf(`upstreams:
  app: { url: "http://127.0.0.1:3000" }
defaults:
  policies:
    breaker: { fallback: { upstream: spare } }
routes:
  - name: a
    upstream: app
    policies:
      breaker:
        window: 50ms
        fallback: { upstream: ghost }
  - name: b
    upstream: app
    policies:
      breaker: { fallback: { upstream: app } }
`)
  t.same(errors, [
    'w.yaml:5:38: defaults.policies.breaker.fallback.upstream: unknown upstream "spare"; defined: app',
    'w.yaml:12:31: routes[0].policies.breaker.fallback.upstream: unknown upstream "ghost"; defined: app',
    'w.yaml:11:17: routes[0].policies.breaker.window: expected at least 100ms',
  ])
  t.match(errorsOf(valid.replace('upstream: app', 'upstream: app\n    policies: { breaker: { fallback: { status: 700 } } }')).join('\n'), /:7:\d+: routes\[0\]\.policies\.breaker\.fallback: expected \{ status: 200-599, body\?, headers\? \} or \{ upstream: NAME \}/)
})

t.test('durations', async (t) => {
  t.equal(toMs('250ms'), 250)
  t.equal(toMs('1.5s'), 1500)
  t.equal(toMs('2m'), 120_000)
  t.equal(toMs(42), 42)
})

t.test('config/waypost.schema.json is up to date (run `npm run schema`)', async (t) => {
  const file = fileURLToPath(new URL('../../../config/waypost.schema.json', import.meta.url))
  t.equal(readFileSync(file, 'utf8'), jsonSchema())
})

t.test('retry settings are checked across fields and by name', async (t) => {
  const text = `upstreams:
  app: { url: "http://127.0.0.1:3000" }
defaults:
  policies:
    retry: { backoff: { base: 2s, max: 100ms } }
routes:
  - name: all
    upstream: app
    policies:
      retry: { RETRY }
`
  const errorsFor = (retry: string): string[] => errorsOf(text.replace('RETRY', retry))
  t.same(errorsFor('attempts: 0'), ['w.yaml:10:26: routes[0].policies.retry.attempts: Expected integer to be greater or equal to 1'])
  t.same(errorsFor('retryOn: [status, teapot]'), ['w.yaml:10:34: routes[0].policies.retry.retryOn[1]: expected one of connect-failure, reset, attempt-timeout, status'])
  t.match(errorsFor('bodyLimit: 64kb'), [/^w\.yaml:10:\d+: routes\[0\]\.policies\.retry\.bodyLimit: expected a size such as "64KiB"/])
  t.same(errorsFor('attempts: 2'), ['w.yaml:5:31: defaults.policies.retry.backoff.base: base (2s) is longer than max (100ms)'])
})

t.test('upstream endpoints: schema errors name the field', async (t) => {
  const errors = errorsOf(`upstreams:
  list:
    endpoints:
      - { url: http://127.0.0.1:3002, weight: 0 }
    balancer: random
    healthCheck: { path: health }
    outlierDetection: { maxEjectionPercent: 150 }
  named:
    dns: { name: app.internal, port: 80, scheme: ftp }
routes:
  - name: a
    upstream: list
`).join('\n')
  t.match(errors, /w\.yaml:4:\d+: upstreams\.list\.endpoints\[0\]\.weight: Expected integer to be greater or equal to 1/)
  t.match(errors, /upstreams\.list\.balancer: expected least-request or round-robin/)
  t.match(errors, /upstreams\.list\.healthCheck\.path: expected a path starting with "\/"/)
  t.match(errors, /upstreams\.list\.outlierDetection\.maxEjectionPercent: Expected integer to be less or equal to 100/)
  t.match(errors, /upstreams\.named\.dns\.scheme: expected http or https/)
})

t.test('upstream endpoints: one source, origins, ranges, each error at its field', async (t) => {
  const errors = errorsOf(`upstreams:
  none: { connections: 4 }
  both:
    url: http://127.0.0.1:3000
    dns: { name: app.internal, port: 80 }
  list:
    endpoints:
      - url: http://127.0.0.1:3000/api
      - { url: "https://10.0.0.1:8443", priority: 1 }
      - { url: "https://10.0.0.1:8443/", priority: 2 }
    healthCheck: { path: /health, expectStatus: 400-200, interval: 10ms }
    outlierDetection: { baseEjectionTime: 10m }
  named:
    dns: { name: app.internal, port: 80, ttl: 0 }
routes:
  - name: a
    upstream: none
`).join('\n')
  t.match(errors, /w\.yaml:2:\d+: upstreams\.none: expected exactly one of url, endpoints or dns, got none/)
  t.match(errors, /w\.yaml:4:\d+: upstreams\.both: expected exactly one of url, endpoints or dns, got url and dns/)
  t.match(errors, /w\.yaml:8:\d+: upstreams\.list\.endpoints\[0\]\.url: expected an origin only/)
  t.match(errors, /w\.yaml:10:\d+: upstreams\.list\.endpoints\[2\]\.url: duplicate endpoint https:\/\/10\.0\.0\.1:8443 \(first listed as endpoints\[1\]\)/)
  t.match(errors, /upstreams\.list\.healthCheck\.expectStatus: expected a range low-high within 100-599, got "400-200"/)
  t.match(errors, /upstreams\.list\.healthCheck\.interval: must be at least 50ms/)
  t.match(errors, /upstreams\.list\.outlierDetection\.baseEjectionTime: must not be longer than maxEjectionTime/)
  t.match(errors, /w\.yaml:14:\d+: upstreams\.named\.dns\.ttl: must be at least 50ms/)
})

t.test('every default in the schema is itself valid for its field', async (t) => {
  // A default the schema would reject would be filled in silently and then misread by the code.
  const walk = (node: Record<string, unknown>, path: string): void => {
    // Only schema nodes (TypeBox marks them with Kind): a `properties` map may hold a field named `default` (authz's).
    if ('default' in node && Kind in node) t.ok(Value.Check(node as never, node.default), `${path} default ${JSON.stringify(node.default)}`)
    for (const [key, value] of Object.entries(node)) {
      if (value !== null && typeof value === 'object') walk(value as Record<string, unknown>, `${path}.${key}`)
    }
  }
  walk(GatewayConfig as unknown as Record<string, unknown>, 'config')
})

t.test('files that cannot load come back as positioned errors, never a throw', async (t) => {
  const levels = ['x-0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
  for (let level = 1; level < 6; level++) levels.push(`x-${level}: &l${level} [${Array(9).fill(`*l${level - 1}`).join(',')}]`)
  t.same(errorsOf(`${levels.join('\n')}\n${valid}`), ['w.yaml:2:11: YAML aliases expand past 1000 uses (an alias bomb?): use fewer aliases or write the values out'])

  // An honest file that reuses one anchor for 101 routes (past yaml's own default of 100).
  const routes = Array.from({ length: 101 }, (_, index) => `  - name: r${index}\n    match: { path: { prefix: /r${index} } }\n    upstream: app\n    policies: ${index === 0 ? '&p { timeout: { request: 1s } }' : '*p'}`)
  t.same(errorsOf(`upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n${routes.join('\n')}\n`), [])

  t.match(errorsOf(`${valid}# ${'x'.repeat(1024 * 1024)}\n`), [/^w\.yaml:0:0: the config file is \d+ bytes, over the 1048576-byte \(1 MiB\) limit$/])
  t.same(errorsOf(valid.replace('upstream: app', 'upstream: toString')), ['w.yaml:6:15: routes[0].upstream: unknown upstream "toString"; defined: app'], 'names are looked up as own keys, not inherited ones')
})

t.test('route and header regexes are RE2: backreferences and lookaround are refused with why; nested quantifiers are fine (matching is linear)', async (t) => {
  const withRegex = (match: string): string[] => errorsOf(`upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: r\n    upstream: app\n    match: ${match}\n`)
  t.match(withRegex('{ path: { regex: "^/(a)\\\\1$" } }'), [/routes\[0\]\.match\.path\.regex: invalid regular expression for the linear-time engine \(RE2 syntax: no backreferences or lookaround\): .*\\1/])
  t.match(withRegex('{ headers: { x-v: { regex: "^(?=a)" } } }'), [/routes\[0\]\.match\.headers\.x-v\.regex: invalid regular expression for the linear-time engine/])
  t.same(withRegex('{ path: { regex: "^/(a+)+$" } }'), [], 'a pattern that backtracks exponentially in RegExp is linear in RE2')
})
