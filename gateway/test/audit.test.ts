// The audit trail end to end, from the real `waypost run`: configs applied and rejected (version,
// hash, source, what changed), admin actions with the caller's address (refused ones too), signals,
// start and stop; one JSON line each in the file the policy names, chained by sequence number and
// the previous line's hash, continued across a restart; `stdout` puts them beside the log lines.
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { request } from 'undici'
import YAML from 'yaml'
import { startStub } from '../../upstream-stub/src/stub.js'
import { verifyAuditChain, lineHash } from '../src/telemetry/audit.js'
import { sleep, spawnGateway, tempConfig, waypost, type GatewayProcess } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

function policy(audit: string, routes: string[] = ['all']): string {
  return YAML.stringify({
    listen: { address: '127.0.0.1:0' },
    admin: { address: '127.0.0.1:0' },
    drain: { delay: '0s', timeout: '2s' },
    audit: { output: audit },
    upstreams: { app: { url: stub.url } },
    routes: routes.map((name, index) => ({ name, match: { path: { prefix: index === 0 ? '/' : `/${name}/` } }, upstream: 'app', policies: { cache: { purge: true } } })),
  })
}

function events(file: string): Array<Record<string, unknown>> {
  return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>)
}

function lines(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '')
}

async function admin(gw: GatewayProcess, path: string, headers: Record<string, string> = {}, body?: string): Promise<number> {
  const response = await request(`${gw.adminUrl}${path}`, { method: 'POST', headers, body })
  await response.body.dump()
  return response.statusCode
}

/** Waits until the trail holds `count` events (its writes are synchronous, but the test reads from another process). */
async function until(file: string, count: number): Promise<void> {
  for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(20)) if (lines(file).length >= count) return
  throw new Error(`the trail has ${lines(file).length} events, expected ${count}`)
}

t.test('configs, admin actions, signals, start and stop, chained; a restart continues the chain', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-audit-'))
  const trail = join(dir, 'logs', 'audit.jsonl')
  const file = tempConfig(policy(trail))
  const gw = await spawnGateway(file)
  t.teardown(() => gw.stop())
  t.equal(await admin(gw, '/reload'), 200, 'unchanged: an admin event, no config event')
  writeFileSync(file, policy(trail, ['all', 'extra']))
  t.equal(await admin(gw, '/reload'), 200)
  t.equal(await admin(gw, '/logging?level=debug'), 200)
  t.equal(await admin(gw, '/cache/purge', {}, '{"prefix": "/"}'), 200, 'a policy\'s endpoint is audited too')
  t.equal(await admin(gw, '/reload', { origin: 'http://attacker.example' }), 403)
  writeFileSync(file, 'routes: [')
  gw.child.kill('SIGHUP')
  // The signal, then the reload it starts: both in before SIGTERM, so the order is fixed.
  await until(trail, 10)
  gw.child.kill('SIGTERM')
  t.equal((await gw.exited).code, 0)

  const recorded = events(trail)
  t.same(
    recorded.map((event) => [event.event, event.path ?? event.signal ?? event.source ?? '']),
    [
      ['config.applied', 'startup'],
      ['gateway.started', ''],
      ['admin', '/reload'],
      ['config.applied', 'admin'],
      ['admin', '/reload'],
      ['admin', '/logging'],
      ['admin', '/cache/purge'],
      ['admin', '/reload'],
      ['signal', 'SIGHUP'],
      ['config.rejected', 'signal'],
      ['signal', 'SIGTERM'],
      ['gateway.stopped', ''],
    ],
  )
  t.match(recorded[0], { log: 'audit', seq: 1, prev: null, version: 1, hash: /^[0-9a-f]{16}$/, summary: { added: ['route:all', 'upstream:app', 'settings'] } })
  t.match(recorded[1], { pid: gw.pid, version: /^\d+\.\d+\.\d+/, node: process.version })
  t.match(recorded[3], { version: 2, source: 'admin', summary: { added: ['route:extra'], removed: [], changed: [] } })
  t.match(recorded[5], { method: 'POST', query: 'level=debug', remote: '127.0.0.1', caller: 'loopback', status: 200 })
  t.match(recorded[7], { remote: '127.0.0.1', caller: 'refused', status: 403 })
  t.match(recorded[8], { action: 'reload' })
  t.match(recorded[9], { errors: [/waypost\.yaml:\d+:\d+: YAML syntax/] })
  t.match(recorded[10], { action: 'drain' })
  t.match(recorded[11], { drained: true })
  t.same(verifyAuditChain(lines(trail)), { ok: true, events: 12 })

  // The next run appends to the same chain.
  writeFileSync(file, policy(trail))
  const next = await spawnGateway(file)
  await until(trail, 14)
  next.child.kill('SIGTERM')
  await next.exited
  const all = lines(trail)
  t.same(verifyAuditChain(all), { ok: true, events: all.length })
  t.match(JSON.parse(all[12]!), { seq: 13, prev: lineHash(all[11]!), event: 'config.applied', source: 'startup' })
})

t.test('stdout: the events beside the log lines, marked "log":"audit"', async (t) => {
  const gw = await spawnGateway(tempConfig(policy('stdout')))
  t.teardown(() => gw.stop())
  t.equal(await admin(gw, '/reload'), 200)
  await gw.waitForLog((line) => line.log === 'audit' && line.event === 'admin')
  const audit = gw.lines.filter((line) => line.log === 'audit')
  t.same(audit.map((line) => line.event), ['config.applied', 'gateway.started', 'admin'])
  t.same(audit.map((line) => line.seq), [1, 2, 3])
  t.ok(gw.lines.some((line) => line.msg === 'waypost ready'), 'among the ordinary log lines')
})

t.test('a trail that cannot be opened rejects the config: at start the gateway exits, at a reload the plan in force stays', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-audit-'))
  const blocker = join(dir, 'not-a-dir')
  writeFileSync(blocker, '')
  const start = await waypost(['run', '--config', tempConfig(policy(join(blocker, 'audit.jsonl')))])
  t.equal(start.code, 1)
  t.match(start.stderr, /audit\.output: cannot open the audit trail: .*(ENOTDIR|EEXIST)/)

  const good = join(dir, 'audit.jsonl')
  const file = tempConfig(policy(good))
  const gw = await spawnGateway(file)
  t.teardown(() => gw.stop())
  writeFileSync(file, policy(join(blocker, 'audit.jsonl'), ['all', 'extra']))
  const response = await request(`${gw.adminUrl}/reload`, { method: 'POST' })
  t.equal(response.statusCode, 422)
  t.match(await response.body.json(), { ok: false, errors: [/audit\.output: cannot open the audit trail/] })
  await until(good, 4)
  t.match(events(good).at(-2), { event: 'config.rejected', source: 'admin' }, 'recorded in the trail still in force')
})

t.test("a relative audit.output is read from the policy file's folder, not the working directory", async (t) => {
  const file = tempConfig(policy('trail/audit.jsonl'))
  const gw = await spawnGateway(file)
  t.teardown(() => gw.stop())
  const trail = join(dirname(file), 'trail', 'audit.jsonl')
  await until(trail, 2)
  t.same(events(trail).map((event) => event.event), ['config.applied', 'gateway.started'])
})
