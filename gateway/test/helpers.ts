// Test harness: real gateways (in-process or as a child process) on ephemeral loopback ports,
// in front of the real upstream stub. Everything started here is closed by the caller's teardown.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { request } from 'undici'
import YAML from 'yaml'
import { Gateway } from '../src/server/gateway.js'
import { loggerOptions } from '../src/telemetry/logger.js'
import { LogRedaction } from '../src/telemetry/redaction.js'

/** The gateway as it ships: the bundle (gateway/scripts/build.mjs), not tsc's files it is built from. */
export const MAIN = fileURLToPath(new URL('../../dist/waypost/main.js', import.meta.url))

export interface CatchAllOptions {
  /** The route's `policies:` section. */
  policies?: Record<string, unknown>
  /** `defaults.policies`, which the route's sections merge over. */
  defaults?: Record<string, unknown>
  /** More upstreams beside `app` (a breaker's fallback). */
  upstreams?: Record<string, unknown>
  /** The catch-all route's path prefix (default `/`). */
  prefix?: string
  /** More fields of the catch-all route (`rewrite`, ...). */
  route?: Record<string, unknown>
  /** Drain settings (default no delay, 5s timeout). */
  drain?: { delay?: string; timeout?: string }
  /** More `listen` fields (trustedProxies, ...). */
  listen?: Record<string, unknown>
  /** More top-level sections (`redis`, ...); `routes` here are appended after the catch-all. */
  extra?: Record<string, unknown>
  accessLog?: boolean
}

/**
 * A minimal valid config, written with YAML.stringify (no indentation to get wrong): one catch-all
 * route `all` to the upstream `app` (a URL, or its whole section), ephemeral ports, no drain delay.
 */
export function catchAllConfig(upstream: string | Record<string, unknown>, options: CatchAllOptions = {}): string {
  const { routes: extraRoutes, ...extra } = options.extra ?? {}
  const config = {
    ...(options.accessLog === false ? { log: { access: false } } : {}),
    listen: { address: '127.0.0.1:0', ...options.listen },
    admin: { address: '127.0.0.1:0' },
    drain: { delay: '0s', timeout: '5s', ...options.drain },
    upstreams: { app: typeof upstream === 'string' ? { url: upstream } : upstream, ...options.upstreams },
    ...(options.defaults === undefined ? {} : { defaults: { policies: options.defaults } }),
    routes: [
      { name: 'all', match: { path: { prefix: options.prefix ?? '/' } }, upstream: 'app', ...options.route, ...(options.policies === undefined ? {} : { policies: options.policies }) },
      ...((extraRoutes as unknown[] | undefined) ?? []),
    ],
    ...extra,
  }
  return YAML.stringify(config)
}

/** Writes the policy file (and any `beside` files, by name, into its folder) to a fresh temporary folder. */
export function tempConfig(text: string, name = 'waypost.yaml', beside: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-test-'))
  const file = join(dir, name)
  writeFileSync(file, text)
  for (const [other, content] of Object.entries(beside)) writeFileSync(join(dir, other), content)
  return file
}

export interface LogLine {
  msg: string
  level: number
  [field: string]: unknown
}

export interface RunningGateway {
  readonly gateway: Gateway
  /** http://HOST:PORT, or https:// when the config has listen.tls. */
  readonly url: string
  readonly adminUrl: string
  readonly configFile: string
  readonly logs: LogLine[]
  /** The access-log lines so far (flushing the access log's batch first). */
  accessLines(): LogLine[]
  close(): Promise<void>
}

/** An in-process gateway; its log lines are collected in `logs`. */
export async function startGateway(configText: string, options: { watch?: boolean; environment?: NodeJS.ProcessEnv; beside?: Record<string, string> } = {}): Promise<RunningGateway> {
  const configFile = tempConfig(configText, 'waypost.yaml', options.beside)
  const logs: LogLine[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as LogLine)
      callback()
    },
  })
  // As main.ts makes it: every line goes through the redaction hook.
  const redaction = new LogRedaction()
  const log = pino(loggerOptions('debug', redaction), sink)
  // OTEL_* variables for this gateway only; by default none, whatever the test process's environment holds.
  const gateway = new Gateway({ configFile, log, watch: options.watch ?? false, environment: options.environment ?? {}, redaction })
  await gateway.start()
  return {
    gateway,
    url: `${gateway.tlsStatus === null ? 'http' : 'https'}://${gateway.address('proxy')}`,
    adminUrl: `http://${gateway.address('admin')}`,
    configFile,
    logs,
    accessLines: () => {
      gateway.accessLog.flush()
      return logs.filter((line) => line.msg === 'access')
    },
    close: async () => {
      // Tests close without the drain delay dance: the config sets delay 0s.
      await gateway.shutdown()
    },
  }
}

export interface GatewayProcess {
  readonly child: ChildProcess
  readonly url: string
  readonly adminUrl: string
  readonly pid: number
  /** Every stdout line, parsed when it is JSON. */
  readonly lines: LogLine[]
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Everything written to stderr so far. */
  stderr(): string
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  stop(): Promise<void>
}

/** The real `waypost run` as a child process (needs `npm run build` first; `npm test` does it). */
export async function spawnGateway(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<GatewayProcess> {
  const child = spawn(process.execPath, [MAIN, 'run', '--config', configFile], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  // If the test process dies first, its gateway must not outlive it.
  const killOnExit = (): void => void child.kill('SIGKILL')
  process.once('exit', killOnExit)
  child.once('exit', () => process.off('exit', killOnExit))
  const lines: LogLine[] = []
  const watchers: Array<() => void> = []
  let buffered = ''
  // Decoded across chunks: a chunk may end inside a character of a line.
  child.stdout!.setEncoding('utf8')
  child.stdout!.on('data', (chunk: string) => {
    buffered += chunk
    let newline
    while ((newline = buffered.indexOf('\n')) !== -1) {
      const text = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      try {
        lines.push(JSON.parse(text) as LogLine)
      } catch {
        lines.push({ msg: text, level: 0 })
      }
      for (const watcher of watchers.slice()) watcher()
    }
  })
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
  const waitForLog = (predicate: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const found = lines.find(predicate)
      if (found !== undefined) return resolve(found)
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for a log line; stderr: ${stderr}; last lines: ${JSON.stringify(lines.slice(-5))}`))
      }, timeoutMs)
      const check = (): void => {
        const line = lines.find(predicate)
        if (line !== undefined) {
          cleanup()
          resolve(line)
        }
      }
      const cleanup = (): void => {
        clearTimeout(timer)
        const index = watchers.indexOf(check)
        if (index !== -1) watchers.splice(index, 1)
      }
      watchers.push(check)
      void exited.then(() => {
        if (watchers.includes(check)) {
          cleanup()
          reject(new Error(`gateway exited; stderr: ${stderr}; last lines: ${JSON.stringify(lines.slice(-5))}`))
        }
      })
    })
  let ready: LogLine
  try {
    // Generous, like waypost(): a start takes seconds when other test runs share the 2 cores.
    ready = await waitForLog((line) => line.msg === 'waypost ready', 30_000)
  } catch (error) {
    // Never leave a gateway behind when it fails to start: the caller has no handle to stop it.
    child.kill('SIGKILL')
    throw error
  }
  return {
    child,
    pid: child.pid!,
    url: `${ready.tls === true ? 'https' : 'http'}://${String(ready.listen)}`,
    adminUrl: `http://${String(ready.admin)}`,
    lines,
    exited,
    stderr: () => stderr,
    waitForLog,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    },
  }
}

export interface CommandResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the built `waypost` command to its exit, with `input` on its stdin; tests run several at once. */
export function waypost(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    // Generous: a node start takes seconds when the machine's 2 cores are shared with other test runs.
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    child.stdin.end(options.input ?? '')
  })
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** The gateway's admin /metrics text (Prometheus format). */
export async function metricsText(gw: { readonly adminUrl: string }): Promise<string> {
  return (await request(`${gw.adminUrl}/metrics`)).body.text()
}

/**
 * Loopback ports free a moment ago, for processes that take fixed ports. All are held until every
 * one is known, so they differ; once let go, the OS may still hand one out again.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createNetServer())
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))))
  const ports = servers.map((server) => (server.address() as AddressInfo).port)
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!
}

/** Whether a command is installed; `.ci/run` installs Debian's prometheus package, so CI requires it. */
export function commandInstalled(command: string): boolean {
  const found = spawnSync(command, ['--version']).status === 0
  if (!found && process.env.WAYPOST_REQUIRE_PROMETHEUS === '1') throw new Error(`${command} is not installed (apt-get install prometheus)`)
  return found
}

/** `promtool check metrics` over a scrape: its exit code and everything it printed (nothing when the scrape is clean). */
export function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, output }))
    child.stdin.end(text)
  })
}
