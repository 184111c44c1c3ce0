// `npm start`: the upstream stub on 127.0.0.1:3000 and the gateway in front of it with
// config/waypost.yaml (or WAYPOST_CONFIG). Ctrl-C (or SIGTERM) drains the gateway and stops both.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const dist = (path: string): string => fileURLToPath(new URL(path, import.meta.url))

const stub = spawn(process.execPath, [dist('../../upstream-stub/src/cli.js'), '--port', process.env.STUB_PORT ?? '3000'], { stdio: 'inherit' })
const gateway = spawn(process.execPath, [dist('../src/main.js'), 'run', ...process.argv.slice(2)], { stdio: 'inherit' })

let stopping = false
function stop(signal: NodeJS.Signals): void {
  if (stopping) return
  stopping = true
  gateway.kill(signal)
}
process.on('SIGINT', () => stop('SIGTERM'))
process.on('SIGTERM', () => stop('SIGTERM'))

function exited(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)))
}

const code = await Promise.race([exited(gateway), exited(stub)])
stub.kill('SIGTERM')
gateway.kill('SIGTERM')
process.exitCode = code
