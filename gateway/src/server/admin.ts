// The admin listener: probes, config state, upstream endpoints, circuit breakers, reload and
// metrics. Kept off the proxy port so a load balancer or a client can never reach it through the
// data path.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Gateway } from './gateway.js'
import { formatError } from '../config/load.js'

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
        if (['/live', '/ready', '/config', '/upstreams', '/breakers', '/reload', '/metrics'].includes(path ?? '')) return text(response, 405, 'method not allowed\n')
        return text(response, 404, 'not found: try /live /ready /config /upstreams /breakers /reload (POST) /metrics\n')
    }
  }
}
