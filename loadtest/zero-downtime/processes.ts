// Every process the scenarios start goes through here: each in its own process group (spawn
// `detached` = setsid, so a Ctrl-C in the terminal reaches only us), stdout+stderr appended to a
// log file. Whatever is still running is stopped, by process group, when the run ends, fails or is
// interrupted (SIGINT, SIGTERM, SIGHUP) -- and nothing this module did not start is ever signalled.
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { log, now, sleep } from './util.js'

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  /** performance.now() when the exit was seen. */
  at: number
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

export interface StartOptions {
  logFile: string
  env?: NodeJS.ProcessEnv
  cwd?: string
}

/** Starts `command args` in a new process group with stdout and stderr appended to `logFile`. */
export function startProcess(name: string, command: string, args: readonly string[], options: StartOptions): Started {
  const fd = openSync(options.logFile, 'a')
  let child: ChildProcess
  try {
    child = spawn(command, args, { detached: true, stdio: ['ignore', fd, fd], env: options.env ?? process.env, cwd: options.cwd })
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
    onExit({ code: null, signal: null, at: now() })
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

/** SIGTERM to the group, SIGKILL after `graceMs` if it is still there; then SIGKILL any straggler of the group. */
export async function stopProcess(started: Started, graceMs = 15_000): Promise<Exit> {
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
export async function stopAll(graceMs = 15_000): Promise<void> {
  await Promise.all([...running.values()].map((started) => stopProcess(started, graceMs)))
}

let installed = false
/**
 * Stop everything on exit, on an uncaught error, and on Ctrl-C / SIGTERM / SIGHUP. `onInterrupt`
 * runs first (e.g. to stop the load and print what was measured); a second signal exits at once.
 */
export function installCleanup(onInterrupt?: () => Promise<void>): void {
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
  let interrupted = false
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(code)
      interrupted = true
      log(`${signal}: stopping ${running.size} process group(s)...`)
      const before = onInterrupt?.().catch(() => undefined) ?? Promise.resolve()
      // Bounded: whatever happens, exit within 20 s.
      setTimeout(() => process.exit(code), 20_000).unref()
      void before.then(() => stopAll(3000)).finally(() => process.exit(code))
    })
  }
  process.on('uncaughtException', (error) => {
    console.error(error)
    void stopAll(3000).finally(() => process.exit(1))
  })
}

/** The lines of a log file (empty when it does not exist yet). */
export function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n')
  } catch {
    return []
  }
}

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

export { findTool } from '../bench/processes.js'
