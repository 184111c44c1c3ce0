// Zero dropped requests across reloads: a real gateway process under continuous load (keep-alive
// and new connections, GETs and POSTs with bodies) while its policy file changes by file edit,
// SIGHUP and POST /reload, and once is broken.
import t from 'tap'
import { renameSync, writeFileSync, symlinkSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Client, Pool, request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, sleep, spawnGateway, tempConfig } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

function configWith(timeout: number): string {
  return catchAllConfig(stub.url, { accessLog: false, policies: { timeout: { request: `${timeout}ms` }, concurrency: { max: 64, queue: 64 } } })
}

async function activeVersion(adminUrl: string): Promise<number> {
  const response = await request(`${adminUrl}/config`)
  return ((await response.body.json()) as { active: { version: number } }).active.version
}

async function waitForVersion(adminUrl: string, version: number): Promise<void> {
  const deadline = Date.now() + 5000
  while ((await activeVersion(adminUrl)) < version) {
    if (Date.now() > deadline) throw new Error(`version ${version} never became active`)
    await sleep(20)
  }
}

/** Replaces the file atomically, as editors and `kubectl cp` do. */
function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text)
  renameSync(`${file}.tmp`, file)
}

t.test('reloads under continuous load drop nothing', async (t) => {
  const file = tempConfig(configWith(5000))
  const gw = await spawnGateway(file, { WAYPOST_LOG_LEVEL: 'info' })
  t.teardown(() => gw.stop())
  const keepAlive = new Pool(gw.url, { connections: 4 })
  t.teardown(() => keepAlive.close())

  let sent = 0
  const failures: string[] = []
  let running = true
  const body = 'x'.repeat(4096)
  async function worker(id: number): Promise<void> {
    while (running) {
      const post = sent % 3 === 0
      sent++
      try {
        // Half the workers reuse keep-alive sockets, half open a new connection every time.
        const client = id % 2 === 0 ? keepAlive : new Client(gw.url)
        const response = await client.request({ path: post ? '/anything' : '/status/200', method: post ? 'POST' : 'GET', body: post ? body : null })
        const text = await response.body.text()
        if (response.statusCode !== 200) failures.push(`${response.statusCode} ${String(response.headers['x-waypost-reason'])}`)
        else if (post && !text.includes('"bodyLength":4096')) failures.push('POST body lost')
        if (client !== keepAlive) await client.close()
      } catch (error) {
        failures.push((error as Error).message)
      }
    }
  }
  const workers = [0, 1, 2, 3, 4, 5].map(worker)

  let version = 1
  const reloads: string[] = []
  /** Requests sent so far at each reload: traffic must be flowing across every one, however fast the host. */
  const sentAtReload: number[] = []
  for (const [index, how] of ['file', 'sighup', 'admin', 'file', 'bad', 'sighup', 'admin'].entries()) {
    await sleep(150)
    // 'bad': an unclosed flow sequence, a YAML syntax error.
    const text = how === 'bad' ? configWith(1000).replace('routes:', 'routes: [') : configWith(4000 - index * 100)
    replaceFile(file, text)
    if (how === 'sighup') gw.child.kill('SIGHUP')
    if (how === 'admin') {
      const response = await request(`${gw.adminUrl}/reload`, { method: 'POST' })
      await response.body.dump()
    }
    if (how === 'bad') {
      await gw.waitForLog((line) => line.msg === 'config rejected; the plan in force keeps serving')
    } else {
      version++
      await waitForVersion(gw.adminUrl, version)
    }
    reloads.push(how)
    sentAtReload.push(sent)
  }
  await sleep(150)
  running = false
  await Promise.all(workers)

  const quietReloads = sentAtReload.filter((count, index) => count <= (sentAtReload[index - 1] ?? 0))
  t.same(quietReloads, [], `requests were in flight across every reload (sent by each: ${sentAtReload.join(', ')})`)
  t.same(failures, [], `${failures.length} of ${sent} requests failed`)
  t.equal(await activeVersion(gw.adminUrl), 7, 'six good reloads applied on top of version 1')
  const rejected = gw.lines.find((line) => line.msg === 'config rejected; the plan in force keeps serving') as { errors?: string[] } | undefined
  t.match(rejected?.errors?.[0], /waypost\.yaml:[1-9]\d*:[1-9]\d*: YAML syntax/, 'the rejection was logged with its position')
  const status = (await (await request(`${gw.adminUrl}/config`)).body.json()) as { lastError: { errors: string[] } | null }
  t.equal(status.lastError, null, 'the good reloads after it cleared lastError')
  t.comment(`reload under load: ${sent} requests, ${failures.length} failures, ${reloads.length} reloads (${reloads.join(', ')})`)
})

t.test('a Kubernetes ConfigMap-style ..data symlink swap triggers a reload', async (t) => {
  const dir = dirname(tempConfig('placeholder'))
  mkdirSync(join(dir, '..v1'))
  writeFileSync(join(dir, '..v1', 'waypost.yaml'), configWith(3000))
  symlinkSync('..v1', join(dir, '..data'))
  const file = join(dir, 'cm.yaml')
  symlinkSync('..data/waypost.yaml', file)
  const gw = await spawnGateway(file)
  t.teardown(() => gw.stop())
  t.equal(await activeVersion(gw.adminUrl), 1)
  mkdirSync(join(dir, '..v2'))
  writeFileSync(join(dir, '..v2', 'waypost.yaml'), configWith(2000))
  symlinkSync('..v2', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  await waitForVersion(gw.adminUrl, 2)
  t.pass('the swapped ConfigMap was applied')
})

/** A file whose aliases expand nine-fold at each of five levels: what yaml calls a resource exhaustion attack. */
function aliasBomb(good: string): string {
  const levels = ['x-0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
  for (let level = 1; level < 5; level++) levels.push(`x-${level}: &l${level} [${Array(9).fill(`*l${level - 1}`).join(',')}]`)
  return `${levels.join('\n')}\n${good}`
}

t.test('a file that cannot load (an alias bomb) is refused by every trigger; the process lives and the next good file applies', async (t) => {
  const file = tempConfig(configWith(5000))
  const gw = await spawnGateway(file, { WAYPOST_LOG_LEVEL: 'info' })
  t.teardown(() => gw.stop())
  const rejections = (): number => gw.lines.filter((line) => line.msg === 'config rejected; the plan in force keeps serving').length

  replaceFile(file, aliasBomb(configWith(4000)))
  await gw.waitForLog(() => rejections() >= 1) // the file watcher
  gw.child.kill('SIGHUP')
  await gw.waitForLog(() => rejections() >= 2)
  const admin = await request(`${gw.adminUrl}/reload`, { method: 'POST' })
  t.equal(admin.statusCode, 422, 'POST /reload answers 422 with the errors, not 500')
  t.match(await admin.body.json(), { ok: false, errors: [/waypost\.yaml:2:\d+: YAML aliases expand past 1000 uses/] })
  t.equal(gw.child.exitCode, null, 'still running')
  t.equal((await request(`${gw.adminUrl}/ready`)).statusCode, 200)
  t.equal((await request(`${gw.url}/status/200`)).statusCode, 200, 'the plan in force keeps serving')

  replaceFile(file, configWith(3000))
  await waitForVersion(gw.adminUrl, 2)
  t.pass('a good file applies after the bad ones')
})

t.test('putting a rejected file back as it was clears the error: logged, and lastError null in GET /config', async (t) => {
  const good = configWith(5000)
  const file = tempConfig(good)
  const gw = await spawnGateway(file, { WAYPOST_LOG_LEVEL: 'info' })
  t.teardown(() => gw.stop())
  const lastError = async (): Promise<{ errors: string[] } | null> =>
    ((await (await request(`${gw.adminUrl}/config`)).body.json()) as { lastError: { errors: string[] } | null }).lastError

  // A bad indent, the slip that used to be reported at 0:0.
  const badIndent = good.replace(/\n( {4}url: .*)\n/, '\n$1\n   connections: 4\n')
  t.not(badIndent, good)
  replaceFile(file, badIndent)
  const rejected = await gw.waitForLog((line) => line.msg === 'config rejected; the plan in force keeps serving')
  t.match((rejected as { errors?: string[] }).errors?.[0], /waypost\.yaml:[1-9]\d*:[1-9]\d*: YAML syntax/)
  t.match(await lastError(), { errors: [/YAML syntax/] })

  replaceFile(file, good)
  const cleared = await gw.waitForLog((line) => line.msg === 'config error cleared: the file loads again')
  t.match(cleared, { source: 'file', version: 1 }, 'the plan in force is unchanged')
  t.equal(await lastError(), null)
  t.equal(await activeVersion(gw.adminUrl), 1, 'nothing was applied: the file is what runs')
  t.equal(gw.lines.filter((line) => line.msg === 'config applied').length, 1)
})
