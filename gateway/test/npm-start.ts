// `npm start` as a person runs it, for start.test.ts and start-signals.test.ts: npm, then start.js
// (the script is `exec node …`), then the stub and the gateway, on free ports; and the checks that
// nothing of it is left behind however it ends.
import type { Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { sleep, tempConfig } from './helpers.js'

export const START = fileURLToPath(new URL('../../dist/gateway/scripts/start.js', import.meta.url))
export const BUNDLED = fileURLToPath(new URL('../../config/waypost.yaml', import.meta.url))
export const NPM: string[] = process.env.npm_execpath?.endsWith('.js') === true ? [process.execPath, process.env.npm_execpath] : ['npm']
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(false)
    })
    socket.once('error', () => resolve(true))
  })
}

export function descendants(root: number): number[] {
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
export function alive(pid: number): boolean {
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

export interface Ports {
  proxy: number
  admin: number
  stub: number
}

/** The first port of the kernel's ephemeral range: where listen(0) and outgoing connections take theirs. */
function ephemeralLow(): number {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  return Number.isInteger(low) && low > 20_000 ? low : 32_768
}

/**
 * Free ports below the ephemeral range. endsCleanly checks that the ports are free again once
 * `npm start` is killed: a port from the ephemeral range could meanwhile become another test's
 * listen(0) port or any connection's local port, and fail that check for nothing.
 */
async function portsOutsideEphemeralRange(count: number): Promise<number[]> {
  const high = ephemeralLow()
  const ports: number[] = []
  while (ports.length < count) {
    const port = 20_000 + Math.floor(Math.random() * (high - 20_000))
    if (!ports.includes(port) && (await bindable(port))) ports.push(port)
  }
  return ports
}

/** The bundled policy on free ports, without the drain delay; the environment `npm start` reads it from. */
export async function bundledOnFreePorts(): Promise<{ ports: Ports; env: NodeJS.ProcessEnv }> {
  const [proxy, admin, stub] = (await portsOutsideEphemeralRange(3)) as [number, number, number]
  const bundled = readFileSync(BUNDLED, 'utf8')
  const config = tempConfig(
    bundled
      .replaceAll('127.0.0.1:8080', `127.0.0.1:${proxy}`)
      .replaceAll('127.0.0.1:9901', `127.0.0.1:${admin}`)
      .replaceAll('127.0.0.1:3000', `127.0.0.1:${stub}`)
      .replace('delay: 2s', 'delay: 0s'),
  )
  // Settings from the caller's environment must not override the file.
  const env: NodeJS.ProcessEnv = { ...process.env, WAYPOST_CONFIG: config, STUB_PORT: String(stub) }
  delete env.WAYPOST_LISTEN
  delete env.WAYPOST_ADMIN
  return { ports: { proxy, admin, stub }, env }
}

/** The status of GET /status/200 through the gateway, once it answers (0 if it never does). */
export async function serving(port: number, timeoutMs = 30_000): Promise<number> {
  let status = 0
  for (const deadline = Date.now() + timeoutMs; status !== 200 && Date.now() < deadline; ) {
    status = await request(`http://127.0.0.1:${port}/status/200`).then(
      async (response) => {
        await response.body.dump()
        return response.statusCode
      },
      () => 0,
    )
    if (status !== 200) await sleep(100)
  }
  return status
}

/** How `npm start` is ended: `npm` is npm's pid, also its process group's id; `tree` its descendants. */
export interface Ending {
  name: string
  end(npm: number, tree: number[]): void
}

/** Starts `npm start`, ends it as `ending` says, and checks that no process and no port is left. */
export async function endsCleanly(t: Test, ending: Ending): Promise<void> {
  const { ports, env } = await bundledOnFreePorts()
  // --ignore-scripts skips only prestart's build (the tests run on a fresh build); detached: npm
  // leads its own process group, as in a terminal.
  const npm = spawn(NPM[0]!, [...NPM.slice(1), 'start', '--ignore-scripts', '--silent'], { cwd: ROOT, env, stdio: 'ignore', detached: true })
  let tree: number[] = []
  t.teardown(() => {
    for (const pid of [npm.pid!, ...tree, ...descendants(npm.pid!)]) if (alive(pid)) process.kill(pid, 'SIGKILL')
  })
  t.equal(await serving(ports.proxy), 200, 'the gateway serves through the stub')
  tree = descendants(npm.pid!)
  t.ok(tree.length >= 3, `npm's processes: start.js, the stub and the gateway (${tree.join(', ')})`)

  ending.end(npm.pid!, tree)
  const everyone = [npm.pid!, ...tree]
  for (const deadline = Date.now() + 20_000; everyone.some(alive) && Date.now() < deadline; ) await sleep(100)
  t.same(everyone.filter(alive), [], 'no process is left behind')
  for (const [what, port] of [['gateway', ports.proxy], ['admin', ports.admin], ['stub', ports.stub]] as const) {
    t.ok(await refused(port), `the ${what} port refuses connections`)
    t.ok(await bindable(port), `the ${what} port can be bound again: the next start will not fail with EADDRINUSE`)
  }
}
