// Running the commands in config/examples/*.yaml headers as a person would: the file's ports swapped
// for free ones, each header command taken from the file as written and run with sh and curl.
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePorts, spawnGateway, tempConfig, type GatewayProcess } from './helpers.js'

export const STUB_CLI = fileURLToPath(new URL('../../dist/upstream-stub/src/cli.js', import.meta.url))
export const example = (name: string): string => readFileSync(fileURLToPath(new URL(`../../config/examples/${name}`, import.meta.url)), 'utf8')

/** Whether curl can be run here (the headers' commands are curl lines). */
export const hasCurl = spawnSync('curl', ['--version']).status === 0

export interface Ports {
  proxy: number
  admin: number
  /** What the file calls 127.0.0.1:3000 (npm start's stub) and 127.0.0.1:3001. */
  stub: number
  stub2: number
}

/** The example with its ports moved: the gateway's, the admin's and the stubs'. */
export function withPorts(text: string, ports: Ports): string {
  return text
    .replaceAll('127.0.0.1:8080', `127.0.0.1:${ports.proxy}`)
    .replaceAll('127.0.0.1:9901', `127.0.0.1:${ports.admin}`)
    .replaceAll('127.0.0.1:3000', `127.0.0.1:${ports.stub}`)
    .replaceAll('127.0.0.1:3001', `127.0.0.1:${ports.stub2}`)
}

/** The header's line that starts with `start` (after `#   `), as written: the test fails when the header no longer says it. */
export function headerCommand(text: string, start: string): string {
  const line = text.split('\n').find((each) => each.startsWith(`#   ${start}`))
  if (line === undefined) throw new Error(`the header has no command starting with ${start}`)
  return line.slice('#   '.length).replace(/\s{2,}#\s.*$/, '') // without a trailing comment
}

/** Runs a header command with sh, pointed at this test's ports. */
export function sh(command: string, ports: Ports, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const local = command.replaceAll('localhost:8080', `localhost:${ports.proxy}`).replaceAll('localhost:9901', `localhost:${ports.admin}`)
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', local], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

export async function ports(): Promise<Ports> {
  const [proxy, admin, stub, stub2] = (await freePorts(4)) as [number, number, number, number]
  return { proxy, admin, stub, stub2 }
}

/** The gateway with the example, as `WAYPOST_CONFIG=config/examples/NAME npm start` runs it; stopped at `teardown`. */
export async function gatewayFor(text: string, teardown: (fn: () => Promise<void>) => void): Promise<GatewayProcess> {
  const gateway = await spawnGateway(tempConfig(text), { WAYPOST_LOG_LEVEL: 'info' })
  teardown(() => gateway.stop())
  return gateway
}

