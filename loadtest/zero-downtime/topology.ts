// The processes of the scenario and how to reach them: the upstream stub (a CLI process, so it can be
// SIGKILLed), gateway processes (`waypost run`), HAProxy, and the admin/stats look-ups the steps use.
import { connect, createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { request } from 'undici'
import { findTool, startProcess, waitForLine, type Started } from './processes.js'
import { poll } from './util.js'

export const REPO = fileURLToPath(new URL('../../../', import.meta.url))
export const GATEWAY_MAIN = join(REPO, 'dist/gateway/src/main.js')
export const STUB_CLI = join(REPO, 'dist/upstream-stub/src/cli.js')

/** A port nothing listens on right now (bound to 127.0.0.1:0 and released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

// ---- the upstream stub --------------------------------------------------------------------------

export interface StubProcess {
  process: Started
  url: string
}

/** The stub CLI on 127.0.0.1:`port` (0 = ephemeral); resolves once it prints its listening line. */
export async function startStubProcess(logFile: string, port: number, timeoutMs = 10_000): Promise<StubProcess> {
  const started = startProcess('upstream-stub', process.execPath, [STUB_CLI, '--host', '127.0.0.1', '--port', String(port)], { logFile })
  const line = await waitForLine(started, (text) => text.startsWith('upstream-stub listening on '), timeoutMs)
  return { process: started, url: line.slice('upstream-stub listening on '.length).trim() }
}

// ---- gateways -------------------------------------------------------------------------------------

export interface GatewayProcess {
  name: string
  process: Started
  /** `127.0.0.1:PORT` as printed in the ready line. */
  listen: string
  admin: string
  readyAt: number
}

/**
 * `waypost run --config FILE` with the listen and admin addresses from the environment (`127.0.0.1:0`
 * for ephemeral ports); resolves once it prints `waypost ready`.
 */
export async function startGatewayProcess(name: string, configFile: string, logFile: string, listen: string, admin: string, timeoutMs = 15_000, nodeFlags: readonly string[] = []): Promise<GatewayProcess> {
  const started = startProcess(name, process.execPath, [...nodeFlags, GATEWAY_MAIN, 'run', '--config', configFile], {
    logFile,
    env: { ...process.env, WAYPOST_LISTEN: listen, WAYPOST_ADMIN: admin },
  })
  const line = await waitForLine(started, (text) => text.includes('"msg":"waypost ready"'), timeoutMs)
  const ready = JSON.parse(line) as { listen: string; admin: string }
  return { name, process: started, listen: ready.listen, admin: ready.admin, readyAt: started.startedAt }
}

export interface ConfigStatus {
  state: string
  active: { version: number; hash: string; source: string }
  lastError: { at: string; source: string; errors: string[] } | null
}

export async function configStatus(admin: string): Promise<ConfigStatus> {
  const response = await request(`http://${admin}/config`, { headersTimeout: 2000, bodyTimeout: 2000 })
  if (response.statusCode !== 200) {
    await response.body.dump()
    throw new Error(`GET /config: ${response.statusCode}`)
  }
  return (await response.body.json()) as ConfigStatus
}

export async function postReload(admin: string): Promise<{ status: number; body: unknown }> {
  const response = await request(`http://${admin}/reload`, { method: 'POST', headersTimeout: 5000, bodyTimeout: 5000 })
  return { status: response.statusCode, body: await response.body.json() }
}

export async function readyStatus(admin: string): Promise<number> {
  const response = await request(`http://${admin}/ready`, { headersTimeout: 1000, bodyTimeout: 1000 })
  await response.body.dump()
  return response.statusCode
}

// ---- HAProxy --------------------------------------------------------------------------------------

export function haproxyPath(): string {
  const path = findTool('haproxy')
  if (path === undefined) {
    throw new Error('haproxy not found (looked on PATH and in /usr/sbin)\n  install it (Debian/Ubuntu, as root): apt-get update && apt-get install -y haproxy')
  }
  return path
}

export async function startHaproxy(binary: string, configFile: string, logFile: string): Promise<Started> {
  const started = startProcess('haproxy', binary, ['-db', '-f', configFile], { logFile })
  return started
}

/** HAProxy's view of each server of `backend`: `UP`, `DOWN`, `MAINT`, `no check`... */
export async function haproxyServerStatus(statsPort: number, backend: string): Promise<Map<string, string>> {
  const response = await request(`http://127.0.0.1:${statsPort}/stats;csv`, { headersTimeout: 1000, bodyTimeout: 1000 })
  const text = await response.body.text()
  if (response.statusCode !== 200) throw new Error(`haproxy stats: ${response.statusCode}`)
  const lines = text.split('\n').filter((line) => line !== '')
  const header = lines[0]!.replace(/^# /, '').split(',')
  const px = header.indexOf('pxname')
  const sv = header.indexOf('svname')
  const status = header.indexOf('status')
  const result = new Map<string, string>()
  for (const line of lines.slice(1)) {
    const cells = line.split(',')
    if (cells[px] === backend && cells[sv] !== 'BACKEND' && cells[sv] !== 'FRONTEND') result.set(cells[sv]!, cells[status]!)
  }
  return result
}

/** Waits until HAProxy reports `server` of `backend` in `state` (UP or DOWN); returns when it did. */
export function waitHaproxyServer(statsPort: number, backend: string, server: string, state: 'UP' | 'DOWN', timeoutMs: number): Promise<true> {
  return poll(`haproxy: ${backend}/${server} ${state}`, timeoutMs, async () => {
    const status = (await haproxyServerStatus(statsPort, backend)).get(server) ?? ''
    // "UP 1/2" = going up, "DOWN 1/1" = going down: only the settled states count.
    return status === state ? true : undefined
  }, 20)
}

/** One command on HAProxy's admin socket (`show sess all`, `show servers conn`...); its answer. */
export function haproxyCommand(socket: string, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const client = connect(socket, () => client.end(`${command}\n`))
    client.setTimeout(timeoutMs, () => client.destroy(new Error(`haproxy ${command}: timed out`)))
    client.on('data', (chunk: Buffer) => chunks.push(chunk))
    client.once('error', reject)
    client.once('close', () => resolve(Buffer.concat(chunks).toString('utf8')))
  })
}

/** The gateway's Prometheus text from its admin /metrics. */
export async function gatewayMetrics(admin: string): Promise<string> {
  const response = await request(`http://${admin}/metrics`, { headersTimeout: 2000, bodyTimeout: 2000 })
  return response.body.text()
}

export interface HaproxySession {
  frontend: string
  server: string
  ageS: number
  requestState: string
  responseState: string
}

/** The client sessions of a `show sess all` answer (frontend, server, age, HTTP message states). */
export function parseSessions(text: string): HaproxySession[] {
  const sessions: HaproxySession[] = []
  for (const block of text.split(/\n(?=0x[0-9a-f]+: )/)) {
    const frontend = /frontend=(\S+)/.exec(block)?.[1]
    if (frontend === undefined || frontend === 'GLOBAL') continue
    const age = /age=(\d+)([smh]?)/.exec(block)
    const factor = age?.[2] === 'm' ? 60 : age?.[2] === 'h' ? 3600 : 1
    sessions.push({
      frontend,
      server: /server=(\S+)/.exec(block)?.[1] ?? '?',
      ageS: age === null ? 0 : Number(age[1]) * factor,
      requestState: /req\.st=(\S+)/.exec(block)?.[1] ?? '?',
      responseState: /rsp\.st=(\S+)/.exec(block)?.[1] ?? '?',
    })
  }
  return sessions
}

/** Sum of `waypost_requests_in_flight` over routes. */
export function inFlightFromMetrics(text: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const match = /^waypost_requests_in_flight\{[^}]*\} (\S+)$/.exec(line)
    if (match !== null) sum += Number(match[1])
  }
  return sum
}
