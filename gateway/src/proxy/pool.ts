// One undici keep-alive pool per upstream endpoint. Its idle timeout is kept below the app's, so the
// proxy never reuses a socket the app is about to close (the classic keep-alive 503 race): undici
// follows the server's `Keep-Alive: timeout=N` hint minus a threshold, capped by our own maximum.
import { Pool } from 'undici'
import { toMs } from '../core/units.js'
import type { ResolvedUpstreamConfig } from './upstream/config.js'

export function createPool(origin: string, config: ResolvedUpstreamConfig): Pool {
  const idle = toMs(config.idleTimeout)
  return new Pool(origin, {
    connections: config.connections,
    pipelining: 1,
    keepAliveTimeout: idle,
    keepAliveMaxTimeout: idle,
    keepAliveTimeoutThreshold: 1000,
    connect: { timeout: toMs(config.connectTimeout) },
    // Our deadline layers bound the wait for headers precisely; undici's timer is only a backstop.
    headersTimeout: 0,
    bodyTimeout: toMs(config.bodyIdleTimeout),
  })
}
