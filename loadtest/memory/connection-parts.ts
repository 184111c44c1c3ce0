// The parts of a node:http server's cost per idle keep-alive connection, for loadtest/memory/run.ts:
// a node:net server that answers each request with fixed bytes (`socket`: the TCP handle and the
// net.Socket alone), and the same server holding one of node's native HTTP parsers per connection,
// made and initialized as node:http makes one at each connection (`parser`). With the floor's
// node:http server measured the same way, the difference between the three says what node:http's
// own JavaScript objects add. Nothing here parses: the answer is the same bytes whatever was sent.
// usage: node dist/loadtest/memory/connection-parts.js socket|parser PORT      (127.0.0.1 only)
import { createServer, type Socket } from 'node:net'
import { createRequire } from 'node:module'

/** What node:http uses of node's internal `_http_common` (lib/_http_common.js): its parser pool. */
interface HttpCommon {
  readonly HTTPParser: { readonly REQUEST: number }
  readonly parsers: { alloc(): { initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void } }
}

const [mode, portArgument] = process.argv.slice(2)
const port = Number(portArgument)
if ((mode !== 'socket' && mode !== 'parser') || !Number.isInteger(port) || port <= 0) {
  console.error('usage: connection-parts.js socket|parser PORT')
  process.exit(2)
}

// The bench upstream's answer: 1024 bytes of body (loadtest/bench/upstream.ts), as the client expects.
const BODY = Buffer.alloc(1024, 'x')
const ANSWER = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${BODY.length}\r\nconnection: keep-alive\r\n\r\n`), BODY])

const httpCommon = mode === 'parser' ? (createRequire(import.meta.url)('_http_common') as HttpCommon) : undefined
/** Each connection's parser, kept as node:http keeps it: for the socket's whole life. */
const parsers = new WeakMap<Socket, object>()

const server = createServer((socket) => {
  if (httpCommon !== undefined) {
    const parser = httpCommon.parsers.alloc()
    parser.initialize(httpCommon.HTTPParser.REQUEST, {}, 0, 0)
    parsers.set(socket, parser)
  }
  socket.on('data', () => socket.write(ANSWER))
  socket.on('error', () => socket.destroy())
})
server.listen(port, '127.0.0.1', () => console.log(`connection-parts (${mode}) listening on 127.0.0.1:${port}`))
