// One undici keep-alive pool per upstream endpoint. Its idle timeout is kept below the app's, so the
// proxy never reuses a socket the app is about to close (the classic keep-alive 503 race): undici
// follows the server's `Keep-Alive: timeout=N` hint minus a threshold, capped by our own maximum.
// An https:// endpoint's pool connects through its upstream's TLS connector (upstream/tls.ts).
import type { Dispatcher } from 'undici'
import { Pool } from './undici.js'
import { toMs } from '../core/units.js'
import type { ResolvedUpstreamConfig } from './upstream/config.js'
import type { UpstreamTls } from './upstream/tls.js'

/**
 * The pool of an https:// endpoint. undici names each request's TLS server from its Host header
 * (the client's, which the gateway forwards) and closes a connection whose name differs from the
 * next request's; every request here carries one fixed name instead, so connections are kept
 * whatever the Host. The connector decides what is sent in SNI and verified (UpstreamTls.connect).
 */
class TlsPool extends Pool {
  constructor(
    origin: string,
    options: Pool.Options,
    private readonly serverKey: string,
  ) {
    super(origin, options)
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    // `servername` is a dispatch option undici reads (lib/core/request.js) but does not declare.
    ;(options as Dispatcher.DispatchOptions & { servername?: string }).servername = this.serverKey
    return super.dispatch(options, handler)
  }
}

export function createPool(origin: string, config: ResolvedUpstreamConfig, tls?: UpstreamTls): Pool {
  const idle = toMs(config.idleTimeout)
  const options: Pool.Options = {
    connections: config.connections,
    pipelining: 1,
    keepAliveTimeout: idle,
    keepAliveMaxTimeout: idle,
    keepAliveTimeoutThreshold: 1000,
    connect: { timeout: toMs(config.connectTimeout) },
    // Our deadline layers bound the wait for headers precisely; undici's timer is only a backstop.
    headersTimeout: 0,
    bodyTimeout: toMs(config.bodyIdleTimeout),
  }
  const url = new URL(origin)
  if (url.protocol !== 'https:') return new Pool(origin, options)
  if (tls === undefined) throw new Error(`${origin}: an https endpoint needs its upstream's TLS settings`)
  return new TlsPool(origin, { ...options, connect: tls.connect }, tls.serverName ?? url.hostname)
}
