// The log level at run time: POST /logging?level= on the admin port (Envoy's form), reported in
// GET /config and GET /logging, guarded like every mutating endpoint, kept across a reload unless
// the file says log.resetLevelOnReload.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'undici'
import YAML from 'yaml'
import { startStub } from '../../upstream-stub/src/stub.js'
import { startGateway, type RunningGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

function config(log: Record<string, unknown>, route = 'all'): string {
  return YAML.stringify({ listen: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, drain: { delay: '0s' }, log, upstreams: { app: { url: stub.url } }, routes: [{ name: route, upstream: 'app' }] })
}

async function post(gw: RunningGateway, path: string, headers: Record<string, string> = {}) {
  const response = await request(`${gw.adminUrl}${path}`, { method: 'POST', headers })
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> }
}

async function logging(gw: RunningGateway) {
  const config = (await (await request(`${gw.adminUrl}/config`)).body.json()) as { logging: Record<string, unknown> }
  return config.logging
}

/** Logs one line at each level through the gateway's logger; the levels that came out. */
function probe(gw: RunningGateway): string[] {
  const before = gw.logs.length
  for (const level of ['trace', 'debug', 'info', 'warn'] as const) gw.gateway.log[level]({ probe: level }, 'probe')
  return gw.logs.slice(before).filter((line) => line.msg === 'probe').map((line) => String(line.probe))
}

t.test('POST /logging?level=debug changes the level at once; GET /config and GET /logging report it', async (t) => {
  const gw = await startGateway(config({ level: 'warn' }))
  t.teardown(() => gw.close())
  t.same(probe(gw), ['warn'])
  t.match(await logging(gw), { level: 'warn', configured: 'warn', runtime: null, resetLevelOnReload: false })
  const changed = await post(gw, '/logging?level=debug')
  t.equal(changed.status, 200)
  t.match(changed.body, { ok: true, previous: 'warn', level: 'debug', configured: 'warn', runtime: { level: 'debug', by: '127.0.0.1' } })
  t.same(probe(gw), ['debug', 'info', 'warn'])
  t.match(await logging(gw), { level: 'debug', configured: 'warn', runtime: { level: 'debug', by: '127.0.0.1', at: /^\d{4}-/ } })
  t.match((await (await request(`${gw.adminUrl}/logging`)).body.json()) as object, { level: 'debug' }, 'GET /logging reads it too')
  t.match(gw.logs.find((line) => line.msg === 'log level changed at run time'), { level: 40, from: 'warn', to: 'debug', by: '127.0.0.1' })
  const listed = await post(gw, '/logging')
  t.match(listed, { status: 200, body: { level: 'debug' } }, 'without a level: what it is, as Envoy answers')
  const reset = await post(gw, '/logging?level=reset')
  t.match(reset.body, { ok: true, previous: 'debug', level: 'warn', runtime: null })
  t.same(probe(gw), ['warn'])
})

t.test('a bad level or parameter is refused with why; a web page may not change it', async (t) => {
  const gw = await startGateway(config({}))
  t.teardown(() => gw.close())
  t.match(await post(gw, '/logging?level=loud'), { status: 400, body: { ok: false, error: /unknown level "loud": expected one of fatal, error, warn, info, debug, trace, silent, or reset/ } })
  t.match(await post(gw, '/logging?lvl=debug'), { status: 400, body: { error: /unknown parameter lvl/ } })
  t.match(await post(gw, '/logging?level=debug', { origin: 'http://attacker.example' }), { status: 403, body: { error: /cross-origin/ } })
  t.match(await post(gw, '/logging?level=debug', { host: 'attacker.example' }), { status: 403, body: { error: /DNS rebinding/ } })
  t.equal((await logging(gw)).level, 'info', 'unchanged')
  const get = await request(`${gw.adminUrl}/logging?level=debug`)
  await get.body.dump()
  t.equal((await logging(gw)).level, 'info', 'GET only reads')
})

t.test('a reload keeps a level set at run time, unless the file says log.resetLevelOnReload', async (t) => {
  const gw = await startGateway(config({ level: 'info' }))
  t.teardown(() => gw.close())
  await post(gw, '/logging?level=debug')
  writeFileSync(gw.configFile, config({ level: 'warn' }, 'renamed'))
  t.match(await gw.gateway.reload('admin'), { ok: true, changed: true })
  t.match(await logging(gw), { level: 'debug', configured: 'warn', runtime: { level: 'debug' } }, 'kept over the file\'s new level')
  writeFileSync(gw.configFile, config({ level: 'warn', resetLevelOnReload: true }, 'again'))
  t.match(await gw.gateway.reload('admin'), { ok: true, changed: true })
  t.match(await logging(gw), { level: 'warn', configured: 'warn', runtime: null, resetLevelOnReload: true }, 'back to the file\'s')
  await post(gw, '/logging?level=error')
  writeFileSync(gw.configFile, 'routes: [')
  t.match(await gw.gateway.reload('file'), { ok: false })
  t.equal((await logging(gw)).level, 'error', 'a rejected file changes nothing')
})
