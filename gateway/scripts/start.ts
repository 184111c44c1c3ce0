// `npm start`: the upstream stub on 127.0.0.1:3000 and the gateway in front of it with
// config/waypost.yaml (or WAYPOST_CONFIG). Ctrl-C or SIGTERM drains the gateway first, then stops
// the stub, so requests in flight during the drain still reach their upstream.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const dist = (path: string): string => fileURLToPath(new URL(path, import.meta.url))

// Detached: a terminal's Ctrl-C reaches only this process, which then stops the children in order
// (otherwise the gateway would see Ctrl-C and our SIGTERM as two signals and skip its drain).
const options = { stdio: 'inherit', detached: true } as const
const stub = spawn(process.execPath, [dist('../../upstream-stub/src/cli.js'), '--port', process.env.STUB_PORT ?? '3000'], options)
// The same V8 flag as the `waypost` executable's shebang: a smaller young generation keeps RSS under 100 MiB under load.
const gateway = spawn(process.execPath, ['--max-semi-space-size=4', dist('../src/main.js'), 'run', ...process.argv.slice(2)], options)

function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)))
}

let signals = 0
function stop(): void {
  signals++
  gateway.kill(signals === 1 ? 'SIGTERM' : 'SIGKILL')
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
process.on('exit', () => {
  for (const child of [gateway, stub]) if (child.exitCode === null) child.kill('SIGKILL')
})

const code = await Promise.race([exited(gateway), exited(stub)])
gateway.kill('SIGTERM')
await exited(gateway)
stub.kill('SIGTERM')
await exited(stub)
process.exit(code)
