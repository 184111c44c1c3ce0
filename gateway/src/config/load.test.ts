import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseConfig, formatError, formatWarning } from './load.js'
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
  t.match(errors[0], /^w\.yaml:[1-9]\d*:[1-9]\d*: YAML syntax:/)
  // Bad indentation, the commonest slip, used to come back as 0:0.
  t.same(errorsOf('upstreams:\n  app:\n    url: "http://127.0.0.1:3000"\n   connections: 4\nroutes:\n  - { name: a, upstream: app }\n'), [
    'w.yaml:4:1: YAML syntax: All mapping items must start at the same column',
  ])
  t.same(errorsOf('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n    policies:\n      timeout: { request: 1s }\n   retry: { attempts: 2 }\n'), [
    'w.yaml:8:1: YAML syntax: Sequence item without - indicator',
  ])
  t.match(errorsOf('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n     policies: {}\n'), [/^w\.yaml:5:15: YAML syntax: /])
})

t.test('schema errors and reference errors come together, in one pass', async (t) => {
  t.same(
    errorsOf(`upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: a
    upstream: ghost
    policies:
      timeout: { request: soon }
      breaker: { fallback: { upstream: spare } }
  - name: a
    upstream: app
    match: { path: { regex: "(a)\\\\1" } }
`),
    [
      'w.yaml:7:27: routes[0].policies.timeout.request: expected a duration such as "250ms", "2s", "1m" or a number of milliseconds',
      'w.yaml:5:15: routes[0].upstream: unknown upstream "ghost"; defined: app',
      'w.yaml:9:11: routes[1].name: duplicate route name "a" (first used by routes[0])',
      'w.yaml:11:29: routes[1].match.path.regex: invalid regular expression for the linear-time engine (RE2 syntax: no backreferences or lookaround): error parsing regexp: invalid escape sequence: `\\1`',
      'w.yaml:8:40: routes[0].policies.breaker.fallback.upstream: unknown upstream "spare"; defined: app',
    ],
  )
  // A field the schema refused is not reported again by a reference check.
  t.same(errorsOf(valid.replace('upstream: app', 'upstream: "no spaces"')), ['w.yaml:6:15: routes[0].upstream: expected a name of letters, digits, ".", "_" or "-" (at most 63 characters)'])
  // Shapes the checks cannot read are skipped, never a throw.
  t.match(errorsOf('upstreams: [1]\nroutes: { a: 1 }\n'), [/upstreams: /, /routes: /])
  t.match(errorsOf('upstreams: { app: 5 }\nroutes: [5, { name: 7, upstream: [], policies: { retry: 3, timeout: { perTry: x } } }]\n').length, 6)
})

t.test('an unknown field names the nearest allowed one', async (t) => {
  const withRoute = (route: string): string[] => errorsOf(`upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n${route}`)
  t.same(withRoute('    policies: { retry: { attemps: 3 } }\n'), ['w.yaml:6:26: routes[0].policies.retry.attemps: unknown field "attemps"; did you mean "attempts"?'])
  t.same(withRoute('    policies: { retyr: {} }\n'), ['w.yaml:6:17: routes[0].policies.retyr: unknown field "retyr"; did you mean "retry"?'])
  t.same(withRoute('    timeuot: { request: 1s }\n'), ['w.yaml:6:5: routes[0].timeuot: unknown field "timeuot"; did you mean "policies.timeout"?'], 'a policy one level too high')
  t.same(withRoute('    Upstream: app\n'), ['w.yaml:6:5: routes[0].Upstream: unknown field "Upstream"; did you mean "upstream"?'])
  t.same(withRoute('    frobnicate: 1\n'), ['w.yaml:6:5: routes[0].frobnicate: unknown field "frobnicate"; expected one of name, match, upstream, rewrite, policies'])
  t.same(errorsOf(`${valid}lisen: { address: "127.0.0.1:1" }\n`), ['w.yaml:7:1: lisen: unknown field "lisen"; did you mean "listen"?'])
})

t.test('valid settings that contradict each other load, with a warning at the losing field', async (t) => {
  const warningsOf = (text: string): string[] => {
    const result = parseConfig(text, 'w.yaml')
    t.ok(result.ok, 'still loads')
    return result.warnings.map(formatWarning)
  }
  const text = `upstreams:
  app: { url: "http://127.0.0.1:3000" }
defaults:
  policies:
    timeout: { request: 2s }
routes:
  - name: a
    upstream: app
    policies:
      timeout: { perTry: 2s }
      retry: { attempts: 3 }
  - name: b
    upstream: app
    policies:
      concurrency: { max: 4, queue: 10, queueTimeout: 5s }
  - name: c
    upstream: app
    policies:
      timeout: { request: 10s, perTry: 1s }
      concurrency: { max: 4, queue: 10, queueTimeout: 5s }
  - name: d
    upstream: app
    policies:
      timeout: false
      concurrency: { max: 4, queue: 10, queueTimeout: 5s }
`
  t.same(warningsOf(text), [
    'w.yaml:10:26: routes[0].policies.timeout.perTry: warning: timeout.perTry (2000ms) is not shorter than timeout.request (2000ms): the request deadline always passes first, so no attempt ever times out on its own and none is retried for it',
    'w.yaml:15:55: routes[1].policies.concurrency.queueTimeout: warning: concurrency.queueTimeout (5000ms) is not shorter than timeout.request (2000ms): a queued request times out (504) before the queue would refuse it (503)',
  ])
  t.same(warningsOf(text.replace('timeout: { perTry: 2s }', 'timeout: { perTry: 1500ms }')).length, 1, 'a shorter per-try deadline is fine')
  // Written once in the defaults: one warning there, not one per route.
  t.same(warningsOf(valid.replace('upstreams:', 'defaults: { policies: { timeout: { request: 1s, perTry: 5s } } }\nupstreams:').replace('routes:', 'routes:\n  - { name: b, upstream: app }')), [
    'w.yaml:2:57: defaults.policies.timeout.perTry: warning: timeout.perTry (5000ms) is not shorter than timeout.request (1000ms): the request deadline always passes first, so no attempt ever times out on its own and none is retried for it',
  ])
  t.same(warningsOf(valid), [])
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
  // The defaults' cross-field error comes with the route's schema errors, in one pass.
  const backoff = 'w.yaml:5:31: defaults.policies.retry.backoff.base: base (2s) is longer than max (100ms)'
  t.same(errorsFor('attempts: 0'), ['w.yaml:10:26: routes[0].policies.retry.attempts: Expected integer to be greater or equal to 1', backoff])
  t.same(errorsFor('retryOn: [status, teapot]'), ['w.yaml:10:34: routes[0].policies.retry.retryOn[1]: expected one of connect-failure, reset, attempt-timeout, status', backoff])
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

t.test('listen.tls: what validate checks without reading the certificate files', async (t) => {
  const withListen = (listen: string): string[] => errorsOf(`listen:\n${listen}\nupstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: all\n    upstream: app\n`)
  t.same(withListen('  tls: { cert: /nonexistent/server.crt, key: /nonexistent/server.key }'), [], 'files are read by the running gateway, not here')
  t.match(withListen('  tls: { cert: a.crt, key: a.key, clientAuth: require }').join('\n'), /listen\.tls\.clientCa: clientAuth require needs clientCa/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, clientCa: ca.crt }').join('\n'), /listen\.tls\.clientAuth: clientCa is given but clientAuth is none/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, crl: crl.pem }').join('\n'), /listen\.tls\.crl: a CRL revokes client certificates: it needs clientCa/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, ciphers: "NOT-A-CIPHER" }').join('\n'), /listen\.tls\.ciphers: OpenSSL refuses this cipher list/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, groups: "P-999" }').join('\n'), /listen\.tls\.groups: OpenSSL refuses these groups/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, minVersion: TLSv1.1 }').join('\n'), /listen\.tls\.minVersion: expected TLSv1\.2 or TLSv1\.3/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, sni: [{ hosts: [a.test], cert: b, key: c }, { hosts: [A.test], cert: d, key: e }] }').join('\n'), /sni\[1\]\.hosts: "A\.test" is already served by sni\[0\]/)
  t.match(withListen('  tls: { cert: a.crt, key: a.key, sni: [{ hosts: ["a*.test"], cert: b, key: c }] }').join('\n'), /expected a host name/)
  t.match(withListen('  plainAddress: 127.0.0.1:8081').join('\n'), /listen\.plainAddress: a second cleartext listener is only for a TLS listener/)
  t.match(withListen('  forwardClientCert: appendForward').join('\n'), /listen\.forwardClientCert: appendForward passes on X-Forwarded-Client-Cert only from listen\.trustedProxies/)
  t.match(withListen('  forwardClientCert: append').join('\n'), /expected sanitize, forwardOnly, appendForward, sanitizeSet or alwaysForwardOnly/)
})

t.test('match.clientCert: true, or SPIFFE ID / SAN values', async (t) => {
  const route = (match: string): string[] => errorsOf(`upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n    match: ${match}\n`)
  t.same(route('{ clientCert: true }'), [])
  t.same(route('{ clientCert: { spiffeId: [spiffe://td/a, "spiffe://td/ns/*"], dns: "*.svc" } }'), [])
  t.match(route('{ clientCert: false }').join('\n'), /expected true or \{ spiffeId, dns, uri, email \}/)
  t.match(route('{ clientCert: { subject: x } }').join('\n'), /clientCert\.subject: unknown field|expected true/)
})
