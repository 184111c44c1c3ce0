// `npm start`: the upstream stub on 127.0.0.1:3000 and the gateway in front of it with
// config/waypost.yaml (or WAYPOST_CONFIG). Ctrl-C, SIGTERM or SIGHUP (a closed terminal) drains the
// gateway first, then stops the stub, so requests in flight during the drain still reach their upstream.
//
// Nothing may outlive `npm start`, however it ends:
// - npm forwards SIGINT and SIGTERM to its script; the script is `exec node …`, so they reach this
//   process rather than a shell that would die and leave it behind;
// - npm dies of SIGHUP (and of SIGKILL) without telling anyone: this process notices its parent is
//   gone (its parent pid changes) and stops as if signalled;
// - when this process dies, even of SIGKILL, the children's IPC channel closes and they stop
//   themselves (`waypost run` and the stub both stop when a supervising parent's channel closes).
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { GATEWAY_NODE_FLAGS, withGatewayEnvironment } from '../src/core/node-flags.js'

const dist = (path: string): string => fileURLToPath(new URL(path, import.meta.url))

// Detached: a terminal's Ctrl-C reaches only this process, which then stops the children in order
// (otherwise the gateway would see Ctrl-C and our SIGTERM as two signals and skip its drain).
// The IPC channel is how a child learns that this process is gone.
const options = { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] as StdioOptions, detached: true }
const stub = spawn(process.execPath, [dist('../../upstream-stub/src/cli.js'), '--port', process.env.STUB_PORT ?? '3000'], options)
// The same V8 flags and environment as the `waypost` executable's shebang and the image (core/node-flags.ts).
const gateway = spawn(process.execPath, [...GATEWAY_NODE_FLAGS, dist('../../waypost/main.js'), 'run', ...process.argv.slice(2)], { ...options, env: withGatewayEnvironment(process.env) })

function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? 1)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)))
}

// A terminal's Ctrl-C reaches both npm and this process, and npm forwards it here again: signals
// this close together are one request. A later one means "now".
const REPEAT_WINDOW_MS = 1000
let firstStop: number | undefined
function stop(): void {
  const now = Date.now()
  if (firstStop === undefined) {
    firstStop = now
    gateway.kill('SIGTERM')
  } else if (now - firstStop > REPEAT_WINDOW_MS) {
    gateway.kill('SIGKILL')
  }
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
process.on('SIGHUP', stop)
process.on('exit', () => {
  for (const child of [gateway, stub]) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
})

// Our parent (npm, or the shell that ran us) is gone when our parent pid changes: we were adopted.
const parent = process.ppid
setInterval(() => {
  if (process.ppid !== parent) stop()
}, 200).unref()

const code = await Promise.race([exited(gateway), exited(stub)])
gateway.kill('SIGTERM')
await exited(gateway)
stub.kill('SIGTERM')
await exited(stub)
process.exit(code)
