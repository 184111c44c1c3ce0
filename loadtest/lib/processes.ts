// Every process a load test starts goes through here: each in its own process group (spawn
// `detached` = setsid, so a Ctrl-C in the terminal reaches only us), optionally pinned to CPUs with
// taskset, stdout+stderr appended to a log file. Whatever is still running is stopped, by process
// group, when the run ends, fails or is interrupted (SIGINT, SIGTERM, SIGHUP) -- and nothing this
// module did not start is ever signalled.
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { httpGet } from './http.js'
import { log, now, sleep } from './log.js'
import { findTool } from './tools.js'

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  /** Why it could not be started (spawn's 'error'), if that is how it ended. */
  error?: string
  /** performance.now() when the exit was seen. */
  at: number
}

/** The exit as one value: the code, else the signal, else the spawn error. */
export function exitStatus(exit: Exit): number | string {
  return exit.code ?? exit.signal ?? exit.error ?? 'unknown'
}

export interface Started {
  readonly name: string
  /** Also the process group id. */
  readonly pid: number
  readonly child: ChildProcess
  readonly logFile: string
  readonly startedAt: number
  readonly exited: Promise<Exit>
  /** Set once the process has exited. */
  exit: Exit | undefined
}

const running = new Map<number, Started>()

let tasksetPath: string | undefined
/** Looked up once: the benchmarks spawn inside their CPU measurements. */
function taskset(): string {
  tasksetPath ??= findTool('taskset') ?? 'taskset'
  return tasksetPath
}

export interface StartOptions {
  logFile: string
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** A `taskset -c` CPU list to pin the process to (the benchmarks keep load and servers apart). */
  cpus?: string
}

/** Starts `command args` in a new process group with stdout and stderr appended to `logFile`. */
export function startProcess(name: string, command: string, args: readonly string[], options: StartOptions): Started {
  // taskset execs the command, so the PID (and process group) is the command's own.
  const [file, argv] = options.cpus === undefined ? [command, args] : [taskset(), ['-c', options.cpus, command, ...args]]
  const fd = openSync(options.logFile, 'a')
  let child: ChildProcess
  try {
    child = spawn(file, argv, { detached: true, stdio: ['ignore', fd, fd], env: options.env ?? process.env, cwd: options.cwd })
  } finally {
    closeSync(fd)
  }
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`)
  const pid = child.pid
  let resolveExit: (exit: Exit) => void = () => {}
  const exited = new Promise<Exit>((resolve) => (resolveExit = resolve))
  const started: Started = { name, pid, child, logFile: options.logFile, startedAt: now(), exited, exit: undefined }
  const onExit = (exit: Exit): void => {
    if (started.exit !== undefined) return
    started.exit = exit
    running.delete(pid)
    resolveExit(exit)
  }
  child.once('exit', (code, signal) => onExit({ code, signal, at: now() }))
  child.once('error', (error) => {
    log(`${name}: ${error.message}`)
    onExit({ code: null, signal: null, error: error.message, at: now() })
  })
  running.set(pid, started)
  return started
}

export function isRunning(started: Started): boolean {
  return started.exit === undefined
}

/** Sends `signal` to the process group of `started` (no-op once it has exited). */
export function signalGroup(started: Started, signal: NodeJS.Signals): void {
  if (started.exit !== undefined) return
  try {
    process.kill(-started.pid, signal)
  } catch {
    // already gone
  }
}

/** Sends `signal` to the process itself only (SIGHUP to a gateway). */
export function signalProcess(started: Started, signal: NodeJS.Signals): void {
  if (started.exit !== undefined) return
  try {
    process.kill(started.pid, signal)
  } catch {
    // already gone
  }
}

let stopGraceMs = 15_000

/**
 * How long a stop waits after SIGTERM before SIGKILL, unless told otherwise: long enough for a
 * gateway to drain (and to write a --cpu-prof after it).
 */
export function setStopGrace(ms: number): void {
  stopGraceMs = ms
}

/** SIGTERM to the group, SIGKILL after `graceMs` if it is still there; then SIGKILL any straggler of the group. */
export async function stopProcess(started: Started, graceMs = stopGraceMs): Promise<Exit> {
  if (started.exit === undefined) {
    signalGroup(started, 'SIGTERM')
    const timedOut = await Promise.race([started.exited.then(() => false), sleep(graceMs).then(() => true)])
    if (timedOut) {
      log(`${started.name} (pid ${started.pid}) still running ${graceMs} ms after SIGTERM: SIGKILL`)
      signalGroup(started, 'SIGKILL')
    }
  }
  const exit = await started.exited
  killStragglers(started.pid)
  return exit
}

/** The group leader has exited; whatever else is left in its group is killed. */
function killStragglers(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL')
  } catch {
    // none left: the usual case
  }
}

/** Stops every process group this process started, in parallel. */
export async function stopAll(graceMs = stopGraceMs): Promise<void> {
  await Promise.all([...running.values()].map((started) => stopProcess(started, graceMs)))
}

let interruptHook: (() => Promise<void>) | undefined
let interrupted = false

/** Runs first when the run is interrupted (e.g. to stop the load and print what was measured). */
export function onInterrupt(hook: () => Promise<void>): void {
  interruptHook = hook
}

/** Whether a signal is stopping the run: errors from then on are its doing, and its handler exits. */
export function isInterrupted(): boolean {
  return interrupted
}

let installed = false
/**
 * Stop everything on exit, on an uncaught error, and on Ctrl-C / SIGTERM / SIGHUP (exit 130 / 143
 * / 129). On a signal, the interrupt hook runs first, then every group gets `graceMs` (default: the
 * stop grace) after SIGTERM; a second signal exits at once.
 */
export function installCleanup(graceMs?: number): void {
  if (installed) return
  installed = true
  // Last resort, synchronous: nothing can be awaited in an 'exit' handler.
  process.on('exit', () => {
    for (const started of running.values()) {
      try {
        process.kill(-started.pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  })
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(code)
      interrupted = true
      log(`${signal}: stopping ${running.size} process group(s)...`)
      const grace = graceMs ?? stopGraceMs
      const before = interruptHook?.().catch(() => undefined) ?? Promise.resolve()
      // Bounded: whatever hangs, exit soon after the grace period.
      setTimeout(() => process.exit(code), Math.max(20_000, grace + 5000)).unref()
      void before.then(() => stopAll(grace)).finally(() => process.exit(code))
    })
  }
  process.on('uncaughtException', (error) => {
    console.error(error)
    void stopAll(graceMs).finally(() => process.exit(1))
  })
}

/** Runs a process to completion and returns its status and output (stdout + stderr, as written to its log). */
export async function runToEnd(name: string, command: string, args: readonly string[], options: StartOptions & { timeoutMs: number }): Promise<{ code: number | string; output: string }> {
  const started = startProcess(name, command, args, options)
  const timer = setTimeout(() => {
    log(`${name} did not finish within ${options.timeoutMs} ms: stopping it`)
    void stopProcess(started, 1000)
  }, options.timeoutMs)
  const exit = await started.exited
  clearTimeout(timer)
  return { code: exitStatus(exit), output: readFileSync(options.logFile, 'utf8') }
}

/** The lines of a log file (empty when it does not exist yet). */
export function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n')
  } catch {
    return []
  }
}

/** The last lines of a log file, indented, for an error message. */
export function tail(file: string, lines = 15): string {
  return readLines(file)
    .filter((line) => line !== '')
    .slice(-lines)
    .map((line) => `    ${line}`)
    .join('\n')
}

/** Waits until a line of the process's log matches; fails if the process exits first or after `timeoutMs`. */
export async function waitForLine(started: Started, match: (line: string) => boolean, timeoutMs: number): Promise<string> {
  const deadline = now() + timeoutMs
  for (;;) {
    const found = readLines(started.logFile).find(match)
    if (found !== undefined) return found
    if (started.exit !== undefined) {
      throw new Error(`${started.name} exited (code ${started.exit.code}, signal ${started.exit.signal}) before it was ready; ${started.logFile}:\n${tail(started.logFile)}`)
    }
    if (now() > deadline) throw new Error(`${started.name} not ready within ${timeoutMs} ms; ${started.logFile}:\n${tail(started.logFile)}`)
    await sleep(20)
  }
}

/** Waits until GET / on `port` (over TLS with `tls`) answers 200 with a `bodyLength`-byte body; fails if the process exits first. */
export async function waitForBody(started: Started, port: number, bodyLength: number, timeoutMs = 15_000, tls = false, headers: Record<string, string> = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (started.exit !== undefined) {
      throw new Error(`${started.name} exited before it was ready; its log (${started.logFile}):\n${tail(started.logFile, 20)}`)
    }
    try {
      const { status, body } = await httpGet(port, '/', 1000, tls, headers)
      if (status === 200 && Buffer.byteLength(body) === bodyLength) return
      last = `status ${status}, ${Buffer.byteLength(body)} bytes`
    } catch (error) {
      last = (error as Error).message
    }
    await sleep(100)
  }
  throw new Error(`${started.name} not ready on 127.0.0.1:${port} after ${timeoutMs} ms (last: ${last}); its log:\n${tail(started.logFile, 20)}`)
}
