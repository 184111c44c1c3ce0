// What one client may hold (listen.clients). Request bodies stream upstream and responses stream
// back, so a client that sends or reads slowly holds an upstream socket the whole time, and nothing
// upstream can tell it is being starved. The guard cuts off transfers the client does not keep up
// (idle for `bodyIdleTimeout`, or slower than `bodyMinRate` once that has passed) and caps the
// connections and in-flight exchanges one address may have.
//
// On the hot path it costs nothing for a request without a body whose response fits in the socket's
// buffers: a transfer is watched only while the gateway waits on the client (an upload not yet
// complete, a response write the client has not drained), and one timer sweeps them all.
import type { Socket } from 'node:net'
import type { ClientLimits } from '../config/compile.js'

const REFUSED_BODY = '429 client-connection-limit route=- upstream=-\n'
const REFUSED_ANSWER =
  'HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n' +
  `content-length: ${REFUSED_BODY.length}\r\nx-waypost-reason: client-connection-limit route=- upstream=-\r\n\r\n${REFUSED_BODY}`

/** How often the watched transfers are checked; body timeouts are this precise. */
const SWEEP_MS = 250

/** One direction of one exchange's body while the gateway waits on the client for it. */
export abstract class ClientTransfer {
  /** Time the client is accountable for, in ms. */
  private accountableMs = 0
  private lastSweepAt: number
  private lastProgressAt: number
  private lastBytes: number
  private readonly bytesAtStart: number

  constructor(
    protected readonly socket: Socket,
    private readonly limits: ClientLimits,
  ) {
    this.lastSweepAt = this.lastProgressAt = performance.now()
    this.lastBytes = this.bytesAtStart = this.bytes()
  }

  /** Bytes moved so far in this direction (a socket counter). */
  protected abstract bytes(): number
  /** Whether the gateway's own side is what holds the transfer up (an upstream that reads slowly). */
  protected abstract ourSideBehind(): boolean
  /** Ends the exchange as too slow. */
  abstract cut(): void

  /** Whether, as of `now`, the client has failed to keep up. */
  tooSlow(now: number): boolean {
    const elapsed = now - this.lastSweepAt
    this.lastSweepAt = now
    const bytes = this.bytes()
    if (bytes !== this.lastBytes) {
      this.lastBytes = bytes
      this.lastProgressAt = now
    }
    if (this.ourSideBehind()) {
      this.lastProgressAt = now // waiting on us: the client is not accountable for this time
      return false
    }
    this.accountableMs += elapsed
    const limits = this.limits
    if (now - this.lastProgressAt > limits.bodyIdleMs) return true
    if (limits.bodyMinRate === 0) return false
    // mod_reqtimeout's rule: the grace period, plus one second for each `bodyMinRate` bytes moved.
    return this.accountableMs > limits.bodyIdleMs + ((bytes - this.bytesAtStart) * 1000) / limits.bodyMinRate
  }
}

/** The transfers being watched, the connections and exchanges in flight per address. */
export class ClientGuard {
  private readonly watched = new Set<ClientTransfer>()
  private timer: NodeJS.Timeout | undefined
  private readonly connections = new Map<string, number>()
  private readonly exchanges = new Map<string, number>()
  /** Connections answered 429 for their address's cap: whatever they send is never proxied. */
  private readonly refused = new WeakSet<Socket>()

  watch(transfer: ClientTransfer): void {
    this.watched.add(transfer)
    this.timer ??= setInterval(this.sweep, SWEEP_MS).unref()
  }

  unwatch(transfer: ClientTransfer): void {
    this.watched.delete(transfer)
  }

  /** Counts a new connection; false when its address already holds `limit` (0: no cap). */
  connectionOpened(address: string, limit: number): boolean {
    return take(this.connections, address, limit)
  }

  /** Answers a connection over its address's cap with a 429 and closes it. */
  refuse(socket: Socket): void {
    this.refused.add(socket)
    socket.end(REFUSED_ANSWER)
    // A client that never closes its side is not kept waiting on.
    socket.setTimeout(5000, () => socket.destroy())
  }

  isRefused(socket: Socket): boolean {
    return this.refused.has(socket)
  }

  connectionClosed(address: string): void {
    give(this.connections, address)
  }

  /** Counts an exchange in flight for a client; false when it already holds `limit` (0: no cap). */
  exchangeStarted(address: string, limit: number): boolean {
    return take(this.exchanges, address, limit)
  }

  exchangeEnded(address: string): void {
    give(this.exchanges, address)
  }

  /** What `GET /clients` could show, and what tests read: addresses and their counts. */
  snapshot(): { connections: Record<string, number>; exchanges: Record<string, number> } {
    return { connections: Object.fromEntries(this.connections), exchanges: Object.fromEntries(this.exchanges) }
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  private readonly sweep = (): void => {
    const now = performance.now()
    for (const transfer of this.watched) {
      if (!transfer.tooSlow(now)) continue
      this.watched.delete(transfer)
      transfer.cut()
    }
    if (this.watched.size === 0) this.stop()
  }
}

function take(counts: Map<string, number>, address: string, limit: number): boolean {
  const held = counts.get(address) ?? 0
  if (limit > 0 && held >= limit) return false
  counts.set(address, held + 1)
  return true
}

function give(counts: Map<string, number>, address: string): void {
  const held = counts.get(address) ?? 0
  if (held <= 1) counts.delete(address)
  else counts.set(address, held - 1)
}
