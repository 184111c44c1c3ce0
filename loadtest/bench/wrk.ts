// Throughput runs: wrk (closed loop: CONNECTIONS connections, each sending its next request as soon
// as the previous answer arrives) pinned to the load CPUs; its text output parsed. Over https for the
// TLS configs: wrk does not check the certificate, and keeps its connections (one handshake each).
import { join } from 'node:path'
import { runToEnd } from '../lib/processes.js'
import { findTool } from '../lib/tools.js'

export interface WrkResult {
  requests: number
  seconds: number
  rps: number
  /** Closed-loop latencies under full load (informational: the fixed-rate run gives the real ones). */
  p50Ms: number
  p99Ms: number
  /** Non-2xx/3xx responses plus socket errors (connect, read, write, timeout). */
  errors: number
}

export interface WrkOptions {
  port: number
  seconds: number
  connections: number
  cpus: string
  logFile: string
  /** https instead of http. */
  tls?: boolean
  /** Sent with every request (a JWT config's Authorization). */
  headers?: Readonly<Record<string, string>>
}

export async function runWrk({ port, seconds, connections, cpus, logFile, tls = false, headers = {} }: WrkOptions): Promise<WrkResult> {
  const wrk = findTool('wrk') ?? 'wrk'
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...Object.entries(headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`]), `${tls ? 'https' : 'http'}://127.0.0.1:${port}/`]
  const { code, output } = await runToEnd('wrk', wrk, args, { cpus, logFile, timeoutMs: (seconds + 30) * 1000 })
  if (code !== 0) throw new Error(`wrk exited with ${code}:\n${output}`)
  return parseWrk(output)
}

/** `812.00us`, `1.23ms`, `1.01s`, `2.00m` -> milliseconds. */
export function toMs(token: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(token)
  if (match === null) return NaN
  const value = Number(match[1])
  switch (match[2]) {
    case 'us':
      return value / 1000
    case 'ms':
      return value
    case 's':
      return value * 1000
    default:
      return value * 60_000
  }
}

export function parseWrk(output: string): WrkResult {
  const requests = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)/m.exec(output)
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output)
  const percentile = (p: string): number => {
    const match = new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(output)
    return match === null ? NaN : toMs(match[1]!)
  }
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(output)
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
  const errors = Number(non2xx?.[1] ?? 0) + (socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0))
  if (requests === null || rps === null) throw new Error(`cannot parse wrk output:\n${output}`)
  return {
    requests: Number(requests[1]),
    seconds: toMs(`${requests[2]}${requests[3]}`) / 1000,
    rps: Number(rps[1]),
    p50Ms: percentile('50'),
    p99Ms: percentile('99'),
    errors,
  }
}

export const wrkLogFile = (runDir: string, label: string): string => join(runDir, `wrk-${label}.txt`)
