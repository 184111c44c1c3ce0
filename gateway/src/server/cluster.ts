// `waypost run` with workers > 1 (docs/operations/workers.md): this process becomes a small
// supervisor, node:cluster's primary. It forks the workers (each an ordinary Gateway, see
// worker.ts), owns the one admin port (cluster-admin.ts), relays signals, re-forks a worker that
// dies, and drains them all on SIGTERM. It serves no proxy traffic itself: on runtimes with
// SO_REUSEPORT each worker binds the proxy port and the kernel spreads connections; on older ones
// node:cluster's primary accepts them and hands them to the workers in turn.
import cluster, { type Worker } from 'node:cluster'
import { createServer, type Server } from 'node:http'
import type { FSWatcher } from 'node:fs'
import type { Logger } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { formatError, loadConfigFile } from '../config/load.js'
import { settingsOf, type Settings } from '../config/compile.js'
import type { Overrides } from '../config/env.js'
import { listenSupportsReusePort } from '../config/workers.js'
import { watchConfig } from '../core/file-watch.js'
import { flushLogger } from '../telemetry/logger.js'
import { workerScrape, type WorkerMetrics } from '../telemetry/metrics.js'
import { parseAddress } from './address.js'
import type { WorkerRole } from './gateway.js'
import { WORKER_ROLE_VARIABLE, type FromWorker, type ToWorker } from './worker.js'
import { createSupervisorAdminHandler, type SupervisorHost } from './cluster-admin.js'

export interface SupervisorOptions {
  readonly configFile: string
  readonly log: Logger
  readonly overrides: Overrides
  readonly workers: number
}

/** One worker's place: a worker that dies is re-forked into it, with the same index. */
export interface WorkerSlot {
  readonly index: number
  worker: Worker | undefined
  /** Its admin listener (127.0.0.1:PORT), once it reported ready; undefined while it is not running. */
  admin: string | undefined
  startedAt: number
  /** Deaths in a row, each soon after its start: the re-fork waits longer with each. */
  quickDeaths: number
}

/** The waits before re-forking a worker that died, by deaths in a row. */
const RESTART_BACKOFF_MS = [100, 500, 1000, 2000, 5000, 10_000]
/** A worker that served this long before dying is re-forked at once (its backoff starts over). */
const STABLE_AFTER_MS = 10_000
/** Longest a scrape waits for a worker's metrics. */
const METRICS_TIMEOUT_MS = 5000

export type SupervisorState = 'starting' | 'ready' | 'draining' | 'stopped'

export class Supervisor implements SupervisorHost {
  state: SupervisorState = 'starting'
  readonly slots: WorkerSlot[]
  readonly log: Logger
  /** The supervisor's own series, added to the workers' in every scrape. */
  private readonly registry = new Registry()
  private readonly restarts = new Counter({ name: 'waypost_worker_restarts_total', help: 'Worker processes re-forked after dying unexpectedly.', registers: [this.registry] })
  /** Read when scraped, from the slots. */
  private readonly serving: Gauge = new Gauge({
    name: 'waypost_workers',
    help: 'Worker processes serving now, out of the `workers` setting (waypost_workers_configured).',
    registers: [this.registry],
    collect: () => this.serving.set(this.slots.filter((slot) => slot.admin !== undefined).length),
  })
  private readonly configured = new Gauge({ name: 'waypost_workers_configured', help: 'The `workers` setting the gateway started with.', registers: [this.registry] })
  private readonly reusePort = listenSupportsReusePort()
  private settingsInForce: Settings
  private readonly adminServer: Server
  /** With SO_REUSEPORT, the addresses the first worker bound (a configured port 0 becomes one port for all). */
  private bound: { listen: string; plain: string | undefined } | undefined
  private watcher: FSWatcher | undefined
  private nextRequest = 0
  private readonly pendingMetrics = new Map<number, (metrics: WorkerMetrics | undefined) => void>()
  private allExited: (() => void) | undefined

  constructor(private readonly options: SupervisorOptions, settings: Settings) {
    this.log = options.log
    this.settingsInForce = settings
    this.slots = Array.from({ length: options.workers }, (_, index) => ({ index, worker: undefined, admin: undefined, startedAt: 0, quickDeaths: 0 }))
    this.restarts.inc(0)
    this.configured.set(options.workers)
    this.adminServer = createServer(createSupervisorAdminHandler(this))
  }

  get settings(): Settings {
    return this.settingsInForce
  }

  get workers(): number {
    return this.slots.length
  }

  /** Binds the admin port, forks the first worker, then the others; throws when any of them fails its first start. */
  async start(): Promise<void> {
    const { host, port } = parseAddress(this.settings.admin)
    await new Promise<void>((resolve, reject) => {
      this.adminServer.once('error', reject)
      this.adminServer.listen({ host, port }, () => {
        this.adminServer.off('error', reject)
        resolve()
      })
    })
    // Structured clone over the channel: metric values may be NaN or Infinity, which JSON cannot carry.
    cluster.setupPrimary({ serialization: 'advanced' })
    const first = await this.fork(this.slots[0]!)
    if (this.reusePort) this.bound = { listen: first.listen, plain: first.plain }
    await Promise.all(this.slots.slice(1).map((slot) => this.fork(slot)))
    if (this.state !== 'starting') return
    this.state = 'ready'
    this.watcher = watchConfig(this.options.configFile, () => void this.refreshSettings())
    this.log.info(
      { listen: first.listen, ...(first.plain === undefined ? {} : { plain: first.plain }), admin: this.adminAddress(), workers: this.workers, pids: this.pids(), reusePort: this.reusePort },
      'waypost ready',
    )
  }

  adminAddress(): string {
    const info = this.adminServer.address()
    if (info === null || typeof info === 'string') return ''
    return info.family === 'IPv6' ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`
  }

  pids(): number[] {
    return this.slots.map((slot) => slot.worker?.process.pid ?? 0)
  }

  /** Forks a worker into its slot; settles with its addresses once it serves, rejects if it exits first. */
  private fork(slot: WorkerSlot): Promise<Extract<FromWorker, { type: 'waypost:ready' }>> {
    const role: WorkerRole = { index: slot.index, count: this.workers, reusePort: this.reusePort, ...(this.bound === undefined ? {} : { listen: this.bound.listen, plainAddress: this.bound.plain }) }
    const worker = cluster.fork({ [WORKER_ROLE_VARIABLE]: JSON.stringify(role) })
    slot.worker = worker
    slot.admin = undefined
    slot.startedAt = Date.now()
    return new Promise((resolve, reject) => {
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'waypost:ready') {
          slot.admin = message.admin
          if (this.state === 'ready') this.log.info({ worker: slot.index, pid: worker.process.pid }, 'worker replaced and serving')
          resolve(message)
        } else if (message.type === 'waypost:metrics') {
          this.pendingMetrics.get(message.id)?.(message.metrics)
        }
      })
      // A send to a worker that just died; its 'exit' follows and handles it.
      worker.on('error', (error: Error) => this.log.debug({ worker: slot.index, err: error.message }, 'worker channel error'))
      worker.once('exit', (code: number | null, signal: string | null) => {
        reject(new Error(`worker ${slot.index} exited before serving (${signal === null ? `exit code ${code}` : signal})`))
        this.exited(slot, worker, code, signal)
      })
    })
  }

  private exited(slot: WorkerSlot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return
    slot.worker = undefined
    slot.admin = undefined
    if (this.state === 'draining' || this.state === 'stopped') {
      if (this.slots.every((each) => each.worker === undefined)) this.allExited?.()
      return
    }
    // While starting, fork()'s rejection fails the start instead.
    if (this.state !== 'ready') return
    const ran = Date.now() - slot.startedAt
    slot.quickDeaths = ran >= STABLE_AFTER_MS ? 0 : slot.quickDeaths + 1
    const delayMs = slot.quickDeaths === 0 ? 0 : RESTART_BACKOFF_MS[Math.min(slot.quickDeaths, RESTART_BACKOFF_MS.length) - 1]!
    this.restarts.inc()
    this.log.error({ worker: slot.index, pid: worker.process.pid, code, signal, ranMs: ran, restartInMs: delayMs }, 'worker died; forking a new one')
    setTimeout(() => {
      if (this.state !== 'ready') return
      this.fork(slot).catch((error: unknown) => this.log.error({ worker: slot.index, err: (error as Error).message }, 'replacement worker failed to start'))
    }, delayMs).unref()
  }

  /** Each running worker's metrics as data; one that does not answer in time is left out (and logged). */
  async workerMetrics(): Promise<WorkerMetrics[]> {
    const answers = await Promise.all(
      this.slots.map(
        (slot) =>
          new Promise<WorkerMetrics | undefined>((resolve) => {
            const worker = slot.worker
            if (worker === undefined || slot.admin === undefined || !worker.isConnected()) return resolve(undefined)
            const id = this.nextRequest++
            const done = (metrics: WorkerMetrics | undefined): void => {
              clearTimeout(timer)
              this.pendingMetrics.delete(id)
              if (metrics === undefined) this.log.warn({ worker: slot.index }, 'worker gave no metrics; the scrape leaves it out')
              resolve(metrics)
            }
            const timer = setTimeout(() => done(undefined), METRICS_TIMEOUT_MS)
            this.pendingMetrics.set(id, done)
            worker.send({ type: 'waypost:metrics', id } satisfies ToWorker)
          }),
      ),
    )
    return answers.filter((metrics): metrics is WorkerMetrics => metrics !== undefined)
  }

  async scrape(openMetrics: boolean): Promise<string> {
    return workerScrape(await this.workerMetrics(), this.registry, openMetrics)
  }

  /** SIGHUP: every worker reloads the file (each also watches it itself). */
  reloadAll(source: string): void {
    for (const slot of this.slots) if (slot.worker?.isConnected() === true) slot.worker.send({ type: 'waypost:reload', source } satisfies ToWorker)
    void this.refreshSettings()
  }

  /** The admin token and the rest of the settings the supervisor reads, from the file as it is now (a bad file keeps the last good ones). */
  async refreshSettings(): Promise<void> {
    const loaded = await loadConfigFile(this.options.configFile)
    if (loaded.ok) this.settingsInForce = settingsOf(loaded.config, this.options.overrides)
  }

  /** SIGTERM: /ready fails at once, every worker drains as a single process would; settles once all have exited. */
  async shutdown(): Promise<void> {
    if (this.state === 'draining' || this.state === 'stopped') return
    this.state = 'draining'
    this.watcher?.close()
    const running = this.slots.filter((slot) => slot.worker !== undefined)
    this.log.info({ workers: running.length }, 'draining: every worker told to drain')
    const exited = running.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.allExited = resolve))
    for (const slot of running) slot.worker!.process.kill('SIGTERM')
    await exited
    this.state = 'stopped'
    await new Promise<void>((resolve) => this.adminServer.close(() => resolve()))
    this.adminServer.closeAllConnections()
    this.log.info('stopped')
    flushLogger(this.log)
  }

  /** A second signal: every worker killed at once. */
  killAll(): void {
    for (const slot of this.slots) slot.worker?.process.kill('SIGKILL')
  }
}

/** `waypost run` as the supervisor of `workers` processes; -1 while it runs, else the exit code. */
export async function runSupervisor(options: SupervisorOptions): Promise<number> {
  const { log, configFile } = options
  const loaded = await loadConfigFile(configFile)
  if (!loaded.ok) {
    const message = `config rejected:\n${loaded.errors.map(formatError).join('\n')}`
    log.fatal({ file: configFile }, message)
    flushLogger(log)
    console.error(message)
    return 1
  }
  const supervisor = new Supervisor(options, settingsOf(loaded.config, options.overrides))
  let signals = 0
  const stop = (signal: string): void => {
    signals++
    if (signals > 1) {
      log.warn({ signal }, 'second signal: killing the workers and exiting at once')
      supervisor.killAll()
      flushLogger(log)
      process.exit(1)
    }
    log.info({ signal }, 'shutdown requested')
    supervisor.shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: (error as Error).message }, 'shutdown failed')
        supervisor.killAll()
        flushLogger(log)
        process.exit(1)
      },
    )
  }
  process.on('unhandledRejection', (reason: unknown) => {
    log.error({ err: reason instanceof Error ? { message: reason.message, stack: reason.stack } : String(reason) }, 'unhandled rejection (a bug; the supervisor keeps running)')
  })
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGHUP', () => {
    log.info({ signal: 'SIGHUP' }, 'reloading every worker')
    supervisor.reloadAll('signal')
  })
  if (process.channel !== undefined) process.once('disconnect', () => stop('supervisor gone'))
  try {
    await supervisor.start()
  } catch (error) {
    const message = (error as Error).message
    log.fatal({ file: configFile }, message)
    supervisor.killAll()
    flushLogger(log)
    console.error(`waypost: ${message}`)
    process.exit(1)
  }
  return -1
}
