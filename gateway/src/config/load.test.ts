import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseConfig, formatError } from './load.js'
import { jsonSchema } from '../../scripts/gen-schema.js'
import { toMs } from './units.js'

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
