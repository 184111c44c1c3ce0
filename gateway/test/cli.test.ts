// The `waypost` command as users run it.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { MAIN, tempConfig } from './helpers.js'

const example = fileURLToPath(new URL('../../config/waypost.yaml', import.meta.url))

function waypost(args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 10_000 })
  return { code: result.status, stdout: result.stdout, stderr: result.stderr }
}

t.test('validate: ok', async (t) => {
  const result = waypost(['validate', example])
  t.equal(result.code, 0)
  t.match(result.stdout, /ok \(2 routes, 1 upstreams, hash [0-9a-f]{16}\)/)
})

t.test('validate: the example files under config/examples are valid', async (t) => {
  for (const name of ['cache.yaml', 'cache-conformance.yaml', 'resilience.yaml']) {
    const result = waypost(['validate', fileURLToPath(new URL(`../../config/examples/${name}`, import.meta.url))])
    t.equal(result.code, 0, `${name}: ${result.stderr}`)
  }
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
  const result = waypost(['validate', file])
  t.equal(result.code, 1)
  const lines = result.stderr.trim().split('\n')
  t.equal(lines.length, 1, `schema errors come first; semantic ones once the shape is right:\n${result.stderr}`)
  t.equal(lines[0], `${file}:7:27: routes[0].policies.timeout.request: expected a duration such as "250ms", "2s", "1m" or a number of milliseconds`)
  const semantic = waypost(['validate', tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - name: a\n    upstream: ghost\n')])
  t.match(semantic.stderr, /:5:15: routes\[0\]\.upstream: unknown upstream "ghost"; defined: app/)
  t.match(waypost(['validate', '/nonexistent.yaml']).stderr, /cannot read the config file/)
})

t.test('version and usage', async (t) => {
  t.match(waypost(['version']).stdout, /^waypost \d+\.\d+\.\d+/)
  const unknown = waypost(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command "frobnicate"/)
})

t.test('run refuses bad overrides and bad configs with a clear message', async (t) => {
  const badListen = waypost(['run', '--config', example], { WAYPOST_LISTEN: 'localhost' })
  t.equal(badListen.code, 2)
  t.match(badListen.stderr, /WAYPOST_LISTEN: invalid address "localhost": expected HOST:PORT/)
  const badLevel = waypost(['run', '--config', example, '--log-level', 'loud'])
  t.equal(badLevel.code, 2)
  const badConfig = waypost(['run', '--config', tempConfig('routes: 5')])
  t.equal(badConfig.code, 1)
  t.match(badConfig.stderr, /config rejected:\n[\s\S]*upstreams: required field is missing\n[\s\S]*routes: Expected array/)
})
