// The admin listener: probes, config state, upstream endpoints, circuit breakers, reload and
// metrics. Kept off the proxy port so a load balancer or a client can never reach it through the
// data path.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Gateway } from './gateway.js'
import { formatError } from '../config/load.js'
import type { PurgeSelector } from '../policies/policy.js'

/** A purge request's JSON is tiny; anything bigger is refused unread. */
const PURGE_BODY_LIMIT = 16 * 1024

function json(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2)
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  response.end(text)
}

function text(response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  response.end(body)
}

export function createAdminHandler(gateway: Gateway) {
  return (request: IncomingMessage, response: ServerResponse): void => {
    const path = (request.url ?? '/').split('?')[0]
    const method = request.method ?? 'GET'
    if (method === 'POST' && path === '/cache/purge') return purge(gateway, request, response)
    request.resume()
    switch (`${method} ${path}`) {
      case 'GET /live':
      case 'HEAD /live':
        return text(response, 200, 'live\n')
      case 'GET /ready':
      case 'HEAD /ready':
        return gateway.ready ? text(response, 200, 'ready\n') : text(response, 503, `not ready: ${gateway.state}\n`)
      case 'GET /config': {
        const plan = gateway.plan
        return json(response, 200, {
          state: gateway.state,
          file: gateway.configFile,
          active: { version: plan.version, hash: plan.hash, source: plan.source, loadedAt: plan.loadedAt.toISOString(), routes: plan.router.order.map((route) => route.info) },
          lastError: gateway.lastError ?? null,
          history: gateway.history.list(),
          config: plan.config,
        })
      }
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
      case 'GET /breakers':
        return json(response, 200, { breakers: gateway.breakers.list().map((breaker) => breaker.snapshot()) })
      case 'GET /metrics':
        gateway.metrics.registry.metrics().then(
          (body) => {
            response.writeHead(200, { 'content-type': gateway.metrics.registry.contentType })
            response.end(body)
          },
          (error: unknown) => text(response, 500, `metrics failed: ${(error as Error).message}\n`),
        )
        return
      default:
        if (['/live', '/ready', '/config', '/upstreams', '/breakers', '/reload', '/metrics', '/cache/purge'].includes(path ?? '')) return text(response, 405, 'method not allowed\n')
        return text(response, 404, 'not found: try /live /ready /config /upstreams /breakers /reload (POST) /metrics /cache/purge (POST)\n')
    }
  }
}

/** Exactly one of key, prefix or tag, each a non-empty string; else a message saying what is wrong. */
function purgeSelector(value: unknown): PurgeSelector | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'expected a JSON object such as {"key": "/path"}, {"prefix": "/api/"} or {"tag": "product-42"}'
  const fields = Object.entries(value as Record<string, unknown>)
  if (fields.length !== 1) return 'expected exactly one of "key", "prefix" or "tag"'
  const [name, selector] = fields[0]!
  if (name !== 'key' && name !== 'prefix' && name !== 'tag') return `unknown field "${name}": expected "key", "prefix" or "tag"`
  if (typeof selector !== 'string' || selector === '') return `"${name}" must be a non-empty string`
  return { [name]: selector }
}

/** POST /cache/purge {key|prefix|tag}: drops matching entries from every route's cache in the plan in force. */
function purge(gateway: Gateway, request: IncomingMessage, response: ServerResponse): void {
  const chunks: Buffer[] = []
  let size = 0
  request.on('data', (chunk: Buffer) => {
    size += chunk.length
    if (size <= PURGE_BODY_LIMIT) chunks.push(chunk)
  })
  request.on('end', () => {
    if (size > PURGE_BODY_LIMIT) return json(response, 413, { ok: false, error: 'body too large' })
    let parsed: unknown
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    } catch {
      return json(response, 400, { ok: false, error: 'invalid JSON' })
    }
    const selector = purgeSelector(parsed)
    if (typeof selector === 'string') return json(response, 400, { ok: false, error: selector })
    let purged = 0
    for (const target of gateway.plan.purgeables) purged += target.purge(selector)
    json(response, 200, { ok: true, purged })
  })
}
