// The `waypost` command as users run it.
import t from 'tap'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { catchAllConfig, MAIN, tempConfig, waypost } from './helpers.js'

const example = fileURLToPath(new URL('../../config/waypost.yaml', import.meta.url))

// Each subtest starts its own processes: run them side by side.
t.jobs = 4

t.test('validate: ok', async (t) => {
  const result = await waypost(['validate', example])
  t.equal(result.code, 0)
  t.match(result.stdout, /ok \(2 routes, 1 upstreams, hash [0-9a-f]{16}\)/)
})

t.test('validate: every example in config/examples is valid', async (t) => {
  const examples = fileURLToPath(new URL('../../config/examples/', import.meta.url))
  // api-keys.yaml is the keys file auth.yaml reads, not a policy file.
  const files = readdirSync(examples).filter((name) => name.endsWith('.yaml') && name !== 'api-keys.yaml')
  t.ok(files.includes('chaos.yaml'))
  t.ok(files.includes('auth.yaml'))
  const result = await waypost(['validate', ...files.map((name) => join(examples, name))])
  t.equal(result.code, 0, result.stderr)
  for (const name of files) t.match(result.stdout, `${join(examples, name)}: ok`, name)
  const mixed = await waypost(['validate', join(examples, files[0]!), '/nonexistent.yaml'])
  t.equal(mixed.code, 1, 'one bad file of several fails the whole call')
  t.match(mixed.stdout, `${files[0]}: ok`)
  t.match(mixed.stderr, /nonexistent\.yaml.*cannot read the config file/)
})

t.test('validate: every error as file:line:col: field.path: message, exit 1', async (t) => {
  const file = tempConfig(`upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: a
    upstream: ghost
    policies:
      timeout: { request: soon }
`)
  const result = await waypost(['validate', file])
  t.equal(result.code, 1)
  t.same(result.stderr.trim().split('\n'), [
    `${file}:7:27: routes[0].policies.timeout.request: expected a duration such as "250ms", "2s", "1m" or a number of milliseconds`,
    `${file}:5:15: routes[0].upstream: unknown upstream "ghost"; defined: app`,
  ], 'schema and reference errors in one run')
  const semantic = await waypost(['validate', tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: ghost\n')])
  t.match(semantic.stderr, /:5:15: routes\[0\]\.upstream: unknown upstream "ghost"; defined: app/)
  t.match((await waypost(['validate', '/nonexistent.yaml'])).stderr, /cannot read the config file/)
})

t.test('validate: a misspelt field names the nearest one; contradictions warn without failing', async (t) => {
  const misspelt = tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n    policies:\n      retry: { attemps: 3 }\n')
  const typo = await waypost(['validate', misspelt])
  t.equal(typo.code, 1)
  t.equal(typo.stderr, `${misspelt}:7:16: routes[0].policies.retry.attemps: unknown field "attemps"; did you mean "attempts"?\n`)
  const contradiction = tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n    policies:\n      timeout: { request: 1s, perTry: 3s }\n      retry: { attempts: 3 }\n')
  const warned = await waypost(['validate', contradiction])
  t.equal(warned.code, 0, 'a warning does not fail the file')
  t.match(warned.stdout, /: ok \(1 routes, 1 upstreams, hash [0-9a-f]{16}, 1 warning\)/)
  t.equal(warned.stderr, `${contradiction}:7:39: routes[0].policies.timeout.perTry: warning: timeout.perTry (3000ms) is not shorter than timeout.request (1000ms): the request deadline always passes first, so no attempt ever times out on its own and none is retried for it\n`)
})

t.test('run: a missing config file is one plain line', async (t) => {
  const { mkdtempSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const empty = mkdtempSync(join(tmpdir(), 'waypost-empty-'))
  const { spawnSync } = await import('node:child_process')
  const byDefault = spawnSync(process.execPath, [MAIN, 'run'], { cwd: empty, encoding: 'utf8', env: { ...process.env, WAYPOST_CONFIG: '' } })
  t.equal(byDefault.status, 1)
  t.equal(byDefault.stdout, '', 'no log lines')
  t.equal(byDefault.stderr, `waypost: no config file at ${join(empty, 'config/waypost.yaml')} (the default, config/waypost.yaml in the working directory; give another with --config FILE or WAYPOST_CONFIG)\n`)
  const given = await waypost(['run', '--config', join(empty, 'mine.yaml')])
  t.equal(given.code, 1)
  t.equal(given.stdout, '')
  t.equal(given.stderr, `waypost: no config file at ${join(empty, 'mine.yaml')} (from --config)\n`)
})

t.test('version and usage', async (t) => {
  t.match((await waypost(['version'])).stdout, /^waypost \d+\.\d+\.\d+/)
  const unknown = await waypost(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command "frobnicate"/)
})

t.test('run refuses bad overrides and bad configs with a clear message', async (t) => {
  const badListen = await waypost(['run', '--config', example], { env: { WAYPOST_LISTEN: 'localhost' } })
  t.equal(badListen.code, 2)
  t.match(badListen.stderr, /WAYPOST_LISTEN: invalid address "localhost": expected HOST:PORT/)
  const badLevel = await waypost(['run', '--config', example, '--log-level', 'loud'])
  t.equal(badLevel.code, 2)
  const badConfig = await waypost(['run', '--config', tempConfig('routes: 5')])
  t.equal(badConfig.code, 1)
  t.match(badConfig.stderr, /config rejected:\n[\s\S]*upstreams: required field is missing\n[\s\S]*routes: Expected array/)
})

t.test('log.format: pretty prints lines for people, from the file or the flag; an unknown format is refused', async (t) => {
  const { spawn } = await import('node:child_process')
  const readyLine = async (args: string[], file: string): Promise<string> => {
    const child = spawn(process.execPath, [MAIN, 'run', '--config', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => void child.kill('SIGKILL'))
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    for (let waited = 0; !output.includes('waypost ready') && waited < 30_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50))
    child.kill('SIGKILL')
    return output.split('\n').find((line) => line.includes('waypost ready')) ?? output
  }
  const pretty = tempConfig(catchAllConfig('http://127.0.0.1:1', { extra: { log: { format: 'pretty' } } }))
  const fromFile = await readyLine([], pretty)
  t.match(fromFile, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: waypost ready \{"listen":"127\.0\.0\.1:\d+"/, 'from the file')
  const json = tempConfig(catchAllConfig('http://127.0.0.1:1'))
  t.match(await readyLine(['--log-format', 'pretty'], json), /INFO: waypost ready/, 'from the flag')
  t.match(JSON.parse(await readyLine([], json)), { msg: 'waypost ready', level: 30 }, 'JSON by default')
  const refused = await waypost(['run', '--config', json, '--log-format', 'fancy'])
  t.equal(refused.code, 2)
  t.match(refused.stderr, /--log-format \/ WAYPOST_LOG_FORMAT: expected one of json, pretty, got "fancy"/)
})

t.test('certs: writes the six files, then keeps them; usage errors exit 2', async (t) => {
  const { mkdtempSync, readdirSync: list } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const dir = join(mkdtempSync(join(tmpdir(), 'waypost-cli-certs-')), 'certs')
  const first = await waypost(['certs', '--out', dir, '--host', 'localhost', '--host', '127.0.0.1', '--spiffe', 'spiffe://cluster.local/ns/default/sa/app', '--days', '30'])
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, /ca\.crt, ca\.key: created\n.*server\.crt, server\.key: issued\n.*client\.crt, client\.key: issued\nFor development and tests only/)
  t.same(list(dir).sort(), ['ca.crt', 'ca.key', 'client.crt', 'client.key', 'server.crt', 'server.key'])
  const again = await waypost(['certs', '--out', dir])
  t.match(again.stdout, /ca\.key: kept[\s\S]*server\.key: kept[\s\S]*client\.key: kept/)
  const reissued = await waypost(['certs', '--out', dir, '--reissue'])
  t.match(reissued.stdout, /ca\.key: kept[\s\S]*server\.key: issued[\s\S]*client\.key: issued/)
  for (const args of [['certs'], ['certs', '--out', dir, '--days', 'ten'], ['certs', '--out', dir, '--spiffe', 'https://x'], ['certs', '--out', dir, 'extra']]) {
    const refused = await waypost(args)
    t.equal(refused.code, 2, args.join(' '))
    t.match(refused.stderr, /usage: waypost certs --out DIR/)
  }
})

t.test('report: a Markdown compliance report (or JSON) with the findings first; exit 1 for a bad file, 2 without one', async (t) => {
  const file = tempConfig(
    catchAllConfig('http://127.0.0.1:3000', {
      prefix: '/open',
      extra: {
        admin: { address: '0.0.0.0:0' },
        routes: [{ name: 'hs', match: { path: { prefix: '/hs' } }, upstream: 'app', policies: { auth: { jwt: { secret: 'tooshort', algorithms: ['HS256'], issuer: 'i', audience: 'a' } } } }],
      },
    }),
  )
  const markdown = await waypost(['report', file])
  t.equal(markdown.code, 0, markdown.stderr)
  t.match(markdown.stdout, /^# Compliance report: /)
  t.match(markdown.stdout, /- \*\*high\*\*: the admin listener is on 0\.0\.0\.0:0, not loopback/)
  t.match(markdown.stdout, /- \*\*high\*\* \(route `hs`\): JWT HS256 with a 8-byte secret/)
  t.match(markdown.stdout, /- \*\*medium\*\* \(route `all`\): reachable without authentication \(prefix \/open\)/)
  t.match(markdown.stdout, /\| `hs` \| `prefix \/hs` \| app \| JWT \(HS256, shared secret, iss "i", aud "a"\) \| none \| none \(plain HTTP\) \| none \|/)
  const json = await waypost(['report', file, '--json'])
  t.equal(json.code, 0)
  const parsed = JSON.parse(json.stdout) as { routes: Array<{ name: string }>; findings: Array<{ severity: string }> }
  t.same(parsed.routes.map((route) => route.name), ['all', 'hs'])
  t.equal(parsed.findings[0]!.severity, 'high')
  const bad = await waypost(['report', tempConfig('routes: 5')])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /routes: /)
  t.equal((await waypost(['report'])).code, 2)
})

t.test('validate: authorization rules that can never match and auth misconfigurations, each at its file:line:col', async (t) => {
  const rules = tempConfig(`upstreams:
  app: { url: "http://127.0.0.1:3000" }
routes:
  - name: a
    upstream: app
    policies:
      auth:
        jwt: { jwks: "http://127.0.0.1:3000/jwks", algorithms: [RS256, HS256] }
      authz:
        rules:
          - name: r1
            allow:
              subject: { regex: "(a" }
          - name: r2
            deny:
              time: { from: "10:00", to: "10:00" }
`)
  const result = await waypost(['validate', rules])
  t.equal(result.code, 1)
  t.match(result.stderr, /:8:64: routes\[0\]\.policies\.auth\.jwt\.algorithms: HS256 need a shared `secret`: never HS\* with a public key/)
  t.match(result.stderr, /:13:33: routes\[0\]\.policies\.authz\.rules\[0\]\.allow\.subject\.regex: invalid regular expression/)
  t.match(result.stderr, /:16:21: routes\[0\]\.policies\.authz\.rules\[1\]\.deny\.time: from and to are the same time/)
  const claimType = await waypost(['validate', tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n    policies:\n      authz:\n        rules:\n          - name: r\n            allow:\n              claims:\n                org: { equal: acme }\n')])
  t.match(claimType.stderr, /:12:22: routes\[0\]\.policies\.authz\.rules\[0\]\.allow\.claims\.org: expected \{ equals \}, \{ oneOf/)
  const none = await waypost(['validate', tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: app\n    policies:\n      auth:\n        jwt: { jwks: "http://x/jwks", algorithms: [none] }\n')])
  t.match(none.stderr, /routes\[0\]\.policies\.auth\.jwt\.algorithms\[0\]: expected one of RS256.*\("none" is never accepted\)/)
})
