// No secret reaches a log: the real `waypost run` at debug level (set at run time), traffic that
// carries planted secrets in Authorization, Proxy-Authorization, Cookie, a configured header, the
// upstream's Set-Cookie and configured query parameters, through the paths that log (a shadow rate
// limit keyed on the header, a cache revalidating in the background against an upstream that went
// away, a 404, a malformed request, admin calls), and then every byte the process wrote to stdout
// and stderr, and the audit trail, is searched for each secret.
import t from 'tap'
import { mkdtempSync, readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import YAML from 'yaml'
import { startStub } from '../../upstream-stub/src/stub.js'
import { sleep, spawnGateway, tempConfig } from './helpers.js'

const SECRETS = {
  bearer: 'SECRETbearer4c1f',
  proxy: 'SECRETproxy9e2a',
  cookie: 'SECRETcookie77b0',
  apiKey: 'SECRETapikey5d3e',
  setCookie: 'SECRETsetcookie0aa1',
  query: 'SECRETquery6b8c',
  token: 'SECRETtoken2f4d',
  adminQuery: 'SECRETadmin31c9',
  background: 'SECRETbackground8e1d',
  raw: 'SECRETraw47aa',
}

const app = await startStub()
const going = await startStub()
const dir = mkdtempSync(join(tmpdir(), 'waypost-redaction-'))
const auditFile = join(dir, 'audit.jsonl')
const config = tempConfig(
  YAML.stringify({
    listen: { address: '127.0.0.1:0' },
    admin: { address: '127.0.0.1:0' },
    drain: { delay: '0s', timeout: '2s' },
    log: { level: 'info', redact: { headers: ['x-api-key'], query: ['api_key', 'access_token'] } },
    audit: { output: auditFile },
    upstreams: { app: { url: app.url }, going: { url: going.url } },
    routes: [
      { name: 'shadowed', match: { path: { prefix: '/shadow/' } }, upstream: 'app', rewrite: { pathPrefix: '/anything/' }, policies: { rateLimit: { rate: 0.1, burst: 1, key: { header: 'x-api-key' }, shadow: true } } },
      { name: 'cached', match: { path: { prefix: '/cached/' } }, upstream: 'going', rewrite: { pathPrefix: '/cacheable/' }, policies: { cache: {} } },
      { name: 'app', match: { path: { prefix: '/anything/' } }, upstream: 'app' },
    ],
  }),
)
const gw = await spawnGateway(config)
t.teardown(async () => {
  await gw.stop()
  await app.close()
  await going.close()
})

const credentials = {
  authorization: `Bearer ${SECRETS.bearer}`,
  'proxy-authorization': `Basic ${SECRETS.proxy}`,
  cookie: `session=${SECRETS.cookie}`,
  'x-api-key': SECRETS.apiKey,
}

async function send(path: string, headers: Record<string, string> = credentials, method: 'GET' | 'POST' = 'GET'): Promise<number> {
  const response = await request(`${gw.url}${path}`, { method, headers })
  await response.body.dump()
  return response.statusCode
}

async function admin(path: string, headers: Record<string, string> = {}): Promise<number> {
  const response = await request(`${gw.adminUrl}${path}`, { method: 'POST', headers })
  await response.body.dump()
  return response.statusCode
}

t.test('no planted secret appears in stdout, stderr or the audit trail', async (t) => {
  t.equal(await admin(`/logging?level=debug&api_key=${SECRETS.adminQuery}`), 400, 'an unknown parameter is refused (and audited, scrubbed)')
  t.equal(await admin('/logging?level=debug', { authorization: `Bearer ${SECRETS.bearer}` }), 200, 'debug from now on')
  const query = `?api_key=${SECRETS.query}&access_token=${SECRETS.token}&page=2`
  // A shadow limit keyed on the API key: the second and third requests log "would be limited".
  for (let i = 0; i < 3; i++) t.equal(await send(`/shadow/x${query}`), 200)
  t.equal(await send(`/nowhere${query}`), 404)
  t.equal(await send(`/anything/echo${query}`, credentials, 'POST'), 200)
  // The upstream's Set-Cookie on a revalidation (a 304 with a cookie), through the cache, which
  // stores nothing for a request with Authorization: these carry the configured header only.
  const keyOnly = { 'x-api-key': SECRETS.apiKey }
  const revalidated = `/cached/sc?cc=max-age=0&etag=%22e%22&cookie304=sid%3D${SECRETS.setCookie}`
  t.equal(await send(revalidated, keyOnly), 200)
  await sleep(20)
  t.equal(await send(revalidated, keyOnly), 200)
  // Stale and served at once while revalidated in the background, against an upstream now gone:
  // the failure is logged at debug with the request's URI.
  const background = `/cached/bg?cc=max-age=0,stale-while-revalidate=60&api_key=${SECRETS.background}`
  t.equal(await send(background, keyOnly), 200)
  await going.close()
  await sleep(20)
  t.equal(await send(background, keyOnly), 200, 'the stale copy')
  // A malformed request whose header block holds a credential.
  await new Promise<void>((resolve) => {
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1')
    socket.on('error', () => resolve())
    socket.on('close', () => resolve())
    socket.on('data', () => undefined)
    socket.end(`GET /anything/x?api_key=${SECRETS.raw} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${SECRETS.raw}\r\nbad header\r\n\r\n`)
  })
  t.equal(await admin('/reload', { authorization: `Bearer ${SECRETS.bearer}` }), 200)
  await gw.waitForLog((line) => line.msg === 'cache: background revalidation failed')
  gw.child.kill('SIGTERM')
  const exit = await gw.exited
  t.equal(exit.code, 0)

  const stdout = gw.lines.map((line) => JSON.stringify(line)).join('\n')
  const audit = readFileSync(auditFile, 'utf8')
  for (const [name, secret] of Object.entries(SECRETS)) {
    t.notMatch(stdout, secret, `stdout holds no ${name} secret`)
    t.notMatch(audit, secret, `the audit trail holds no ${name} secret`)
  }
  t.notMatch(gw.stderr(), /SECRET/, 'stderr neither')

  // The lines that would have held them are there.
  const shadow = gw.lines.filter((line) => line.msg === 'rate limit exceeded (shadow mode: let through)')
  t.equal(shadow.length, 2)
  t.match(shadow[0], { key: /^h:sha256:[0-9a-f]{12}$/ }, 'the header key as a fingerprint')
  const failed = gw.lines.find((line) => line.msg === 'cache: background revalidation failed')
  t.match(failed, { level: 20, uri: /api_key=\[redacted\]/ })
  t.ok(gw.lines.some((line) => line.msg === 'access' && line.route === 'shadowed'), 'access lines were written')
  t.ok(gw.lines.some((line) => line.msg === 'client error'), 'the malformed request was logged')
  const auditEvents = audit.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>)
  t.match(
    auditEvents.filter((event) => event.event === 'admin' && event.path === '/logging'),
    [
      { status: 400, query: 'level=debug&api_key=[redacted]' },
      { status: 200, query: 'level=debug', caller: 'loopback' },
    ],
  )
})
