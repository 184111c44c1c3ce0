// The supervisor's admin listener (docs/operations/workers.md): the one admin port of a gateway of
// several workers. It answers /live itself, /ready and /metrics from every worker (ready only when
// all are; metrics added up), sends every mutating request (reload, log level, purge) to every worker
// and answers with their combined result, and lets the first serving worker answer the rest
// (/config, /stats, the dashboard: per worker, marked so). Callers are checked exactly as a single
// gateway checks them (admin-guard.ts); each worker's admin listener is on loopback, for it alone.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { request as send } from 'undici'
import type { Settings } from '../config/compile.js'
import { OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE } from '../telemetry/metrics.js'
import { isMutatingAdminRequest, prefersOpenMetrics } from './admin.js'
import { refuseMutation } from './admin-guard.js'
import { json, text } from './admin-responses.js'

/** As a single gateway's admin listener (admin.ts): an admin request's body is tiny. */
const ADMIN_BODY_LIMIT = 16 * 1024
/** Longest the supervisor waits for a worker's answer to /ready. */
const READY_TIMEOUT_MS = 2000
/** Longest it waits for a worker's answer to anything else (a reload compiles the file). */
const FORWARD_TIMEOUT_MS = 30_000

/** What the handler reads of the supervisor (cluster.ts). */
export interface SupervisorHost {
  readonly state: string
  readonly log: Logger
  readonly settings: Settings
  readonly workers: number
  readonly slots: ReadonlyArray<{ readonly index: number; readonly admin: string | undefined; readonly worker: { readonly process: { readonly pid?: number | undefined } } | undefined }>
  scrape(openMetrics: boolean): Promise<string>
  refreshSettings(): Promise<void>
}

/** One worker's answer to a request the supervisor passed on. */
interface WorkerAnswer {
  readonly worker: number
  readonly pid: number | null
  readonly status: number
  readonly body: unknown
}

export function createSupervisorAdminHandler(host: SupervisorHost) {
  return (request: IncomingMessage, response: ServerResponse): void => {
    const url = request.url ?? '/'
    const path = url.split('?', 1)[0]!
    const method = request.method ?? 'GET'
    if (isMutatingAdminRequest(method, path)) return mutate(host, method, path, url, request, response)
    request.resume()
    if (method === 'GET' || method === 'HEAD') {
      if (path === '/live') return text(response, 200, 'live\n')
      if (path === '/ready') return void ready(host, response)
      if (path === '/metrics' && method === 'GET') return void metrics(host, request, response)
    }
    void forward(host, method, url, path, response)
  }
}

/** Ready while every worker answers ready; the body names those that do not. */
async function ready(host: SupervisorHost, response: ServerResponse): Promise<void> {
  if (host.state !== 'ready') return text(response, 503, `not ready: ${host.state}\n`)
  const problems = await Promise.all(
    host.slots.map(async (slot) => {
      const pid = slot.worker?.process.pid
      if (slot.admin === undefined) return `worker ${slot.index}: not running`
      try {
        const answer = await send(`http://${slot.admin}/ready`, { headersTimeout: READY_TIMEOUT_MS, bodyTimeout: READY_TIMEOUT_MS })
        const body = (await answer.body.text()).trim()
        return answer.statusCode === 200 ? undefined : `worker ${slot.index} (pid ${pid}): ${body}`
      } catch (error) {
        return `worker ${slot.index} (pid ${pid}): no answer (${(error as Error).message})`
      }
    }),
  )
  const notReady = problems.filter((problem): problem is string => problem !== undefined)
  if (notReady.length === 0) return text(response, 200, 'ready\n')
  text(response, 503, `not ready: ${notReady.join('; ')}\n`)
}

async function metrics(host: SupervisorHost, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const openMetrics = prefersOpenMetrics(request.headers.accept)
  try {
    const body = await host.scrape(openMetrics)
    response.writeHead(200, { 'content-type': openMetrics ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE, vary: 'accept' })
    response.end(body)
  } catch (error) {
    text(response, 500, `metrics failed: ${(error as Error).message}\n`)
  }
}

/** A mutating request: the caller checked as a single gateway checks it, then sent to every worker. */
function mutate(host: SupervisorHost, method: string, path: string, url: string, request: IncomingMessage, response: ServerResponse): void {
  const remote = request.socket.remoteAddress ?? ''
  refuseMutation(request, host.settings.adminToken).then(
    async (refusal) => {
      if (refusal !== undefined) {
        request.resume()
        host.log.warn({ method, path, remote, status: refusal.status, reason: refusal.error }, 'admin request refused')
        return json(response, refusal.status, { ok: false, error: refusal.error }, refusal.headers)
      }
      const body = await readBody(request)
      if (body === undefined) return json(response, 413, { ok: false, error: 'body too large' })
      const answers = await Promise.all(host.slots.map((slot) => ask(slot, method, url, request, body)))
      const failed = answers.find((answer) => answer.status < 200 || answer.status > 299)
      const status = failed?.status ?? answers[0]?.status ?? 200
      host.log.info({ method, path, remote, status, workers: answers.map((answer) => answer.status) }, 'admin action sent to every worker')
      // A reload may have changed the admin token: the supervisor reads the file again.
      if (path === '/reload') await host.refreshSettings()
      json(response, status, { ok: failed === undefined, workers: answers })
    },
    (error: unknown) => json(response, 500, { ok: false, error: (error as Error).message }),
  )
}

/** The request's body, or undefined when it is over the limit. */
async function readBody(request: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size <= ADMIN_BODY_LIMIT) chunks.push(chunk)
  }
  return size > ADMIN_BODY_LIMIT ? undefined : Buffer.concat(chunks)
}

/** One worker's answer: its status and its body (parsed when JSON); 503 when it is not running or does not answer. */
async function ask(slot: SupervisorHost['slots'][number], method: string, url: string, request: IncomingMessage, body: Buffer): Promise<WorkerAnswer> {
  const pid = slot.worker?.process.pid ?? null
  if (slot.admin === undefined) return { worker: slot.index, pid, status: 503, body: 'not running' }
  try {
    const headers: Record<string, string> = {}
    if (request.headers['content-type'] !== undefined) headers['content-type'] = request.headers['content-type']
    const answer = await send(`http://${slot.admin}${url}`, { method: method as 'POST', headers, body: body.length === 0 ? undefined : body, headersTimeout: FORWARD_TIMEOUT_MS, bodyTimeout: FORWARD_TIMEOUT_MS })
    const textBody = await answer.body.text()
    let parsed: unknown = textBody
    if (String(answer.headers['content-type'] ?? '').startsWith('application/json')) {
      try {
        parsed = JSON.parse(textBody)
      } catch {
        // Left as text: the caller still sees what the worker said.
      }
    }
    return { worker: slot.index, pid, status: answer.statusCode, body: parsed }
  } catch (error) {
    return { worker: slot.index, pid, status: 503, body: `no answer: ${(error as Error).message}` }
  }
}

/**
 * Everything else (/config, /stats, /stats/stream, /dashboard, /upstreams, the policies' GET
 * endpoints, unknown paths): the first serving worker answers. /config and /stats are that worker's
 * own; their JSON gains a `workers` field saying so.
 */
async function forward(host: SupervisorHost, method: string, url: string, path: string, response: ServerResponse): Promise<void> {
  const slot = host.slots.find((each) => each.admin !== undefined)
  if (slot === undefined) return text(response, 503, 'no worker is running\n')
  try {
    const answer = await send(`http://${slot.admin}${url}`, { method: method as 'GET', headersTimeout: FORWARD_TIMEOUT_MS, bodyTimeout: 0 })
    const type = String(answer.headers['content-type'] ?? '')
    if ((path === '/stats' || path === '/config') && answer.statusCode === 200 && type.startsWith('application/json')) {
      const body = (await answer.body.json()) as Record<string, unknown>
      const workers = { count: host.workers, answeredBy: slot.index, pids: host.slots.map((each) => each.worker?.process.pid ?? null), note: `these numbers are worker ${slot.index}'s alone; GET /metrics adds up every worker's` }
      return json(response, 200, { ...body, workers: { ...(body.workers as object | undefined), ...workers } }, { 'cache-control': 'no-store' })
    }
    const headers: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(answer.headers)) if (value !== undefined && name !== 'connection' && name !== 'keep-alive' && name !== 'transfer-encoding') headers[name] = value
    response.writeHead(answer.statusCode, headers)
    // An event stream never ends by itself: the caller leaving ends the worker's side too.
    response.once('close', () => answer.body.destroy())
    answer.body.on('error', () => response.destroy())
    answer.body.pipe(response)
  } catch (error) {
    if (!response.headersSent) text(response, 502, `worker ${slot.index} did not answer: ${(error as Error).message}\n`)
    else response.destroy()
  }
}
