// The three steps the scenario runs under load:
//   1. reloads: file edits, SIGHUP and POST /reload, one of them an invalid file;
//   2. rolling restarts of the gateways behind HAProxy, one at a time, with SIGTERM (drain);
//   3. SIGKILL and restart of the upstream stub.
// Each step checks what the gateways and the load balancer report (versions, exit codes, health)
// and records a timeline; the request outcomes are judged by the report.
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gatewayConfig, invalidGatewayConfig, type Ports } from './configs.js'
import { startGatewayProcess, type GatewayProcess } from '../lib/gateway.js'
import { log, now, sleep } from '../lib/log.js'
import { readLines, signalGroup, signalProcess, stopProcess, type Started } from '../lib/processes.js'
import { startStubProcess, type StubProcess } from '../lib/stub.js'
import { configStatus, postReload, waitHaproxyServer, type ConfigStatus } from './topology.js'
import { poll, round, withTimeout } from './util.js'

export interface TimelineEvent {
  /** Seconds since the load started. */
  t: number
  step: string
  what: string
}

export interface Context {
  readonly dir: string
  readonly configFile: string
  readonly ports: Ports
  stubUrl: string
  stub: StubProcess
  stubGeneration: number
  /** In the order of `ports.gateways`. */
  gateways: GatewayProcess[]
  gatewayGeneration: number[]
  haproxy: Started
  /** The config variant in force (see gatewayConfig). */
  variant: number
  /** Problems the steps saw besides failed requests (a reload not applied, a bad exit code...). */
  readonly problems: string[]
  readonly timeline: TimelineEvent[]
  step: string
  loadStartedAt: number
  readonly drain: { delayMs: number; timeoutMs: number }
  /** Set on Ctrl-C: the steps stop acting (the cleanup stops every process). */
  aborted: boolean
}

export class Aborted extends Error {
  constructor() {
    super('interrupted')
    this.name = 'Aborted'
  }
}

/** Throws once the run has been interrupted, so no step signals or starts anything during the cleanup. */
export function ensureRunning(ctx: Context): void {
  if (ctx.aborted) throw new Aborted()
}

/** sleep(), then ensureRunning(). */
export async function pause(ctx: Context, ms: number): Promise<void> {
  await sleep(ms)
  ensureRunning(ctx)
}

export function event(ctx: Context, what: string): void {
  const t = ctx.loadStartedAt === 0 ? 0 : round((now() - ctx.loadStartedAt) / 1000, 2)
  ctx.timeline.push({ t, step: ctx.step, what })
  log(`[${ctx.step}] ${what}`)
}

function problem(ctx: Context, what: string): void {
  // After Ctrl-C the cleanup's own signals are no problem of the gateway.
  if (ctx.aborted) return
  ctx.problems.push(`[${ctx.step}] ${what}`)
  event(ctx, `PROBLEM: ${what}`)
}

/** Replaces the policy file atomically (write + rename), as editors and `kubectl cp` do. */
export function writeConfig(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text)
  renameSync(`${file}.tmp`, file)
}

// ---- step 1 ----------------------------------------------------------------------------------------

export type ReloadMethod = 'file' | 'sighup' | 'admin' | 'invalid'

/** `count` reloads cycling file / SIGHUP / POST /reload, with one invalid file in the middle. */
export function reloadPlan(count: number): ReloadMethod[] {
  const cycle: ReloadMethod[] = ['file', 'sighup', 'admin']
  const plan: ReloadMethod[] = []
  for (let i = 0; plan.length < count - 1; i++) plan.push(cycle[i % cycle.length]!)
  plan.splice(Math.floor(count / 2), 0, 'invalid')
  return plan
}

const SOURCE: Record<Exclude<ReloadMethod, 'invalid'>, string> = { file: 'file', sighup: 'signal', admin: 'admin' }

export async function reloads(ctx: Context, plan: readonly ReloadMethod[], everyMs: number): Promise<void> {
  for (const [index, method] of plan.entries()) {
    await pause(ctx, everyMs)
    const before = await Promise.all(ctx.gateways.map((gw) => configStatus(gw.admin)))
    const started = now()
    if (method === 'invalid') await invalidReload(ctx, before, index)
    else await goodReload(ctx, before, method, index)
    event(ctx, `reload ${index + 1}/${plan.length} (${method}) done in ${Math.round(now() - started)} ms`)
  }
}

async function goodReload(ctx: Context, before: ConfigStatus[], method: Exclude<ReloadMethod, 'invalid'>, index: number): Promise<void> {
  ctx.variant++
  writeConfig(ctx.configFile, gatewayConfig(ctx.stubUrl, ctx.variant))
  if (method === 'sighup') for (const gw of ctx.gateways) signalProcess(gw.process, 'SIGHUP')
  if (method === 'admin') {
    const answers = await Promise.all(ctx.gateways.map((gw) => postReload(gw.admin)))
    answers.forEach((answer, i) => {
      if (answer.status !== 200) problem(ctx, `${ctx.gateways[i]!.name}: POST /reload answered ${answer.status} ${JSON.stringify(answer.body)}`)
    })
  }
  await Promise.all(
    ctx.gateways.map(async (gw, i) => {
      const expected = before[i]!.active.version + 1
      try {
        const status = await poll(`${gw.name} version ${expected}`, 5000, async () => {
          const current = await configStatus(gw.admin)
          return current.active.version >= expected ? current : undefined
        })
        if (status.active.version !== expected) problem(ctx, `${gw.name}: reload ${index + 1} (${method}) went to version ${status.active.version}, expected ${expected}`)
        else if (status.active.source !== SOURCE[method]) {
          // Not a failure of the gateway: the file watcher (150 ms debounce) may see the edit first.
          event(ctx, `${gw.name}: reload ${index + 1} (${method}) was applied by source "${status.active.source}"`)
        }
      } catch (error) {
        problem(ctx, `${gw.name}: reload ${index + 1} (${method}) not applied: ${(error as Error).message}`)
      }
    }),
  )
}

/** An invalid file: every gateway must reject it (log + /config lastError + 422 on POST /reload) and keep its plan. */
async function invalidReload(ctx: Context, before: ConfigStatus[], index: number): Promise<void> {
  writeConfig(ctx.configFile, invalidGatewayConfig(ctx.stubUrl, ctx.variant + 1))
  await Promise.all(
    ctx.gateways.map(async (gw, i) => {
      const previousError = before[i]!.lastError?.at
      try {
        // The file watcher sees the edit and rejects it.
        const status = await poll(`${gw.name} rejects the invalid file`, 5000, async () => {
          const current = await configStatus(gw.admin)
          return current.lastError !== null && current.lastError.at !== previousError ? current : undefined
        })
        event(ctx, `${gw.name}: invalid file rejected (${status.lastError!.source}): ${status.lastError!.errors[0] ?? '?'}`)
        const answer = await postReload(gw.admin)
        if (answer.status !== 422) problem(ctx, `${gw.name}: POST /reload with the invalid file answered ${answer.status}, expected 422`)
        const after = await configStatus(gw.admin)
        if (after.active.version !== before[i]!.active.version || after.active.hash !== before[i]!.active.hash) {
          problem(ctx, `${gw.name}: the invalid file replaced the plan (version ${before[i]!.active.version} -> ${after.active.version})`)
        }
      } catch (error) {
        problem(ctx, `${gw.name}: reload ${index + 1} (invalid): ${(error as Error).message}`)
      }
    }),
  )
}

// ---- step 2 ----------------------------------------------------------------------------------------

export interface RestartRecord {
  gateway: string
  round: number
  /** ms from SIGTERM: HAProxy marked it DOWN; the process exited; the new one was ready; HAProxy marked it UP. */
  lbDownMs: number
  exitMs: number
  exitCode: number | null
  drained: boolean | undefined
  readyMs: number
  lbUpMs: number
}

/** Restarts every gateway once, one at a time, as a rolling update would. */
export async function rollingRestart(ctx: Context, round: number, pauseMs: number): Promise<RestartRecord[]> {
  const records: RestartRecord[] = []
  for (const [i, old] of ctx.gateways.entries()) {
    ensureRunning(ctx)
    const port = ctx.ports.gateways[i]!
    const t0 = now()
    event(ctx, `round ${round}: SIGTERM ${old.name} (pid ${old.process.pid})`)
    signalGroup(old.process, 'SIGTERM')
    const lbDown = waitHaproxyServer(ctx.ports.lbStats, 'gateways', port.name, 'DOWN', 5000).then(
      () => now() - t0,
      (error: unknown) => {
        problem(ctx, `${(error as Error).message} after SIGTERM`)
        return NaN
      },
    )
    const boundMs = ctx.drain.delayMs + ctx.drain.timeoutMs + 5000
    let exit
    try {
      exit = await withTimeout(old.process.exited, boundMs, `${old.name} exit after SIGTERM`)
    } catch (error) {
      problem(ctx, (error as Error).message)
      exit = await stopProcess(old.process, 1000)
    }
    const exitMs = now() - t0
    if (exit.code !== 0) problem(ctx, `${old.name} exited with code ${exit.code} signal ${exit.signal} after SIGTERM (expected 0)`)
    const drained = stoppedLine(old.process.logFile)
    if (drained !== true) problem(ctx, `${old.name}: no "stopped" log line with drained=true (got ${String(drained)})`)
    event(ctx, `${old.name} exited ${exit.code ?? exit.signal} after ${Math.round(exitMs)} ms (drained: ${String(drained)})`)

    ensureRunning(ctx)
    ctx.gatewayGeneration[i] = ctx.gatewayGeneration[i]! + 1
    const name = `${port.name}`
    const logFile = join(ctx.dir, `${port.name}-${ctx.gatewayGeneration[i]}.log`)
    const next = await startGatewayProcess(name, ctx.configFile, logFile, `127.0.0.1:${port.proxy}`, `127.0.0.1:${port.admin}`)
    ctx.gateways[i] = next
    const readyMs = now() - t0
    let lbUpMs = NaN
    try {
      await waitHaproxyServer(ctx.ports.lbStats, 'gateways', port.name, 'UP', 5000)
      lbUpMs = now() - t0
    } catch (error) {
      problem(ctx, (error as Error).message)
    }
    const record: RestartRecord = { gateway: port.name, round, lbDownMs: round1(await lbDown), exitMs: round1(exitMs), exitCode: exit.code, drained, readyMs: round1(readyMs), lbUpMs: round1(lbUpMs) }
    records.push(record)
    event(ctx, `${name} (pid ${next.process.pid}) ready after ${Math.round(readyMs)} ms, UP in haproxy after ${Math.round(lbUpMs)} ms (DOWN seen after ${Math.round(record.lbDownMs)} ms)`)
    await pause(ctx, pauseMs)
  }
  return records
}

function round1(value: number): number {
  return round(value, 1)
}

/** The `drained` field of the gateway's final "stopped" log line. */
function stoppedLine(file: string): boolean | undefined {
  for (const line of readLines(file).reverse()) {
    if (!line.includes('"msg":"stopped"')) continue
    try {
      return (JSON.parse(line) as { drained?: boolean }).drained
    } catch {
      return undefined
    }
  }
  return undefined
}

// ---- step 3 ----------------------------------------------------------------------------------------

export interface OutageWindow {
  /** performance.now() of the SIGKILL and of the restarted stub's listening line. */
  killAt: number
  upAt: number
}

/** SIGKILL the stub, keep it down `downMs`, start it again on the same port. */
export async function upstreamKill(ctx: Context, downMs: number): Promise<OutageWindow> {
  ensureRunning(ctx)
  const old = ctx.stub
  const killAt = now()
  event(ctx, `SIGKILL upstream stub (pid ${old.process.pid})`)
  signalGroup(old.process, 'SIGKILL')
  const exit = await withTimeout(old.process.exited, 5000, 'stub exit after SIGKILL')
  event(ctx, `stub gone (${exit.signal ?? exit.code}); down for ${downMs} ms`)
  await pause(ctx, downMs)
  ctx.stubGeneration++
  ctx.stub = await startStubProcess(join(ctx.dir, `stub-${ctx.stubGeneration}.log`), ctx.ports.stub)
  const upAt = now()
  event(ctx, `stub back (pid ${ctx.stub.process.pid}) after ${Math.round(upAt - killAt)} ms`)
  return { killAt, upAt }
}
