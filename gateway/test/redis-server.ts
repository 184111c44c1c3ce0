// A real redis-server (Debian package redis-server) on a free loopback port, for tests of state
// shared across replicas. No persistence: a restart starts empty, like a failed-over cache node.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { connect } from 'node:net'
import { freePort } from './helpers.js'

export interface RedisServer {
  readonly port: number
  readonly url: string
  stop(): Promise<void>
  start(): Promise<void>
}

/** Whether redis-server is installed; `.ci/run` installs it, so CI requires it (WAYPOST_REQUIRE_REDIS=1). */
export function redisAvailable(): boolean {
  const found = spawnSync('redis-server', ['--version']).status === 0
  if (!found && process.env.WAYPOST_REQUIRE_REDIS === '1') throw new Error('redis-server is not installed (apt-get install redis-server)')
  return found
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (open) return
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port} within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort()
  let child: ChildProcess | undefined
  const killOnExit = (): void => void child?.kill('SIGKILL')
  process.once('exit', killOnExit)
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'], { stdio: 'ignore' })
      await waitForPort(port, 5000)
    },
    async stop() {
      const running = child
      child = undefined
      if (running === undefined || running.exitCode !== null) return
      const exited = new Promise((resolve) => running.once('exit', resolve))
      running.kill('SIGKILL')
      await exited
    },
  }
  await server.start()
  return server
}
