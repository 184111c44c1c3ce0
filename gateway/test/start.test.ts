// README's first command, `npm start`: the stub and the gateway with the bundled policy, and Ctrl-C
// stops both (the gateway drains first). Run here on free ports, with the bundled file rewritten to them.
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
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
