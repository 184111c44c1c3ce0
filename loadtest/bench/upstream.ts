// The benchmark's "app": node:http answering every request with the same 1 KiB body, keep-alive.
// usage: node dist/loadtest/bench/upstream.js PORT      (listens on 127.0.0.1 only)
import { createServer } from 'node:http'

const port = Number(process.argv[2] ?? process.env.LISTEN_PORT)
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: upstream.js PORT')
  process.exit(2)
}

const BODY = Buffer.alloc(1024, 'x')
const server = createServer((request, response) => {
  request.resume()
  response.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length })
  response.end(BODY)
})
// Longer than any proxy's idle timeout, so the proxy closes idle sockets first.
server.keepAliveTimeout = 65_000
server.headersTimeout = 66_000
server.listen(port, '127.0.0.1', () => console.log(`upstream listening on 127.0.0.1:${port}`))
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => process.exit(0))
