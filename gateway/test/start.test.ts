// README's first command, `npm start`: the stub and the gateway with the bundled policy, and Ctrl-C
// stops both (the gateway drains first); killed outright, it leaves nothing behind; a second start
// does not rebuild. The signals npm and a terminal send are in start-signals.test.ts.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { GATEWAY_ENVIRONMENT, GATEWAY_NODE_FLAGS } from '../src/core/node-flags.js'
import { freePorts, sleep, tempConfig } from './helpers.js'
import { alive, BUNDLED, bundledOnFreePorts, descendants, endsCleanly, NPM, refused, ROOT, serving, START, type Ending } from './npm-start.js'

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
  // Unset, so that what the gateway gets is npm start's default (a caller's own would win).
  for (const name of Object.keys(GATEWAY_ENVIRONMENT)) delete env[name]
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
  // The gateway runs as deployed: the shebang's and the image's V8 flags and environment (core/node-flags.ts).
  const gateway = descendants(child.pid!).find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('waypost/main.js'))
  t.ok(gateway, 'the gateway is a child of npm start')
  if (gateway !== undefined) {
    t.same(readFileSync(`/proc/${gateway}/cmdline`, 'utf8').split('\0').filter((arg) => arg.startsWith('--')), [...GATEWAY_NODE_FLAGS], 'with the V8 flags')
    const environment = readFileSync(`/proc/${gateway}/environ`, 'utf8').split('\0')
    for (const [name, value] of Object.entries(GATEWAY_ENVIRONMENT)) t.ok(environment.includes(`${name}=${value}`), `with ${name}=${value}`)
  }

  child.kill('SIGINT')
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([exited, new Promise<string>((resolve) => (timer = setTimeout(resolve, 15_000, 'still running after 15 s')))])
  clearTimeout(timer)
  t.equal(code, 0, 'Ctrl-C: the gateway drains, then both stop, exit 0')
  t.ok(await refused(proxyPort), 'the gateway is gone')
  t.ok(await refused(stubPort), 'the stub is gone')
})

const kills: Ending[] = [
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

t.test('npm start killed outright leaves no process and no port behind', async (t) => {
  t.jobs = 3
  for (const ending of kills) t.test(ending.name, (t) => endsCleanly(t, ending))
})

t.test('a second npm start does not run tsc: prestart skips the build when dist/ is up to date', async (t) => {
  const build = fileURLToPath(new URL('../scripts/build.mjs', import.meta.url))
  // `npm test` has just built; run alone after an edit, this test brings dist/ up to date first.
  if (spawnSync(process.execPath, [build, '--check'], { cwd: ROOT }).status !== 0) t.equal(spawnSync(process.execPath, [build], { cwd: ROOT, stdio: 'ignore' }).status, 0, 'built')
  const { ports, env } = await bundledOnFreePorts()
  const started = Date.now()
  const npm = spawn(NPM[0]!, [...NPM.slice(1), 'start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let output = ''
  npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
  npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise((resolve) => npm.once('exit', resolve))
  t.teardown(() => {
    for (const pid of [npm.pid!, ...descendants(npm.pid!)]) if (alive(pid)) process.kill(pid, 'SIGKILL')
  })
  t.equal(await serving(ports.proxy), 200, 'serving')
  t.match(output, 'build: dist/ is up to date, skipping tsc', 'prestart skipped tsc')
  t.notMatch(output, /> tsc|tsc -p/, 'tsc was not started')
  t.comment(`serving ${Date.now() - started} ms after npm start`)
  process.kill(npm.pid!, 'SIGINT')
  await exited
})
