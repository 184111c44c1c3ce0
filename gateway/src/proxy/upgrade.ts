// Upgrade (WebSocket or any other protocol) proxying through undici's `upgrade()`: the handshake
// goes through the pool of one of the upstream's endpoints with its connect settings, then bytes are piped both ways.
// (http-proxy-3 was considered: its ws pass refuses any upgrade that is not WebSocket.)
import type { Duplex } from 'node:stream'
import type { Pool } from 'undici'

export interface UpgradeRequest {
  readonly method: string
  readonly path: string
  readonly headers: string[]
  readonly protocol: string
  readonly signal: AbortSignal
}

function swallow(): void {}

/** Performs the upstream handshake, writes the 101 to the client, and splices the two sockets. */
export async function proxyUpgrade(pool: Pool, request: UpgradeRequest, client: Duplex, head: Buffer): Promise<void> {
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
  if (client.destroyed) {
    upstream.destroy()
    return
  }
  client.write(`${handshake}\r\n`)
  if (head.length > 0) upstream.write(head)
  const closeBoth = (): void => {
    client.destroy()
    upstream.destroy()
  }
  upstream.once('close', closeBoth)
  client.once('close', closeBoth)
  upstream.pipe(client)
  client.pipe(upstream)
}
