// Upgrade (WebSocket or any other protocol) proxying through undici's `upgrade()`: the handshake
// goes through the pool of one of the upstream's endpoints with its connect settings, then bytes are piped both ways.
// (http-proxy-3 was considered: its ws pass refuses any upgrade that is not WebSocket.)
import type { Duplex } from 'node:stream'
import type { Pool } from 'undici'
import type { StreamingBody } from '../core/exchange.js'

export interface UpgradeRequest {
  readonly method: string
  readonly path: string
  readonly headers: string[]
  readonly protocol: string
  readonly signal: AbortSignal
}

function swallow(): void {}

/**
 * The upgraded connection as the 101's body: nothing to pipe (the sockets are spliced), done when
 * either side closes, so a layer holding a slot (concurrency) holds it for the connection's life.
 */
class UpgradedConnection implements StreamingBody {
  private closed = false
  private listeners: Array<() => void> = []

  constructor(private readonly client: Duplex, private readonly upstream: Duplex) {}

  pipe(): void {}

  resume(): void {}

  cancel(): void {
    this.client.destroy()
    this.upstream.destroy()
  }

  onDone(listener: () => void): void {
    if (this.closed) listener()
    else this.listeners.push(listener)
  }

  readonly close = (): void => {
    if (this.closed) return
    this.closed = true
    this.client.destroy()
    this.upstream.destroy()
    for (const listener of this.listeners.splice(0)) listener()
  }
}

/** Performs the upstream handshake, writes the 101 to the client, and splices the two sockets. */
export async function proxyUpgrade(pool: Pool, request: UpgradeRequest, client: Duplex, head: Buffer): Promise<StreamingBody> {
  const { headers, socket: upstream } = await pool.upgrade({
    method: request.method,
    path: request.path,
    headers: request.headers,
    protocol: request.protocol,
    signal: request.signal,
  })
  let handshake = 'HTTP/1.1 101 Switching Protocols\r\n'
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    for (const item of Array.isArray(value) ? value : [value]) handshake += `${name}: ${item}\r\n`
  }
  upstream.on('error', swallow)
  client.on('error', swallow)
  const connection = new UpgradedConnection(client, upstream)
  if (client.destroyed) {
    connection.close()
    return connection
  }
  client.write(`${handshake}\r\n`)
  if (head.length > 0) upstream.write(head)
  upstream.once('close', connection.close)
  client.once('close', connection.close)
  upstream.pipe(client)
  client.pipe(upstream)
  return connection
}
