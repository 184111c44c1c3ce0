// The floor under the gateway: the least a reverse proxy on node:http and undici can do. One undici
// Pool with keep-alive, `pool.stream()` straight into the client response, hop-by-hop headers
// dropped and nothing else: no routing, forwarding headers, policies, logs or metrics. The
// gateway's CPU target was set against it ("a bare undici Pool.stream proxy: about 82 µs");
// measuring it in the same run turns that reference into a ratio.
// usage: node dist/loadtest/bench/undici-proxy.js PORT UPSTREAM_PORT      (127.0.0.1 only)
import { createServer, type IncomingHttpHeaders } from 'node:http'
import { Pool } from 'undici'

const port = Number(process.argv[2])
const upstreamPort = Number(process.argv[3])
if (!Number.isInteger(port) || port <= 0 || !Number.isInteger(upstreamPort) || upstreamPort <= 0) {
  console.error('usage: undici-proxy.js PORT UPSTREAM_PORT')
  process.exit(2)
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'upgrade', 'proxy-authorization', 'proxy-authenticate'])

function endToEnd(raw: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!)
  return out
}

function responseHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {}
  for (const name in headers) if (!HOP_BY_HOP.has(name)) out[name] = headers[name]
  return out
}

// As the bench's gateway configs: 128 connections to the upstream.
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: 128 })

const server = createServer({ requestTimeout: 0 }, (request, response) => {
  const hasBody = request.headers['content-length'] !== undefined || request.headers['transfer-encoding'] !== undefined
  pool
    .stream(
      { method: request.method as 'GET', path: request.url ?? '/', headers: endToEnd(request.rawHeaders), body: hasBody ? request : null },
      ({ statusCode, headers }) => {
        response.writeHead(statusCode, responseHeaders(headers as IncomingHttpHeaders))
        return response
      },
    )
    .catch(() => {
      if (!response.headersSent) response.writeHead(502, { 'content-length': 0 }).end()
      else response.destroy()
    })
})
server.keepAliveTimeout = 65_000
server.listen(port, '127.0.0.1', () => console.log(`undici-proxy listening on 127.0.0.1:${port}, upstream 127.0.0.1:${upstreamPort}`))
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.close()
    void pool.close()
    setTimeout(() => process.exit(0), 200).unref()
  })
}
