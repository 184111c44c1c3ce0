// README's first command, `npm start`: the stub and the gateway with the bundled policy, and Ctrl-C
// stops both (the gateway drains first). Run here on free ports, with the bundled file rewritten to them.
import t from 'tap'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { freePorts, sleep, tempConfig } from './helpers.js'

const START = fileURLToPath(new URL('../../dist/gateway/scripts/start.js', import.meta.url))
const BUNDLED = fileURLToPath(new URL('../../config/waypost.yaml', import.meta.url))

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', () => resolve(true))
  })
}

t.test('npm start serves the bundled policy in front of the stub; Ctrl-C stops both', async (t) => {
  const [proxyPort, adminPort, stubPort] = await freePorts(3)
  const bundled = readFileSync(BUNDLED, 'utf8')
  for (const address of ['127.0.0.1:8080', '127.0.0.1:9901', '127.0.0.1:3000']) t.ok(bundled.includes(address), `the bundled file uses ${address}`)
  const config = tempConfig(
    bundled.replaceAll('127.0.0.1:8080', `127.0.0.1:${proxyPort}`).replaceAll('127.0.0.1:9901', `127.0.0.1:${adminPort}`).replaceAll('127.0.0.1:3000', `127.0.0.1:${stubPort}`),
  )
  // Settings from the caller's environment must not override the file.
  const env: NodeJS.ProcessEnv = { ...process.env, WAYPOST_CONFIG: config, STUB_PORT: String(stubPort) }
  delete env.WAYPOST_LISTEN
  delete env.WAYPOST_ADMIN
  const child = spawn(process.execPath, [START], { env, stdio: 'ignore' })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    // SIGTERM, so start.js stops its (detached) children; a SIGKILL would leave them running.
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  })

  let status = 0
  for (const deadline = Date.now() + 20_000; status !== 200 && Date.now() < deadline; ) {
    status = await request(`http://127.0.0.1:${proxyPort}/status/200`).then(
      async (response) => {
        await response.body.dump()
        return response.statusCode
      },
      () => 0,
    )
    if (status !== 200) await sleep(100)
  }
  t.equal(status, 200, 'a request through the gateway reaches the stub')
  const ready = await request(`http://127.0.0.1:${adminPort}/ready`)
  await ready.body.dump()
  t.equal(ready.statusCode, 200, 'the admin port answers /ready')

  child.kill('SIGINT')
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([exited, new Promise<string>((resolve) => (timer = setTimeout(resolve, 15_000, 'still running after 15 s')))])
  clearTimeout(timer)
  t.equal(code, 0, 'Ctrl-C: the gateway drains, then both stop, exit 0')
  t.ok(await refused(proxyPort), 'the gateway is gone')
  t.ok(await refused(stubPort), 'the stub is gone')
})

// The process tree `npm start` makes: npm, then start.js (the script is `exec node …`), then the stub
// and the gateway. Each way it can end must leave no process and no port behind.
const NPM: string[] = process.env.npm_execpath?.endsWith('.js') === true ? [process.execPath, process.env.npm_execpath] : ['npm']
const ROOT = fileURLToPath(new URL('../../', import.meta.url))

function descendants(root: number): number[] {
  const table = execFileSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' })
  const children = new Map<number, number[]>()
  for (const line of table.trim().split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number) as [number, number]
    children.set(ppid, [...(children.get(ppid) ?? []), pid])
  }
  const found: number[] = []
  const queue = [root]
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      queue.push(child)
      found.push(child)
    }
  }
  return found
}

/** Alive and not a zombie waiting to be reaped. */
function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').startsWith('Z')
  } catch {
    return false
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

interface Ending {
  name: string
  /** Sends the signal; `npm` is npm's pid, also its process group's id. */
  end(npm: number, tree: number[]): void
}

const endings: Ending[] = [
  ...(['SIGTERM', 'SIGINT', 'SIGHUP'] as const).flatMap((signal): Ending[] => [
    { name: `${signal} to npm`, end: (npm) => process.kill(npm, signal) },
    { name: `${signal} to npm's process group`, end: (npm) => process.kill(-npm, signal) },
  ]),
  { name: 'SIGKILL to npm', end: (npm) => process.kill(npm, 'SIGKILL') },
  { name: 'SIGKILL to npm and start.js (the process group)', end: (npm) => process.kill(-npm, 'SIGKILL') },
  {
    name: 'SIGKILL to start.js alone',
    end: (_npm, tree) => {
      const start = tree.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('start.js'))
      if (start === undefined) throw new Error('start.js not found among npm start’s processes')
      process.kill(start, 'SIGKILL')
    },
  },
]

t.test('npm start leaves no process and no port behind, however it is stopped', async (t) => {
  t.jobs = 3
  for (const ending of endings) {
    t.test(ending.name, async (t) => {
      const [proxyPort, adminPort, stubPort] = await freePorts(3)
      const bundled = readFileSync(BUNDLED, 'utf8')
      t.ok(bundled.includes('delay: 2s'))
      const config = tempConfig(
        bundled
          .replaceAll('127.0.0.1:8080', `127.0.0.1:${proxyPort}`)
          .replaceAll('127.0.0.1:9901', `127.0.0.1:${adminPort}`)
          .replaceAll('127.0.0.1:3000', `127.0.0.1:${stubPort}`)
          .replace('delay: 2s', 'delay: 0s'),
      )
      const env: NodeJS.ProcessEnv = { ...process.env, WAYPOST_CONFIG: config, STUB_PORT: String(stubPort) }
      delete env.WAYPOST_LISTEN
      delete env.WAYPOST_ADMIN
      // --ignore-scripts skips only prestart's build (the tests run on a fresh build); detached: npm
      // leads its own process group, as in a terminal.
      const npm = spawn(NPM[0]!, [...NPM.slice(1), 'start', '--ignore-scripts', '--silent'], { cwd: ROOT, env, stdio: 'ignore', detached: true })
      let tree: number[] = []
      t.teardown(() => {
        for (const pid of [npm.pid!, ...tree, ...descendants(npm.pid!)]) if (alive(pid)) process.kill(pid, 'SIGKILL')
      })

      let status = 0
      for (const deadline = Date.now() + 20_000; status !== 200 && Date.now() < deadline; ) {
        status = await request(`http://127.0.0.1:${proxyPort}/status/200`).then(
          async (response) => {
            await response.body.dump()
            return response.statusCode
          },
          () => 0,
        )
        if (status !== 200) await sleep(100)
      }
      t.equal(status, 200, 'the gateway serves through the stub')
      tree = descendants(npm.pid!)
      t.ok(tree.length >= 3, `npm's processes: start.js, the stub and the gateway (${tree.join(', ')})`)

      ending.end(npm.pid!, tree)
      const everyone = [npm.pid!, ...tree]
      for (const deadline = Date.now() + 15_000; everyone.some(alive) && Date.now() < deadline; ) await sleep(100)
      t.same(everyone.filter(alive), [], 'no process is left behind')
      for (const [what, port] of [['gateway', proxyPort], ['admin', adminPort], ['stub', stubPort]] as const) {
        t.ok(await refused(port), `the ${what} port refuses connections`)
        t.ok(await bindable(port), `the ${what} port can be bound again: the next start will not fail with EADDRINUSE`)
      }
    })
  }
})

t.test('a second npm start does not run tsc: prestart skips the build when dist/ is up to date', async (t) => {
  const build = fileURLToPath(new URL('../scripts/build.mjs', import.meta.url))
  // `npm test` has just built; run alone after an edit, this test brings dist/ up to date first.
  if (spawnSync(process.execPath, [build, '--check'], { cwd: ROOT }).status !== 0) t.equal(spawnSync(process.execPath, [build], { cwd: ROOT, stdio: 'ignore' }).status, 0, 'built')
  const [proxyPort, adminPort, stubPort] = await freePorts(3)
  const config = tempConfig(
    readFileSync(BUNDLED, 'utf8')
      .replaceAll('127.0.0.1:8080', `127.0.0.1:${proxyPort}`)
      .replaceAll('127.0.0.1:9901', `127.0.0.1:${adminPort}`)
      .replaceAll('127.0.0.1:3000', `127.0.0.1:${stubPort}`)
      .replace('delay: 2s', 'delay: 0s'),
  )
  const env: NodeJS.ProcessEnv = { ...process.env, WAYPOST_CONFIG: config, STUB_PORT: String(stubPort) }
  delete env.WAYPOST_LISTEN
  delete env.WAYPOST_ADMIN
  const started = Date.now()
  const npm = spawn(NPM[0]!, [...NPM.slice(1), 'start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let output = ''
  npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
  npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise((resolve) => npm.once('exit', resolve))
  t.teardown(() => {
    for (const pid of [npm.pid!, ...descendants(npm.pid!)]) if (alive(pid)) process.kill(pid, 'SIGKILL')
  })
  let status = 0
  for (const deadline = Date.now() + 20_000; status !== 200 && Date.now() < deadline; ) {
    status = await request(`http://127.0.0.1:${proxyPort}/status/200`).then(
      async (response) => {
        await response.body.dump()
        return response.statusCode
      },
      () => 0,
    )
    if (status !== 200) await sleep(100)
  }
  t.equal(status, 200, 'serving')
  t.match(output, 'build: dist/ is up to date, skipping tsc', 'prestart skipped tsc')
  t.notMatch(output, /> tsc|tsc -p/, 'tsc was not started')
  t.comment(`serving ${Date.now() - started} ms after npm start`)
  process.kill(npm.pid!, 'SIGINT')
  await exited
})
