// The admin listener: probes, config state, upstream endpoints, reload, metrics, the log level,
// the live stats and their dashboard, plus whatever endpoints the registered policies offer
// (GET /breakers, POST /cache/purge) through their admin hook. Kept off the proxy port so a load
// balancer or a client can never reach it through the data path. Every mutating call, refused or
// not, goes to the audit trail with the caller's address.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { formatError, type ConfigError } from '../config/load.js'
import { redactSecrets } from '../config/redact.js'
import type { Plan } from '../config/compile.js'
import type { ConfigHistory } from '../config/history.js'
import { OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, type GatewayMetrics } from '../telemetry/metrics.js'
import { registry } from '../policies/index.js'
import type { AdminEndpoint } from '../policies/policy.js'
import type { Logger } from 'pino'
import type { SecurityEvents } from '../telemetry/security-log.js'
import { refuseMutation } from './admin-guard.js'
import { isLoopback } from '../core/operator.js'
import type { AuditEvent } from '../telemetry/audit.js'
import type { LogRedaction } from '../telemetry/redaction.js'
import { buildStats, StatsSampler, type StatsHost } from './stats.js'
import { DASHBOARD_CSP, DASHBOARD_HTML } from './dashboard-page.js'
import { json, text } from './admin-responses.js'

/** How often GET /stats/stream sends the stats. */
const STREAM_EVERY_MS = 1000

/** An admin request's JSON is tiny; anything bigger is refused unread. */
const ADMIN_BODY_LIMIT = 16 * 1024

interface OfferedEndpoint {
  readonly policy: string
  readonly endpoint: AdminEndpoint<unknown>
}

/** What the admin API reads of the running gateway (the Gateway class implements it). */
export interface AdminHost extends StatsHost {
  readonly state: string
  /** What still keeps it from being ready (certificates while starting, a JWKS); empty when nothing. */
  readonly waitingFor: readonly string[]
  /** Admin actions (reloads, purges), refused or done, are recorded here. */
  readonly security: SecurityEvents
  readonly plan: Plan
  readonly configFile: string
  /** The TLS listener's certificates and last error; null without TLS. */
  readonly tlsStatus?: unknown
  readonly history: ConfigHistory
  readonly metrics: GatewayMetrics
  readonly log: Logger
  readonly redaction: LogRedaction
  /** Ends each open event stream at shutdown (the admin handler adds and removes its own). */
  readonly adminStreams: Set<() => void>
  /** Set in a worker process (docs/operations/workers.md): which one, of how many. */
  readonly worker: { readonly index: number; readonly count: number } | undefined
  reload(source: string): Promise<{ ok: true } | { ok: false; errors: ConfigError[] }>
  logging(): { level: string; configured: string; runtime: unknown; resetLevelOnReload: boolean }
  setLogLevel(level: string, by: string): { previous: string; level: string }
  audited(event: Extract<AuditEvent, { event: 'admin' }>): void
}

/** The policies' endpoints by "METHOD /path", fixed at start: the registry does not change at run time. */
const offered = new Map<string, OfferedEndpoint>()
for (const policy of registry) {
  for (const endpoint of policy.admin ?? []) {
    const key = `${endpoint.method} ${endpoint.path}`
    const taken = offered.get(key)
    // Two policies offering one endpoint is a registry bug: refuse to start rather than serve one of them.
    if (taken !== undefined) throw new Error(`admin endpoint ${key} is offered by both ${taken.policy} and ${policy.name}`)
    offered.set(key, { policy: policy.name, endpoint })
  }
}
/** Whether a request changes something (reload, log level, purge): refused without loopback or the admin token. */
export function isMutatingAdminRequest(method: string, path: string): boolean {
  return method !== 'GET' && method !== 'HEAD' && KNOWN_PATHS.has(path)
}

const OWN_PATHS = ['/live', '/ready', '/config', '/upstreams', '/reload', '/metrics', '/logging', '/stats', '/stats/stream', '/dashboard']
const KNOWN_PATHS = new Set([...OWN_PATHS, ...[...offered.values()].map((entry) => entry.endpoint.path)])
const INDEX = `not found: try /live /ready /config /upstreams /reload (POST) /metrics /logging (POST ?level=) /stats /stats/stream /dashboard ${[...offered.values()].map(({ endpoint }) => (endpoint.method === 'GET' ? endpoint.path : `${endpoint.path} (${endpoint.method})`)).join(' ')}\n`

export function createAdminHandler(gateway: AdminHost) {
  // One copy of the numbers a second for /stats' rates, from the start; stopped with the gateway.
  const sampler = new StatsSampler(gateway.metrics)
  sampler.start()
  gateway.adminStreams.add(() => sampler.stop())
  const context: AdminContext = { gateway, sampler }
  return (request: IncomingMessage, response: ServerResponse): void => {
    const [path = '/', query = ''] = (request.url ?? '/').split('?', 2)
    const method = request.method ?? 'GET'
    if (method === 'GET' || method === 'HEAD' || !KNOWN_PATHS.has(path)) return route(context, method, path, query, request, response)
    // A mutating endpoint: only for loopback callers or the admin token, never for a web page.
    const remote = request.socket.remoteAddress ?? ''
    let caller: 'loopback' | 'token' | 'refused' = isLoopback(remote) ? 'loopback' : 'token'
    // Once answered; a caller that left before the answer is recorded with 499, as the access log does.
    response.once('finish', () =>
      gateway.security.record({ event: 'admin-action', reason: `${method} ${path}`, method, path, status: response.statusCode, remote }),
    )
    response.once('close', () =>
      gateway.audited({ event: 'admin', method, path, query: query === '' ? '' : gateway.redaction.scrubText(`?${query}`).slice(1), remote, caller, status: response.headersSent ? response.statusCode : 499 }),
    )
    refuseMutation(request, gateway.plan.settings.adminToken).then(
      (refusal) => {
        if (refusal === undefined) return route(context, method, path, query, request, response)
        caller = 'refused'
        request.resume()
        gateway.log.warn({ method, path, remote, status: refusal.status, reason: refusal.error }, 'admin request refused')
        json(response, refusal.status, { ok: false, error: refusal.error }, refusal.headers)
      },
      (error: unknown) => json(response, 500, { ok: false, error: (error as Error).message }),
    )
  }
}

interface AdminContext {
  readonly gateway: AdminHost
  readonly sampler: StatsSampler
}

function route(context: AdminContext, method: string, path: string, query: string, request: IncomingMessage, response: ServerResponse): void {
  const gateway = context.gateway
  const policyEndpoint = offered.get(`${method} ${path}`)
  if (policyEndpoint !== undefined) return serve(gateway, policyEndpoint, query, request, response)
  request.resume()
  switch (`${method} ${path}`) {
    case 'GET /live':
    case 'HEAD /live':
      return text(response, 200, 'live\n')
    case 'GET /ready':
    case 'HEAD /ready': {
      const readiness = gateway.readiness()
      return readiness.ready ? text(response, 200, 'ready\n') : text(response, 503, `not ready: ${readiness.reason}\n`)
    }
    case 'GET /config': {
      const plan = gateway.plan
      return json(response, 200, {
        state: gateway.state,
        file: gateway.configFile,
        active: { version: plan.version, hash: plan.hash, source: plan.source, loadedAt: plan.loadedAt.toISOString(), routes: plan.router.order.map((route) => route.info) },
        lastError: gateway.lastError ?? null,
        tls: gateway.tlsStatus ?? null,
        history: gateway.history.list(),
        logging: gateway.logging(),
        audit: gateway.audit.output === undefined ? null : { output: gateway.audit.output, events: gateway.audit.sequence },
        config: redactSecrets(plan.config),
        // The file's limits as written are above; these are what this worker applies (its share).
        ...(gateway.worker === undefined ? {} : { workers: { count: gateway.worker.count, index: gateway.worker.index, pid: process.pid, limits: plan.perWorkerLimits } }),
      })
    }
    case 'GET /logging':
      return json(response, 200, gateway.logging())
    case 'POST /logging':
      return setLevel(gateway, new URLSearchParams(query), request, response)
    case 'GET /stats':
      return json(response, 200, buildStats(gateway, context.sampler), { 'cache-control': 'no-store' })
    case 'GET /stats/stream':
      return streamStats(context, request, response)
    case 'GET /dashboard':
    case 'HEAD /dashboard':
      response.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': Buffer.byteLength(DASHBOARD_HTML),
        'content-security-policy': DASHBOARD_CSP,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        'cache-control': 'no-store',
      })
      return void response.end(method === 'HEAD' ? undefined : DASHBOARD_HTML)
    case 'GET /upstreams': {
      const upstreams: Record<string, unknown> = {}
      for (const [name, group] of gateway.plan.upstreams) upstreams[name] = group.snapshot()
      return json(response, 200, upstreams)
    }
    case 'POST /reload':
      gateway.reload('admin').then(
        (result) => (result.ok ? json(response, 200, result) : json(response, 422, { ok: false, errors: result.errors.map(formatError) })),
        (error: unknown) => json(response, 500, { ok: false, errors: [(error as Error).message] }),
      )
      return
    case 'GET /metrics': {
      const openMetrics = prefersOpenMetrics(request.headers.accept)
      ;(openMetrics ? gateway.metrics.openMetrics() : gateway.metrics.text()).then(
        (body) => {
          response.writeHead(200, { 'content-type': openMetrics ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE, vary: 'accept' })
          response.end(body)
        },
        (error: unknown) => text(response, 500, `metrics failed: ${(error as Error).message}\n`),
      )
      return
    }
    default:
      if (KNOWN_PATHS.has(path)) return text(response, 405, 'method not allowed\n')
      return text(response, 404, INDEX)
  }
}

/** POST /logging?level=LEVEL (Envoy's admin form): the log level of the whole gateway, now; without `level`, what it is. */
function setLevel(gateway: AdminHost, params: URLSearchParams, request: IncomingMessage, response: ServerResponse): void {
  const unknown = [...params.keys()].filter((name) => name !== 'level')
  if (unknown.length > 0) return json(response, 400, { ok: false, error: `unknown parameter ${unknown.join(', ')}: POST /logging?level=LEVEL` })
  const level = params.get('level')
  if (level === null) return json(response, 200, { ok: true, ...gateway.logging() })
  try {
    const changed = gateway.setLogLevel(level, request.socket.remoteAddress ?? '')
    return json(response, 200, { ok: true, ...changed, ...gateway.logging() })
  } catch (error) {
    return json(response, 400, { ok: false, error: (error as Error).message })
  }
}

/**
 * GET /stats/stream: Server-Sent Events, the stats once a second as `event: stats`. The page's
 * EventSource reconnects by itself after `retry` ms; the gateway ends open streams when it stops.
 */
function streamStats({ gateway, sampler }: AdminContext, request: IncomingMessage, response: ServerResponse): void {
  request.resume()
  response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' })
  response.write('retry: 1000\n\n')
  const send = (): void => {
    // A client that does not read gets no more until it has taken what was sent.
    if (response.writableNeedDrain) return
    response.write(`event: stats\ndata: ${JSON.stringify(buildStats(gateway, sampler))}\n\n`)
  }
  const timer = setInterval(send, STREAM_EVERY_MS)
  const end = (): void => {
    clearInterval(timer)
    gateway.adminStreams.delete(end)
    response.end()
  }
  gateway.adminStreams.add(end)
  response.once('close', end)
  send()
}

/**
 * Whether a scraper's Accept asks for OpenMetrics 1.0 at least as much as for the text format
 * (Prometheus asks for OpenMetrics 1.0.0 first, then text/plain;version=0.0.4 with q=0.5).
 * No Accept, any type, or only text/plain: the text format.
 */
export function prefersOpenMetrics(accept: string | undefined): boolean {
  if (accept === undefined) return false
  let openMetrics = 0
  let textFormat = 0
  for (const range of accept.split(',')) {
    const [type = '', ...parameters] = range.split(';').map((part) => part.trim().toLowerCase())
    let q = 1
    let version: string | undefined
    for (const parameter of parameters) {
      const [name, value = ''] = parameter.split('=', 2).map((part) => part.trim())
      if (name === 'q') q = Number(value)
      else if (name === 'version') version = value
    }
    if (!(q > 0)) continue
    if (type === 'application/openmetrics-text' && (version === undefined || version === '1.0.0')) openMetrics = Math.max(openMetrics, q)
    else if (type === 'text/plain' || type === 'text/*' || type === '*/*') textFormat = Math.max(textFormat, q)
  }
  return openMetrics > 0 && openMetrics >= textFormat
}

/** A policy's endpoint: a POST's JSON body is read (bounded) first; the answer is JSON. */
function serve(gateway: AdminHost, { policy, endpoint }: OfferedEndpoint, query: string, request: IncomingMessage, response: ServerResponse): void {
  const answer = (body: unknown): void => {
    const exposed = gateway.plan.exposed.get(policy) ?? []
    Promise.resolve()
      .then(() => endpoint.handle(exposed, { query: new URLSearchParams(query), body }))
      .then(
        (reply) => json(response, reply.status, reply.body),
        (error: unknown) => json(response, 500, { ok: false, error: (error as Error).message }),
      )
  }
  if (endpoint.method === 'GET') {
    request.resume()
    return answer(undefined)
  }
  const chunks: Buffer[] = []
  let size = 0
  request.on('data', (chunk: Buffer) => {
    size += chunk.length
    if (size <= ADMIN_BODY_LIMIT) chunks.push(chunk)
  })
  request.on('end', () => {
    if (size > ADMIN_BODY_LIMIT) return json(response, 413, { ok: false, error: 'body too large' })
    if (size === 0) return answer(undefined)
    let parsed: unknown
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    } catch {
      return json(response, 400, { ok: false, error: 'invalid JSON' })
    }
    answer(parsed)
  })
}
