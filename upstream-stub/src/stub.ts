// A controllable test upstream for Waypost: httpbin-style endpoints, scripted faults, a WebSocket
// echo and request statistics, on plain node:http. Used in-process by tests and by the CLI.
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import { isIPv6, type AddressInfo, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import { matchRoute, type Exchange } from './routes.js'
import { countRequest, createState, resetStats, type StubState, type StubStats } from './state.js'
import { HttpError, sendJson } from './support.js'
import { createDevIssuer } from './dev-issuer.js'

export type { StubStats } from './state.js'

export interface StubOptions {
  /** Default 127.0.0.1. */
  host?: string
  /** Default 0: an ephemeral port. */
  port?: number
  /** How long an idle keep-alive connection is kept open. Default 5000 (Node's default). */
  keepAliveTimeoutMs?: number
}

export interface Stub {
  readonly url: string
  readonly port: number
  readonly host: string
  readonly server: http.Server
  readonly stats: StubStats
  resetStats(): void
  /** Stops listening and destroys every connection (hung requests and WebSockets included). */
  close(): Promise<void>
}

const noop = (): void => {}

export async function startStub(options: StubOptions = {}): Promise<Stub> {
  const host = options.host ?? '127.0.0.1'
  const state = createState()
  state.issuer = await createDevIssuer()
  const sockets = new Set<Socket>()
  const connectionIds = new WeakMap<object, number>()
  let lastConnectionId = 0

  const server = http.createServer()
  server.keepAliveTimeout = options.keepAliveTimeoutMs ?? 5000
  // The stub must not impose its own deadline on slow uploads; tests decide when to give up.
  server.requestTimeout = 0
  const wss = new WebSocketServer({ noServer: true })

  server.on('connection', (socket: Socket) => {
    // Never reset by resetStats, so x-stub-conn stays unique for the stub's lifetime.
    connectionIds.set(socket, ++lastConnectionId)
    state.stats.connections += 1
    sockets.add(socket)
    socket.on('error', noop)
    socket.once('close', () => sockets.delete(socket))
  })
  const connectionId = (socket: object): number => connectionIds.get(socket) ?? 0
  server.on('request', (req: IncomingMessage, res: ServerResponse) => handleRequest(state, connectionId(req.socket), req, res))
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => handleUpgrade(state, wss, connectionId(socket), req, socket, head))
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    headers.push(`x-stub-conn: ${connectionId(req.socket)}`)
    const requestId = req.headers['x-request-id']
    if (requestId !== undefined) headers.push(`x-request-id: ${requestId}`)
  })

  await listen(server, options.port ?? 0, host)
  const port = (server.address() as AddressInfo).port
  const url = `http://${isIPv6(host) ? `[${host}]` : host}:${port}`
  state.issuer.origin = url
  let closing: Promise<void> | undefined
  return {
    url,
    port,
    host,
    server,
    stats: state.stats,
    resetStats: () => resetStats(state.stats),
    close: () => (closing ??= closeAll(server, wss, sockets)),
  }
}

function listen(server: http.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

async function closeAll(server: http.Server, wss: WebSocketServer, sockets: Set<Socket>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  for (const client of wss.clients) client.terminate()
  wss.close()
  // Destroying the sockets also aborts every pending handler (their signals fire on response close).
  for (const socket of sockets) socket.destroy()
  await closed
}

function handleRequest(state: StubState, connectionId: number, req: IncomingMessage, res: ServerResponse): void {
  // A client that disconnects makes these emit errors; the handlers learn about it through `signal`.
  req.on('error', noop)
  res.on('error', noop)
  res.setHeader('x-stub-conn', String(connectionId))
  const requestId = req.headers['x-request-id']
  if (requestId !== undefined) res.setHeader('x-request-id', requestId)

  const url = parseTarget(req.url)
  if (url === undefined) return sendJson(res, 400, { error: `invalid request target ${JSON.stringify(req.url)}` })
  const { route, params } = matchRoute(req.method ?? 'GET', url.pathname)
  if (route.counted !== false) countRequest(state.stats, url.pathname, res)
  const controller = new AbortController()
  res.once('close', () => controller.abort())
  void run(route.handle, { req, res, url, params, signal: controller.signal, state })
}

/** Origin-form targets get a dummy origin prepended, so `//x/y` stays a path instead of naming a host. */
function parseTarget(target: string | undefined): URL | undefined {
  try {
    return target?.startsWith('/') === true ? new URL(`http://stub${target}`) : new URL(target ?? '')
  } catch {
    return undefined
  }
}

async function run(handle: (exchange: Exchange) => void | Promise<void>, exchange: Exchange): Promise<void> {
  try {
    await handle(exchange)
  } catch (error) {
    answerError(exchange.res, error)
  }
}

function answerError(res: ServerResponse, error: unknown): void {
  // Mid-body failures and departed clients: there is no way left to report anything.
  if (res.headersSent || res.destroyed) {
    res.destroy()
    return
  }
  if (error instanceof HttpError) sendJson(res, error.status, { error: error.message })
  else sendJson(res, 500, { error: error instanceof Error ? error.message : String(error) })
}

function handleUpgrade(state: StubState, wss: WebSocketServer, connectionId: number, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', noop)
  const path = parseTarget(req.url)?.pathname ?? ''
  countRequest(state.stats, path)
  if (!path.startsWith('/ws') || req.headers.upgrade?.toLowerCase() !== 'websocket') {
    refuseUpgrade(socket, connectionId)
    return
  }
  // handleUpgrade answers malformed handshakes (bad key, version) with a 400 by itself.
  wss.handleUpgrade(req, socket, head, echoMessages)
}

function echoMessages(ws: WebSocket): void {
  ws.on('error', noop)
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
}

function refuseUpgrade(socket: Duplex, connectionId: number): void {
  const body = 'upgrade is only supported for WebSocket on /ws paths\n'
  const head = `HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-stub-conn: ${connectionId}\r\n\r\n`
  socket.end(head + body, () => socket.destroy())
}
