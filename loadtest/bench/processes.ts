// Every process the benchmark starts goes through here: pinned with taskset, in its own process
// group (spawn `detached`), output to a log file. All of them are stopped, by process group, when
// the benchmark ends, fails or is interrupted (Ctrl-C, SIGTERM) -- and nothing else ever is.
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, openSync, closeSync, readFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { log, sleep } from './util.js'

export interface Started {
  readonly name: string
  /** Also the process group id (spawned detached = setsid). */
  readonly pid: number
  readonly child: ChildProcess
  readonly logFile: string
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>
}

const running = new Map<number, Started>()
let stopGraceMs = 5000

/** How long `stopAll` waits after SIGTERM before SIGKILL (the gateway drains, then writes any --cpu-prof). */
export function setStopGrace(ms: number): void {
  stopGraceMs = ms
}

export interface StartOptions {
  cpus: string
  logFile: string
  env?: NodeJS.ProcessEnv
  cwd?: string
}

/** Starts `command args` pinned to `cpus`, in a new process group, stdout+stderr to `logFile`. */
export function startPinned(name: string, command: string, args: readonly string[], options: StartOptions): Started {
  const fd = openSync(options.logFile, 'a')
  let child: ChildProcess
  try {
    // taskset execs the command, so the PID (and process group) is the command's own.
    child = spawn(tool('taskset'), ['-c', options.cpus, command, ...args], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: options.env ?? process.env,
      cwd: options.cwd,
    })
  } finally {
    closeSync(fd)
  }
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`)
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child.pid!)
      resolve(code ?? signal ?? 'unknown')
    })
    child.once('error', (error) => {
      running.delete(child.pid!)
      resolve(error.message)
    })
  })
  const started: Started = { name, pid: child.pid, child, logFile: options.logFile, exited }
  running.set(child.pid, started)
  return started
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal)
  } catch {
    // already gone
  }
}

/** SIGTERM to one group, SIGKILL after the grace period if it is still there. */
export async function stop(started: Started, graceMs = stopGraceMs): Promise<void> {
  if (!running.has(started.pid)) return
  killGroup(started.pid, 'SIGTERM')
  const timeout = sleep(graceMs).then(() => 'timeout' as const)
  if ((await Promise.race([started.exited, timeout])) === 'timeout') {
    log(`${started.name} (pid ${started.pid}) still running ${graceMs} ms after SIGTERM: SIGKILL`)
    killGroup(started.pid, 'SIGKILL')
    await started.exited
  }
  // Processes of the group that outlived its leader.
  killGroup(started.pid, 'SIGKILL')
}

/** Stops every group this process started, in parallel. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running.values()].map((started) => stop(started)))
}

let installed = false
/** Stop everything on exit, on an uncaught error, and on Ctrl-C / SIGTERM (exit 130 / 143). */
export function installCleanup(): void {
  if (installed) return
  installed = true
  // Last resort, synchronous: nothing can be awaited in an 'exit' handler.
  process.on('exit', () => {
    for (const pid of running.keys()) killGroup(pid, 'SIGKILL')
  })
  let interrupted = false
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(code) // a second Ctrl-C: the exit handler SIGKILLs the rest
      interrupted = true
      log(`${signal}: stopping ${running.size} process group(s)...`)
      stopAll().finally(() => process.exit(code))
    })
  }
}

/** Runs a pinned process to completion and returns its output (stdout + stderr, as written to its log). */
export async function runToEnd(name: string, command: string, args: readonly string[], options: StartOptions & { timeoutMs: number }): Promise<{ code: number | string; output: string }> {
  const started = startPinned(name, command, args, options)
  const timer = setTimeout(() => {
    log(`${name} did not finish within ${options.timeoutMs} ms: stopping it`)
    void stop(started, 1000)
  }, options.timeoutMs)
  const code = await started.exited
  clearTimeout(timer)
  return { code, output: readFileSync(options.logFile, 'utf8') }
}

/** One GET; resolves with the status and body length, or rejects. No keep-alive: no socket is left behind. */
export function httpGet(port: number, path = '/', timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

/** Waits until GET / on `port` answers 200 with a `bodyLength`-byte body; fails if the process exits first. */
export async function waitReady(started: Started, port: number, bodyLength = 1024, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (!running.has(started.pid)) {
      throw new Error(`${started.name} exited before it was ready; its log (${started.logFile}):\n${tail(started.logFile)}`)
    }
    try {
      const { status, body } = await httpGet(port, '/', 1000)
      if (status === 200 && Buffer.byteLength(body) === bodyLength) return
      last = `status ${status}, ${Buffer.byteLength(body)} bytes`
    } catch (error) {
      last = (error as Error).message
    }
    await sleep(100)
  }
  throw new Error(`${started.name} not ready on 127.0.0.1:${port} after ${timeoutMs} ms (last: ${last}); its log:\n${tail(started.logFile)}`)
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Resolves if nothing listens on 127.0.0.1:port, rejects otherwise. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

export async function checkPortsFree(ports: readonly number[]): Promise<void> {
  const busy: number[] = []
  for (const port of ports) if (!(await portFree(port))) busy.push(port)
  if (busy.length > 0) throw new Error(`ports already in use on 127.0.0.1: ${busy.join(', ')} (choose another base with PORT_BASE=... or --port-base)`)
}

const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin']

/** Absolute path of an executable on PATH (or in the sbin directories, where nginx lives), or undefined. */
export function findTool(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...SBIN]) {
    if (dir === '') continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

const resolved = new Map<string, string>()
function tool(name: string): string {
  let path = resolved.get(name)
  if (path === undefined) {
    path = findTool(name) ?? name
    resolved.set(name, path)
  }
  return path
}

const INSTALL_HINT: Record<string, string> = {
  wrk: 'wrk',
  nginx: 'nginx-light',
  taskset: 'util-linux',
  getconf: 'libc-bin',
}

/** Throws with an install command if any of the tools is missing; returns their paths. */
export function requireTools(names: readonly string[]): Record<string, string> {
  const paths: Record<string, string> = {}
  const missing: string[] = []
  for (const name of names) {
    const path = findTool(name)
    if (path === undefined) missing.push(name)
    else paths[name] = path
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((name) => INSTALL_HINT[name] ?? name))]
    throw new Error(
      `missing tool(s): ${missing.join(', ')}\n` +
        `  install them (Debian/Ubuntu, as root): apt-get update && apt-get install -y ${packages.join(' ')}\n` +
        `  (the full set the benchmark uses: apt-get install -y wrk nginx-light)`,
    )
  }
  return paths
}
