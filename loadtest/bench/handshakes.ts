// New TLS connections per second: CONNECTIONS loops, each opening a TLS connection, sending one
// `GET /` with `Connection: close`, reading the answer to the end, and starting over. No session is
// ever offered, so every connection is a full handshake (wrk, reconnecting, may resume one), and the
// server's cost per connection is the handshake's plus one request's.
//
// usage: node dist/loadtest/bench/handshakes.js --port PORT [--duration 5] [--connections 50]
// Prints one JSON line (HandshakeResult) on stdout. Run it pinned to its own CPU (run.ts does).
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { connect, createSecureContext, type SecureContext } from 'node:tls'

export interface HandshakeResult {
  /** Connections that completed a handshake and got a 200, within the measured time. */
  handshakes: number
  seconds: number
  rate: number
  /** Connections that failed (handshake, socket) or got another status. */
  errors: number
  /** Connect to end of the answer, per connection, in ms. */
  p50Ms: number
  p99Ms: number
  /** What the handshakes negotiated (the first connection's). */
  protocol: string
  cipher: string
}

const REQUEST = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'

/** One connection: resolves with whether it got a 200; records what was negotiated. */
function once(port: number, context: SecureContext, negotiated: { protocol: string; cipher: string }): Promise<boolean> {
  return new Promise((resolve) => {
    // The benchmark's certificate is self-signed for 127.0.0.1: the handshake is what is measured, not trust.
    const socket = connect({ host: '127.0.0.1', port, secureContext: context, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
    let head = ''
    socket.setEncoding('latin1')
    socket.once('secureConnect', () => {
      if (negotiated.protocol === '') {
        negotiated.protocol = socket.getProtocol() ?? ''
        negotiated.cipher = socket.getCipher().name
      }
      // Not end(): that would send close_notify, after which a server may hang up before answering.
      socket.write(REQUEST)
    })
    socket.on('data', (chunk: string) => {
      if (head.length < 16) head += chunk
    })
    socket.once('end', () => {
      socket.destroy()
      resolve(head.startsWith('HTTP/1.1 200'))
    })
    socket.once('error', () => resolve(false))
    socket.once('close', () => resolve(false))
  })
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      duration: { type: 'string', default: '5' },
      connections: { type: 'string', default: '50' },
    },
  })
  if (values.port === undefined) throw new Error('--port is required')
  const port = Number(values.port)
  const durationMs = Number(values.duration) * 1000
  const connections = Number(values.connections)
  const negotiated = { protocol: '', cipher: '' }
  // One context for every connection: without it each connect builds its own (and loads the CA store),
  // which costs the generator more than the handshake itself.
  const context = createSecureContext({})
  const times: number[] = []
  let errors = 0
  const start = performance.now()
  const end = start + durationMs
  const loops = Array.from({ length: connections }, async () => {
    while (performance.now() < end) {
      const began = performance.now()
      const ok = await once(port, context, negotiated)
      const finished = performance.now()
      // A connection still open when the time is up is not counted either way.
      if (finished > end) break
      if (ok) times.push(finished - began)
      else errors++
    }
  })
  await Promise.all(loops)
  const seconds = durationMs / 1000
  times.sort((a, b) => a - b)
  const at = (p: number): number => (times.length === 0 ? NaN : times[Math.min(times.length - 1, Math.ceil(p * times.length) - 1)]!)
  const result: HandshakeResult = { handshakes: times.length, seconds, rate: times.length / seconds, errors, p50Ms: at(0.5), p99Ms: at(0.99), ...negotiated }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  },
)
