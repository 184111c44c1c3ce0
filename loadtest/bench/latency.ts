// Fixed-rate latency runs: starts fixed-rate.js (the open-loop generator) pinned to the load CPUs
// as a process of its own, and reads the JSON line it prints; the same for handshakes.js (new TLS
// connections per second).
import { fileURLToPath } from 'node:url'
import { runToEnd } from '../lib/processes.js'
import type { FixedRateResult } from './fixed-rate.js'
import type { HandshakeResult } from './handshakes.js'

const GENERATOR = fileURLToPath(new URL('./fixed-rate.js', import.meta.url))
const HANDSHAKES = fileURLToPath(new URL('./handshakes.js', import.meta.url))

export interface FixedRateOptions {
  port: number
  rate: number
  seconds: number
  /** Sent at the same rate before the measured window, not recorded (connections, JIT). */
  warmupSeconds: number
  connections: number
  /** Sleep on timers between sends instead of polling: ~1 ms of send lag, but little CPU (long runs). */
  timerOnly?: boolean
  cpus: string
  logFile: string
  /** https, accepting the benchmark's self-signed certificate. */
  tls?: boolean
  /** Sent with every request (a JWT config's Authorization). */
  headers?: Readonly<Record<string, string>>
}

export type { FixedRateResult, HandshakeResult }

/** Runs handshakes.js (new TLS connections, one request each) pinned to the load CPUs; reads its JSON line. */
export async function runHandshakes(options: { port: number; seconds: number; connections: number; cpus: string; logFile: string }): Promise<HandshakeResult> {
  const args = [HANDSHAKES, '--port', String(options.port), '--duration', String(options.seconds), '--connections', String(options.connections)]
  const { code, output } = await runToEnd('handshakes', process.execPath, args, { cpus: options.cpus, logFile: options.logFile, timeoutMs: (options.seconds + 30) * 1000 })
  const line = output.trimEnd().split('\n').findLast((text) => text.startsWith('{'))
  if (code !== 0 || line === undefined) throw new Error(`handshake generator exited with ${code}:\n${output}`)
  return JSON.parse(line) as HandshakeResult
}

export async function runFixedRate(options: FixedRateOptions): Promise<FixedRateResult> {
  const args = [
    GENERATOR,
    '--url', `${options.tls === true ? 'https' : 'http'}://127.0.0.1:${options.port}/`,
    '--rate', String(options.rate),
    '--duration', String(options.seconds),
    '--warmup', String(options.warmupSeconds),
    '--connections', String(options.connections),
    ...(options.timerOnly === true ? ['--timer-only'] : []),
    ...(options.tls === true ? ['--insecure'] : []),
    ...Object.entries(options.headers ?? {}).flatMap(([name, value]) => ['--header', `${name}: ${value}`]),
  ]
  const timeoutMs = (options.seconds + options.warmupSeconds + 30) * 1000
  const { code, output } = await runToEnd('fixed-rate', process.execPath, args, { cpus: options.cpus, logFile: options.logFile, timeoutMs })
  const line = output.trimEnd().split('\n').findLast((text) => text.startsWith('{'))
  if (code !== 0 || line === undefined) throw new Error(`fixed-rate generator exited with ${code}:\n${output}`)
  return JSON.parse(line) as FixedRateResult
}
