// The running gateway: the plan in force, the proxy and admin listeners, reloads and the lifecycle
// starting → ready → draining → stopped.
import { dirname, resolve } from 'node:path'
import type { Server, IncomingMessage, ServerResponse } from 'node:http'
import { http } from '../core/node-http.js'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { Duplex } from 'node:stream'
import type { AddressInfo, ListenOptions, Socket } from 'node:net'
import type { FSWatcher } from 'node:fs'
import type { Logger } from 'pino'
import { compile, type Plan } from '../config/compile.js'
import { formatError, formatWarning, loadConfigFile, type ConfigError } from '../config/load.js'
import { KeptState } from '../config/kept-state.js'
import { ConfigHistory } from '../config/history.js'
import { watchConfig } from '../core/file-watch.js'
import { GatewayMetrics } from '../telemetry/metrics.js'
import { flushLogger, LOG_LEVELS } from '../telemetry/logger.js'
import { AccessLog } from '../telemetry/access-log.js'
import { SecurityLog } from '../telemetry/security-log.js'
import { displayUrl, resolveTracing, type Tracing } from '../telemetry/tracing-config.js'
import type { GatewayConfig } from '../config/schema.js'
import { AuditTrail, type AuditEvent } from '../telemetry/audit.js'
import type { LineStream } from '../telemetry/json-lines.js'
import { LogRedaction } from '../telemetry/redaction.js'
import { packageVersion } from '../core/version.js'
import { pino } from 'pino'
import { handleExchange, type ExchangeHost } from './exchange.js'
import { handleUpgrade } from './upgrade.js'
import { createAdminHandler } from './admin.js'
import { parseAddress } from './address.js'
import { ClientGuard } from './client-guard.js'
import { TlsListener, type TlsStatus } from './tls-listener.js'
import { CLEARTEXT_PEER, type ConnectionPeer } from './peer.js'

const { createServer } = http

/** Longest a start waits for upstream endpoints to be known before turning ready anyway. */
const UPSTREAM_WARMUP_MS = 10_000

export type LifecycleState = 'starting' | 'ready' | 'draining' | 'stopped'

export type ReloadResult =
  | { ok: true; version: number; hash: string; changed: boolean }
  | { ok: false; errors: ConfigError[] }

export interface GatewayOptions {
  readonly configFile: string
  readonly log: Logger
  readonly overrides?: { listen?: string; admin?: string; logLevel?: string; logFormat?: string }
  /** Watch the config file's directory and reload on change. Default true. */
  readonly watch?: boolean
  /** Where the OTEL_* variables are read (tracing); default `process.env`. */
  readonly environment?: NodeJS.ProcessEnv
  /** The redaction the logger's hook applies (createLogger's); the gateway keeps its lists up to date with the file. */
  readonly redaction?: LogRedaction
  /** Set when this gateway is one of several worker processes (server/cluster.ts); absent for a single process. */
  readonly worker?: WorkerRole
}

/** What a worker process is told by its supervisor. */
export interface WorkerRole {
  /** 0-based; every log line carries it as `worker`. */
  readonly index: number
  /** Workers in all: the local limits are divided by it. */
  readonly count: number
  /**
   * Each worker binds its own proxy socket with SO_REUSEPORT (the runtime supports it), rather than
   * receiving connections from the supervisor (node:cluster's round robin).
   */
  readonly reusePort: boolean
  /** The proxy (and cleartext) addresses the first worker bound: a configured port 0 becomes one port for all. */
  readonly listen?: string
  readonly plainAddress?: string
}

/** A log level set through POST /logging, until reset (or a reload, when the file says so). */
export interface RuntimeLevel {
  readonly level: string
  readonly at: string
  /** The caller's address. */
  readonly by: string
}

interface PlanUse {
  inFlight: number
  retire: (() => void) | undefined
}

export class Gateway implements ExchangeHost {
  readonly metrics = new GatewayMetrics()
  readonly history = new ConfigHistory()
  readonly clients = new ClientGuard()
  readonly log: Logger
  readonly accessLog: AccessLog
  /** Authentication failures, denials, admin actions, certificate changes (securityLog). */
  readonly security: SecurityLog
  /** Set at start when tracing is on (the OTEL_* variables or the file's `tracing:`), for the gateway's life. */
  tracing: Tracing | undefined = undefined
  readonly audit: AuditTrail
  readonly redaction: LogRedaction
  /** When this gateway started (ms since the epoch), for /stats. */
  readonly startedAt = Date.now()
  /** Ends each open admin event stream (GET /stats/stream); the admin handler adds and removes them. */
  readonly adminStreams = new Set<() => void>()
  /** The level set at run time (POST /logging); undefined while the configured one holds. */
  runtimeLevel: RuntimeLevel | undefined
  state: LifecycleState = 'starting'
  lastError: { at: string; source: string; errors: string[] } | undefined
  private current: Plan | undefined
  private readonly kept = new KeptState()
  private readonly planUse = new WeakMap<Plan, PlanUse>()
  /** The proxy listener: https when listen.tls is set (made at start, once the first plan says which). */
  private proxyServer: Server | HttpsServer = createServer()
  /** listen.plainAddress: a cleartext listener beside the TLS one. */
  private plainServer: Server | undefined
  private tls: TlsListener | undefined
  private readonly adminServer: Server
  private readonly upgraded = new Set<Duplex>()
  private inFlight = 0
  private acceptingStopped = false
  private reloading: Promise<ReloadResult> = Promise.resolve({ ok: false, errors: [] })
  private watcher: FSWatcher | undefined
  private idleWaiters: Array<() => void> = []
  /** Settles when a shutdown begins (a start still waiting for its certificates gives up). */
  private stopRequested: () => void = () => undefined
  private readonly stopping = new Promise<void>((resolve) => (this.stopRequested = resolve))

  constructor(private readonly options: GatewayOptions) {
    this.log = options.log
    this.audit = new AuditTrail(options.worker?.index)
    this.redaction = options.redaction ?? new LogRedaction()
    this.accessLog = new AccessLog(options.log, this.redaction)
    this.security = new SecurityLog(options.log)
    this.adminServer = createServer(createAdminHandler(this))
  }

  /** The proxy's handlers on a listener (the proxy listener, and the cleartext one beside a TLS one). */
  private serve(server: Server | HttpsServer, tls: boolean): void {
    server.on('request', (request: IncomingMessage, response: ServerResponse) => handleExchange(this, request, response, false))
    // Answer 100-continue only when the body is about to be sent upstream: a request that a layer
    // turns away (404, 503) never makes the client send its body.
    server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => handleExchange(this, request, response, true))
    server.on('connection', (socket: Socket) => this.connectionOpened(socket, tls))
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => handleUpgrade(this, request, socket, head))
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
      this.log.debug({ err: error.code ?? error.message }, 'client error')
      if (!socket.writable || error.code?.startsWith('HPE_') !== true) return void socket.destroy()
      const tooLarge = error.code === 'HPE_HEADER_OVERFLOW'
      const reason = tooLarge ? 'headers-too-large' : 'malformed-request'
      const answer = `HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nconnection: close\r\ncontent-length: 0\r\nx-waypost-reason: ${reason}\r\n\r\n`
      // Refused before routing, and before a request (or its start) is known: no duration, method OTHER.
      this.metrics.unrouted.count('OTHER', tooLarge ? 431 : 400)
      this.metrics.unrouted.local(reason)
      // A malformed request pipelined behind a valid one: the earlier request is answered first,
      // then the error (RFC 9112 §9.3.2 keeps responses in request order). Node keeps the response
      // being written on the socket as `_httpMessage`; its 'finish' comes once that answer is out.
      const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage
      if (inFlight === undefined || inFlight === null || inFlight.writableFinished) return void socket.end(answer)
      inFlight.once('finish', () => socket.end(answer))
      inFlight.once('close', () => {
        if (!socket.writableEnded) socket.destroy()
      })
    })
  }

  /**
   * Counts the connection against its address's cap (listen.clients.connectionsPerAddress). On the
   * TLS listener this is the raw connection, before its handshake: one over the cap is closed
   * without one (no HTTP answer can be read without TLS).
   */
  private connectionOpened(socket: Socket, tls: boolean): void {
    const limit = this.plan.settings.clients.connectionsPerAddress
    const address = socket.remoteAddress ?? ''
    if (limit === 0) return
    if (!this.clients.connectionOpened(address, limit)) {
      this.log.debug({ remote: address, limit }, 'connection over the per-address cap refused')
      this.metrics.unrouted.count('OTHER', 429)
      this.metrics.unrouted.local('client-connection-limit')
      if (tls) return void socket.destroy()
      return this.clients.refuse(socket)
    }
    socket.once('close', () => this.clients.connectionClosed(address))
  }

  get plan(): Plan {
    return this.current!
  }

  get draining(): boolean {
    return this.state === 'draining' || this.state === 'stopped'
  }

  /** Ready: started, not draining, and every dependency of the plan (a JWKS) loaded. */
  get ready(): boolean {
    return this.readiness().ready
  }

  /**
   * Ready while serving, once what the plan waits for is there (certificates while starting, a JWKS),
   * and with admin.readyRequiresUpstream, while every upstream a route uses has an endpoint its
   * health check passes (off by default: see the schema's description).
   */
  readiness(): { ready: boolean; reason: string } {
    const waiting = this.waitingFor
    const draining = this.state === 'draining' || this.state === 'stopped'
    if (!draining && waiting.length > 0) return { ready: false, reason: this.state === 'ready' ? `waiting for ${waiting.join(', ')}` : `${this.state} (waiting for ${waiting.join(', ')})` }
    if (this.state !== 'ready') return { ready: false, reason: this.state }
    const plan = this.plan
    if (!plan.settings.readyRequiresUpstream) return { ready: true, reason: 'ready' }
    for (const name of new Set(plan.routes.map((route) => route.info.upstream))) {
      const group = plan.upstreams.get(name)
      if (group === undefined || !group.endpointList.some((endpoint) => endpoint.healthy)) return { ready: false, reason: `upstream ${name} has no healthy endpoint` }
    }
    return { ready: true, reason: 'ready' }
  }

  /**
   * What still keeps the gateway from being ready: while starting, the listener's certificates;
   * then the plan's dependencies (policies' deps.awaitBeforeReady, such as a JWKS).
   */
  get waitingFor(): string[] {
    const pending: string[] = []
    const certificates = this.state === 'starting' ? this.tls?.waitingFor : undefined
    if (certificates !== undefined) pending.push(certificates)
    for (const dependency of this.current?.dependencies ?? []) if (!dependency.ready) pending.push(dependency.what)
    return pending
  }

  /** The TLS listener's certificates and last error, for GET /config; null without TLS. */
  get tlsStatus(): TlsStatus | null {
    return this.tls?.status() ?? null
  }

  /** What the connection says about its client: cleartext, or the TLS peer its handshake verified. */
  peer(socket: Socket): ConnectionPeer {
    if (this.tls === undefined) return CLEARTEXT_PEER
    return this.tls.peer(socket) ?? CLEARTEXT_PEER
  }

  /** This process's place among the workers; undefined for a single process. */
  get worker(): WorkerRole | undefined {
    return this.options.worker
  }

  get configFile(): string {
    return this.options.configFile
  }

  exchangeStarted(plan: Plan): void {
    this.inFlight++
    const use = this.planUse.get(plan)
    if (use !== undefined) use.inFlight++
  }

  exchangeEnded(plan: Plan): void {
    this.inFlight--
    const use = this.planUse.get(plan)
    if (use !== undefined) {
      use.inFlight--
      if (use.inFlight === 0 && use.retire !== undefined && plan !== this.current) this.retire(plan, use)
    }
    if (this.inFlight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const wake of waiters) wake()
    }
    // Only once the drain delay is over: during it, idle keep-alive sockets must stay usable,
    // or a load balancer that has not yet seen /ready fail would reuse a socket we just closed.
    if (this.acceptingStopped) for (const server of this.proxyServers()) server.closeIdleConnections()
  }

  trackUpgrade(socket: Duplex): void {
    this.upgraded.add(socket)
    socket.once('close', () => this.upgraded.delete(socket))
  }

  /** Loads the config, binds both listeners, and turns ready. Throws when the first config is bad. */
  async start(): Promise<void> {
    const result = await this.reload('startup')
    if (!result.ok) throw new Error(`config rejected:\n${result.errors.map(formatError).join('\n')}`)
    // Ready only once upstream endpoints are known (a DNS name's first answer), within reason.
    await Promise.race([Promise.all([...this.plan.upstreams.values()].map((group) => group.warmedUp)), sleep(UPSTREAM_WARMUP_MS)])
    const settings = this.plan.settings
    if (this.options.watch !== false) {
      this.watcher = watchConfig(this.options.configFile, () => void this.reload('file'))
    }
    const worker = this.options.worker
    // A worker's admin listener is its supervisor's to reach, on a port of its own (exclusive: not shared through node:cluster).
    const admin: ListenAt = worker === undefined ? { address: settings.admin } : { address: '127.0.0.1:0', exclusive: true }
    const shared = { exclusive: worker?.reusePort === true, reusePort: worker?.reusePort === true }
    const proxyAt: ListenAt = { address: worker?.listen ?? settings.listen, ...shared }
    if (settings.tls !== undefined) {
      // The admin listener first: while the certificates are missing or broken, /ready says why.
      await listen(this.adminServer, admin)
      this.tls = new TlsListener(settings.tls, dirname(this.options.configFile), this.log, this.metrics)
      await this.tls.start()
      await Promise.race([this.tls.loaded, this.stopping])
      if (this.draining) return
      const server = createHttpsServer(this.tls.serverOptions())
      this.tls.attach(server)
      this.serve(server, true)
      this.proxyServer = server
      if (settings.plainAddress !== undefined) {
        this.plainServer = createServer({ requestTimeout: 0 })
        this.serve(this.plainServer, false)
      }
    } else {
      this.proxyServer = createServer({ requestTimeout: 0 })
      this.serve(this.proxyServer, false)
    }
    for (const server of this.proxyServers()) {
      server.keepAliveTimeout = settings.keepAliveTimeoutMs
      server.headersTimeout = settings.headersTimeoutMs
    }
    await Promise.all([
      this.adminServer.listening ? undefined : listen(this.adminServer, admin),
      listen(this.proxyServer, proxyAt),
      this.plainServer === undefined ? undefined : listen(this.plainServer, { address: worker?.plainAddress ?? settings.plainAddress!, ...shared }),
    ])
    this.state = 'ready'
    this.audit.record({ event: 'gateway.started', pid: process.pid, version: packageVersion(), node: process.version })
    const plain = this.plainServer === undefined ? {} : { plain: this.address('plain') }
    // A worker's line is for its supervisor's log; the supervisor says 'waypost ready' once all are.
    this.log.info({ listen: this.address('proxy'), ...plain, tls: this.tls !== undefined, admin: this.address('admin'), version: this.plan.version, hash: this.plan.hash }, worker === undefined ? 'waypost ready' : 'worker ready')
  }

  /** The log's level now, what the file (or a flag) says, and a run-time level if one was set. */
  logging(): { level: string; configured: string; runtime: RuntimeLevel | null; resetLevelOnReload: boolean } {
    const settings = this.plan.settings
    return { level: this.log.level, configured: settings.logLevel, runtime: this.runtimeLevel ?? null, resetLevelOnReload: settings.resetLevelOnReload }
  }

  /** POST /logging?level=…: `reset` returns to the configured level. Throws on an unknown level. */
  setLogLevel(level: string, by: string): { previous: string; level: string } {
    const previous = this.log.level
    if (level === 'reset') this.runtimeLevel = undefined
    else if ((LOG_LEVELS as readonly string[]).includes(level)) this.runtimeLevel = { level, at: new Date().toISOString(), by }
    else throw new Error(`unknown level "${level}": expected one of ${LOG_LEVELS.join(', ')}, or reset`)
    this.log.level = this.runtimeLevel?.level ?? this.plan.settings.logLevel
    this.log.warn({ from: previous, to: this.log.level, by }, 'log level changed at run time')
    return { previous, level: this.log.level }
  }

  /** A log destination of the policy file: `stdout` as is, a relative path read from the policy file's folder like every other path in it. */
  private fromPolicyDir(output: string | undefined): string | undefined {
    return output === undefined || output === 'stdout' ? output : resolve(dirname(this.options.configFile), output)
  }

  /** A signal the process received (main.ts), for the audit trail. */
  signalReceived(signal: string, action: 'reload' | 'drain' | 'exit'): void {
    this.audit.record({ event: 'signal', signal, action })
  }

  /** An admin action, for the audit trail (the admin handler calls it for every mutating request). */
  audited(event: Extract<AuditEvent, { event: 'admin' }>): void {
    this.audit.record(event)
  }

  /** The stream the log writes to: where `audit.output: stdout` writes, so lines never interleave. */
  private get logStream(): LineStream {
    return (this.log as unknown as Record<symbol, LineStream>)[pino.symbols.streamSym]!
  }

  /** The listeners that proxy: the proxy listener, and the cleartext one beside a TLS one. */
  private proxyServers(): Array<Server | HttpsServer> {
    return this.plainServer === undefined ? [this.proxyServer] : [this.proxyServer, this.plainServer]
  }

  address(which: 'proxy' | 'admin' | 'plain'): string {
    const server = which === 'proxy' ? this.proxyServer : which === 'plain' ? this.plainServer : this.adminServer
    const info = (server?.address() ?? null) as AddressInfo | null
    if (info === null) return ''
    return info.family === 'IPv6' ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`
  }

  /** Compiles the file and swaps the plan in atomically; a bad file never replaces a good plan. Reloads run one at a time. */
  reload(source: string): Promise<ReloadResult> {
    // Never rejects, so one failed reload cannot jam the chain: every later one still runs.
    this.reloading = this.reloading.then(() =>
      this.reloadNow(source).catch((error: unknown) =>
        this.rejected(source, [{ file: this.options.configFile, line: 0, col: 0, path: '', message: `reload failed: ${(error as Error).message}` }]),
      ),
    )
    return this.reloading
  }

  private async reloadNow(source: string): Promise<ReloadResult> {
    const loaded = await loadConfigFile(this.options.configFile)
    if (!loaded.ok) return this.rejected(source, loaded.errors)
    const previous = this.current
    if (previous !== undefined && previous.hash === loaded.hash) {
      // The file was put back as it was (a rejected edit undone): nothing to apply, but the error is gone.
      this.errorCleared(source, previous.version)
      return { ok: true, version: previous.version, hash: previous.hash, changed: false }
    }
    const version = (previous?.version ?? 0) + 1
    // Tracing is decided once, with the first plan: its exporter and sampler live as long as the process.
    if (previous === undefined) await this.startTracing(loaded.config)
    let plan: Plan
    this.kept.begin()
    try {
      plan = compile(loaded.config, { version, hash: loaded.hash, source, state: this.kept, metrics: this.metrics, log: this.log, security: this.security, overrides: this.options.overrides ?? {}, baseDir: dirname(this.options.configFile), tracing: this.tracing !== undefined, workers: this.options.worker?.count ?? 1 })
    } catch (error) {
      this.kept.rollback()
      return this.rejected(source, [{ file: this.options.configFile, line: 0, col: 0, path: '', message: `compile failed: ${(error as Error).message}` }])
    }
    // The trail's destination changes with the plan: a file that cannot be opened rejects the config,
    // as a bad field would (the trail and the plan in force stay).
    try {
      this.audit.open(this.fromPolicyDir(loaded.config.audit?.output), this.logStream)
    } catch (error) {
      this.kept.rollback()
      return this.rejected(source, [{ file: this.options.configFile, line: 0, col: 0, path: 'audit.output', message: `cannot open the audit trail: ${(error as Error).message}` }])
    }
    const retire = this.kept.commit()
    this.planUse.set(plan, { inFlight: 0, retire: undefined })
    this.current = plan
    if (previous !== undefined) {
      const use = this.planUse.get(previous)!
      use.retire = retire
      if (use.inFlight === 0) this.retire(previous, use)
      this.warnAboutRestartOnly(previous, plan)
    }
    // A level set at run time outlives a reload unless the file says otherwise (log.resetLevelOnReload).
    if (plan.settings.resetLevelOnReload) this.runtimeLevel = undefined
    this.log.level = this.runtimeLevel?.level ?? plan.settings.logLevel
    this.redaction.configure(plan.settings.redact.headers, plan.settings.redact.query)
    if (this.tls !== undefined && plan.settings.tls !== undefined) this.tls.update(plan.settings.tls)
    this.security.configure(this.fromPolicyDir(plan.settings.securityLog))
    this.metrics.configApplied(version, loaded.hash, source)
    const event = this.history.record(version, loaded.hash, source, previous?.config, loaded.config)
    this.audit.record({ event: 'config.applied', version, hash: loaded.hash, source, summary: event.summary })
    this.log.info({ version, hash: loaded.hash, source, ...event.summary }, 'config applied')
    if (loaded.warnings.length > 0) this.log.warn({ version, warnings: loaded.warnings.map(formatWarning) }, 'config applied with warnings')
    this.errorCleared(source, version)
    return { ok: true, version, hash: loaded.hash, changed: true }
  }

  /** After a good load: a rejection reported before (log, GET /config lastError) is over. */
  private errorCleared(source: string, version: number): void {
    if (this.lastError === undefined) return
    this.log.info({ source, version, rejectedAt: this.lastError.at }, 'config error cleared: the file loads again')
    this.lastError = undefined
  }

  /** Loads the SDK only when tracing is on: a gateway without it never imports OpenTelemetry. */
  private async startTracing(config: GatewayConfig): Promise<void> {
    if (this.tracing !== undefined) return
    const resolved = resolveTracing(config.tracing, this.options.environment ?? process.env)
    for (const warning of resolved.warnings) this.log.warn(`tracing: ${warning}`)
    if (!resolved.on) {
      // Asked for but unusable (an endpoint that is not a URL) is worth a warning; not asked for is not.
      if (resolved.misconfigured) this.log.warn({ why: resolved.why }, 'tracing off')
      else this.log.debug({ why: resolved.why }, 'tracing off')
      return
    }
    const { startTracing } = await import('../telemetry/tracing.js')
    const settings = resolved.settings
    this.tracing = startTracing(settings, this.log)
    this.log.info({ endpoint: displayUrl(settings.endpoint), serviceName: settings.serviceName, sampler: settings.sampler, traceResponse: settings.traceResponse }, 'tracing on')
  }

  private retire(plan: Plan, use: PlanUse): void {
    const retire = use.retire
    use.retire = undefined
    this.planUse.delete(plan)
    retire?.()
  }

  private rejected(source: string, errors: ConfigError[]): ReloadResult {
    const lines = errors.map(formatError)
    this.lastError = { at: new Date().toISOString(), source, errors: lines }
    this.metrics.configRejected()
    this.audit.record({ event: 'config.rejected', source, errors: lines })
    // With no plan yet (the first load), nothing keeps serving: start() throws and its caller reports the errors once.
    if (this.current !== undefined) this.log.error({ source, errors: lines }, 'config rejected; the plan in force keeps serving')
    return { ok: false, errors }
  }

  private warnAboutRestartOnly(previous: Plan, next: Plan): void {
    const before = previous.settings
    const after = next.settings
    if (before.listen !== after.listen || before.admin !== after.admin || before.plainAddress !== after.plainAddress) {
      this.log.warn({ listen: after.listen, admin: after.admin, plainAddress: after.plainAddress }, 'listen addresses change only on restart')
    }
    if ((before.tls === undefined) !== (after.tls === undefined)) this.log.warn({ tls: after.tls !== undefined }, 'turning listen.tls on or off takes a restart')
    if (before.logFormat !== after.logFormat) this.log.warn({ format: after.logFormat }, 'log.format changes only on restart')
    if (JSON.stringify(previous.config.tracing) !== JSON.stringify(next.config.tracing)) this.log.warn('tracing changes only on restart')
    if (previous.config.workers !== next.config.workers) this.log.warn({ workers: next.config.workers ?? 1, running: this.options.worker?.count ?? 1 }, 'workers changes only on restart')
  }

  /** Graceful drain (SIGTERM): not ready at once, serve `drain.delay`, stop accepting, wait for in-flight up to `drain.timeout`. */
  async shutdown(): Promise<void> {
    if (this.state === 'draining' || this.state === 'stopped') return
    this.state = 'draining'
    this.stopRequested()
    const { drainDelayMs, drainTimeoutMs } = this.plan.settings
    this.log.info({ delayMs: drainDelayMs, timeoutMs: drainTimeoutMs, inFlight: this.inFlight }, 'draining: readiness off')
    this.watcher?.close()
    await sleep(drainDelayMs)
    const closed = Promise.all(this.proxyServers().map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))))
    this.acceptingStopped = true
    for (const server of this.proxyServers()) server.closeIdleConnections()
    this.log.info({ inFlight: this.inFlight }, 'draining: stopped accepting')
    const drained = await Promise.race([this.idle().then(() => true), sleep(drainTimeoutMs).then(() => false)])
    if (!drained) this.log.warn({ inFlight: this.inFlight }, 'drain timeout: closing remaining connections')
    for (const server of this.proxyServers()) server.closeAllConnections()
    for (const socket of this.upgraded) socket.destroy()
    await closed
    this.tls?.stop()
    this.kept.disposeAll()
    this.clients.stop()
    // The last spans, for at most tracing.flushTimeout: a collector that does not answer cannot hold the exit.
    await this.tracing?.shutdown()
    this.state = 'stopped'
    // Open event streams (GET /stats/stream) never end by themselves: close() would wait for them.
    for (const end of this.adminStreams) end()
    await new Promise<void>((resolve) => (this.adminServer.listening ? this.adminServer.close(() => resolve()) : resolve()))
    this.adminServer.closeAllConnections()
    this.audit.record({ event: 'gateway.stopped', drained })
    this.audit.close()
    // The exchanges' access lines (batched up to 100 ms) come out before the line that says it stopped.
    this.accessLog.flush()
    this.log.info({ drained }, 'stopped')
    this.flushLogs()
    this.security.close()
  }

  /** Writes every buffered log line; for exits. */
  flushLogs(): void {
    this.accessLog.flush()
    this.security.flush()
    flushLogger(this.log)
  }

  private idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }
}

/** Where a listener binds, and how it shares the port with other workers. */
interface ListenAt {
  readonly address: string
  /** Bind a socket of its own instead of one node:cluster's supervisor shares out. */
  readonly exclusive?: boolean
  /** SO_REUSEPORT, so that several workers' sockets take connections on one port. */
  readonly reusePort?: boolean
}

function listen(server: Server | HttpsServer, at: ListenAt): Promise<void> {
  const { host, port } = parseAddress(at.address)
  // `reusePort` is Node 22.12+'s (@types/node 20 lacks it); only set when the runtime has it (config/workers.ts).
  const options: ListenOptions & { reusePort?: boolean } = { port, host, ...(at.exclusive === true ? { exclusive: true } : {}), ...(at.reusePort === true ? { reusePort: true } : {}) }
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}
