// `workers: N` end to end (docs/operations/workers.md): the real `waypost run` supervising real worker
// processes in front of the upstream stub, on loopback. Which worker served a request is read from
// the access log's `worker` field (no response header says it).
import t from 'tap'
import { get as httpGet } from 'node:http'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, commandInstalled, promtoolCheck, sleep, spawnGateway, tempConfig, waypost, type GatewayProcess, type LogLine } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())
const promtool = commandInstalled('promtool')

/** A catch-all config with `workers` and the route's policies. */
function config(workers: unknown, policies?: Record<string, unknown>, drain = { delay: '0s', timeout: '10s' }): string {
  return `workers: ${JSON.stringify(workers)}\n${catchAllConfig(stub.url, { drain, ...(policies === undefined ? {} : { policies }) })}`
}

/** A GET on a connection of its own (so that connections, and so workers, vary); its status. */
function freshGet(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (response) => {
      response.resume()
      response.once('end', () => resolve(response.statusCode ?? 0))
    }).once('error', reject)
  })
}

/** The pids whose parent is `pid` (from /proc: no `ps` needed). */
function childrenOf(pid: number): number[] {
  const children: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      // Field 4 of stat is the parent pid; the command name (field 2) may hold spaces, so split after its ')'.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === pid) children.push(Number(entry))
    } catch {
      // Gone between the listing and the read.
    }
  }
  return children
}

function series(text: string, name: string): number | undefined {
  const line = text.split('\n').find((each) => each.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

async function adminJson(gw: GatewayProcess, path: string, method: 'GET' | 'POST' = 'GET'): Promise<{ status: number; body: Record<string, unknown> }> {
  const answer = await request(`${gw.adminUrl}${path}`, { method })
  return { status: answer.statusCode, body: (await answer.body.json()) as Record<string, unknown> }
}

async function readyStatus(gw: GatewayProcess): Promise<{ status: number; text: string }> {
  const answer = await request(`${gw.adminUrl}/ready`)
  return { status: answer.statusCode, text: await answer.body.text() }
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  for (const started = Date.now(); Date.now() - started < timeoutMs; await sleep(100)) if (await check()) return true
  return false
}

const accessLines = (gw: GatewayProcess): LogLine[] => gw.lines.filter((line) => line.msg === 'access')

t.test('workers: 2 serve one port; /metrics adds both up and promtool accepts it; /stats says whose', async (t) => {
  const gw = await spawnGateway(tempConfig(config(2)))
  t.teardown(() => gw.stop())
  const ready = gw.lines.find((line) => line.msg === 'waypost ready')!
  t.equal(ready.workers, 2)
  t.equal(ready.worker, undefined, 'the supervisor\'s own lines have no worker field')
  t.equal(childrenOf(gw.pid).length, 2, 'two worker processes under the supervisor')
  t.equal((await readyStatus(gw)).status, 200)

  const statuses = []
  for (let i = 0; i < 40; i++) statuses.push(await freshGet(`${gw.url}/status/200`))
  t.same(new Set(statuses), new Set([200]))
  t.ok(await waitUntil(async () => accessLines(gw).length >= 40, 5000), 'every request has its access line')
  const byWorker = new Map<unknown, number>()
  for (const line of accessLines(gw)) byWorker.set(line.worker, (byWorker.get(line.worker) ?? 0) + 1)
  t.same([...byWorker.keys()].sort(), [0, 1], 'both workers served, and every access line names one')
  t.ok(gw.lines.filter((line) => line.msg === 'config applied').every((line) => line.worker === 0 || line.worker === 1), 'worker lines carry their index')

  const metrics = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  t.equal(series(metrics, 'waypost_requests_total{route="all",method="GET",status_class="2xx"}'), 40, 'the counts of both workers, summed')
  t.equal(series(metrics, 'waypost_request_duration_seconds_count{route="all"}'), 40, 'histograms summed too')
  t.equal(series(metrics, 'waypost_workers'), 2)
  t.equal(series(metrics, 'waypost_worker_restarts_total'), 0)
  t.match(metrics, /^waypost_build_info\{version="[^"]+",node_version="v[^"]+"\} 1$/m, 'an info series is not summed')
  t.match(metrics, /^waypost_config_info\{version="1",hash="[0-9a-f]{16}",source="startup"\} 1$/m)
  t.equal(series(metrics, 'waypost_config_last_reload_successful'), 1, 'a state is not summed')
  if (promtool) {
    const { code, output } = await promtoolCheck(metrics)
    t.equal(output, '', 'promtool prints nothing')
    t.equal(code, 0)
  }
  const openMetrics = await request(`${gw.adminUrl}/metrics`, { headers: { accept: 'application/openmetrics-text; version=1.0.0' } })
  t.match(openMetrics.headers['content-type'], /openmetrics/)
  t.match(await openMetrics.body.text(), /# EOF\n$/)

  const stats = await adminJson(gw, '/stats')
  t.equal(stats.status, 200)
  t.match(stats.body.workers, { count: 2, answeredBy: 0 })
  t.same([...(stats.body.workers as { pids: number[] }).pids].sort(), childrenOf(gw.pid).sort(), 'the workers\' pids')
})

t.test('POST /reload reloads every worker; a bad file is rejected by all and /ready stays 200', async (t) => {
  const gw = await spawnGateway(tempConfig(config(2)))
  t.teardown(() => gw.stop())
  const file = gw.child.spawnargs[gw.child.spawnargs.indexOf('--config') + 1]!
  writeFileSync(file, config(2, { timeout: { request: '5s' } }))
  const reloaded = await adminJson(gw, '/reload', 'POST')
  t.equal(reloaded.status, 200)
  const answers = reloaded.body.workers as Array<{ worker: number; status: number; body: { ok: boolean; version: number } }>
  t.same(answers.map((answer) => answer.worker), [0, 1], 'one answer per worker')
  for (const answer of answers) t.match(answer, { status: 200, body: { ok: true, version: 2 } }, `worker ${answer.worker} runs version 2`)

  writeFileSync(file, 'workers: 2\nroutes: [oops\n')
  const rejected = await adminJson(gw, '/reload', 'POST')
  t.equal(rejected.status, 422, 'the workers\' own status')
  t.equal(rejected.body.ok, false)
  for (const answer of rejected.body.workers as Array<{ status: number; body: { ok: boolean; errors: string[] } }>) t.match(answer, { status: 422, body: { ok: false, errors: [/./] } })
  t.equal((await readyStatus(gw)).status, 200, 'the plan in force keeps serving')
  t.equal(await freshGet(`${gw.url}/status/200`), 200)
  const metrics = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  t.equal(series(metrics, 'waypost_config_last_reload_successful'), 0, 'some worker\'s last load failed')
  t.equal(series(metrics, 'waypost_config_version'), 2)
})

t.test('a killed worker is replaced; /ready fails meanwhile and then returns to 200', async (t) => {
  const gw = await spawnGateway(tempConfig(config(2)))
  t.teardown(() => gw.stop())
  const before = childrenOf(gw.pid)
  t.equal(before.length, 2)
  process.kill(before[1]!, 'SIGKILL')
  t.ok(await waitUntil(async () => (await readyStatus(gw)).status === 503, 3000), 'not ready while a worker is missing')
  t.ok(await waitUntil(async () => (await readyStatus(gw)).status === 200, 20_000), 'ready again once replaced')
  const after = childrenOf(gw.pid)
  t.equal(after.length, 2)
  t.notOk(after.includes(before[1]!), 'the dead one is not among them')
  await gw.waitForLog((line) => line.msg === 'worker died; forking a new one')
  const metrics = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  t.equal(series(metrics, 'waypost_worker_restarts_total'), 1)
  t.equal(await freshGet(`${gw.url}/status/200`), 200)
})

t.test('SIGTERM: every worker drains, a slow request started before completes, the supervisor exits 0', async (t) => {
  const gw = await spawnGateway(tempConfig(config(2, undefined, { delay: '200ms', timeout: '10s' })))
  t.teardown(() => gw.stop())
  const workers = childrenOf(gw.pid)
  const slow = freshGet(`${gw.url}/delay/1.5`)
  await sleep(300)
  gw.child.kill('SIGTERM')
  t.ok(await waitUntil(async () => (await readyStatus(gw)).status === 503, 1000), '/ready fails at once')
  t.equal(await slow, 200, 'the in-flight request completes')
  t.same(await gw.exited, { code: 0, signal: null })
  t.equal(workers.length, 2)
  t.same(workers.filter((pid) => readdirSync('/proc').includes(String(pid))), [], 'no worker outlives the supervisor')
})

t.test('local rate limit divided: 2 workers allow about the configured burst in all, not twice it', async (t) => {
  // Burst 20 over 2 workers: 10 each; 1/s refill is 0.5/s each, a few more over the test's seconds.
  const gw = await spawnGateway(tempConfig(config(2, { rateLimit: { rate: 1, burst: 20, key: 'route' } })))
  t.teardown(() => gw.stop())
  const statuses = []
  for (let i = 0; i < 60; i++) statuses.push(await freshGet(`${gw.url}/status/200`))
  const allowed = statuses.filter((status) => status === 200).length
  t.ok(allowed >= 15 && allowed <= 28, `${allowed} allowed of 60: about 20, not 40`)
  t.equal(statuses.filter((status) => status === 429).length, 60 - allowed)
  const configured = await adminJson(gw, '/config')
  t.match(configured.body.workers, {
    count: 2,
    limits: [
      { route: 'all', policy: 'rateLimit', field: 'rate', configured: 1, perWorker: 0.5 },
      { route: 'all', policy: 'rateLimit', field: 'burst', configured: 20, perWorker: 10 },
    ],
  })
})

t.test('workers: 1 is the single process: no supervisor, no children, no worker field', async (t) => {
  const gw = await spawnGateway(tempConfig(config(1)))
  t.teardown(() => gw.stop())
  const ready = gw.lines.find((line) => line.msg === 'waypost ready')!
  t.equal(ready.workers, undefined)
  t.same(childrenOf(gw.pid), [], 'no worker processes')
  t.equal(await freshGet(`${gw.url}/status/200`), 200)
  await gw.waitForLog((line) => line.msg === 'access')
  t.notOk(gw.lines.some((line) => 'worker' in line), 'no line has a worker field')
  t.equal((await adminJson(gw, '/config')).body.workers, undefined)
})

t.test('the first start of a worker failing stops everything with exit 1', async (t) => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => taken.close())
  const port = (taken.address() as AddressInfo).port
  const file = tempConfig(`workers: 2\n${catchAllConfig(stub.url, { listen: { address: `127.0.0.1:${port}` } })}`)
  const result = await waypost(['run', '--config', file])
  t.equal(result.code, 1)
  t.match(result.stderr, /EADDRINUSE/)
  t.match(result.stderr, /worker 0 exited before serving/)
})

t.test('hostile workers values are refused with where and why', async (t) => {
  // Every process at once: each is a node start, seconds on a busy machine.
  const values = ['0', '-1', '1000', '"lots"', '2.5']
  const files = values.map((value) => tempConfig(config('PLACEHOLDER').replace('"PLACEHOLDER"', value)))
  const validated = await Promise.all(files.map((file) => waypost(['validate', file])))
  values.forEach((value, index) => {
    t.equal(validated[index]!.code, 1, value)
    t.equal(validated[index]!.stderr, `${files[index]}:1:10: workers: expected a whole number from 1 to 64, or "auto" (one per CPU the process may use)\n`, value)
  })
  t.equal((await waypost(['validate', tempConfig(config('auto'))])).code, 0, 'auto is valid')
  const flags = ['0', 'lots', '65', '1e1']
  const [byFlag, byEnv] = await Promise.all([
    Promise.all(flags.map((value) => waypost(['run', '--workers', value, '--config', '/nonexistent.yaml']))),
    Promise.all(flags.map((value) => waypost(['run', '--config', '/nonexistent.yaml'], { env: { WAYPOST_WORKERS: value } }))),
  ])
  flags.forEach((value, index) => {
    t.equal(byFlag[index]!.code, 2, `--workers ${value}`)
    t.match(byFlag[index]!.stderr, /^--workers \/ WAYPOST_WORKERS: expected a whole number from 1 to 64, or auto/)
    t.equal(byEnv[index]!.code, 2, `WAYPOST_WORKERS=${value}`)
  })
})
