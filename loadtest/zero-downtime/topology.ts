// How the scenario reaches its processes (the stub and the gateways start through lib/): the
// gateways' admin API, and HAProxy with its stats and CLI socket.
import { connect } from 'node:net'
import { request } from 'undici'
import { startProcess, type Started } from '../lib/processes.js'
import { findTool } from '../lib/tools.js'
import { poll } from './util.js'

// ---- the gateways' admin ------------------------------------------------------------------------

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
