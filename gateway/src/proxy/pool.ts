// One undici keep-alive pool per upstream. Its idle timeout is kept below the app's, so the proxy
// never reuses a socket the app is about to close (the classic keep-alive 503 race): undici
// follows the server's `Keep-Alive: timeout=N` hint minus a threshold, capped by our own maximum.
import { Pool } from 'undici'
import { Type, type Static } from '@sinclair/typebox'
import { Duration, toMs } from '../config/units.js'

export const UpstreamConfig = Type.Object(
  {
    url: Type.String({ description: 'The upstream origin, e.g. "http://127.0.0.1:3000" (no path).', examples: ['http://127.0.0.1:3000'] }),
    connections: Type.Optional(Type.Integer({ minimum: 1, description: 'Most sockets open to this upstream. Default 128.' })),
    idleTimeout: Type.Optional(Duration),
    connectTimeout: Type.Optional(Duration),
    bodyIdleTimeout: Type.Optional(Duration),
  },
  {
    additionalProperties: false,
    description:
      'An upstream: `idleTimeout` (default 4s) must stay below the app\'s keep-alive timeout (Node\'s default is 5s); ' +
      '`connectTimeout` default 5s; `bodyIdleTimeout` (default 5m) is the longest silence allowed while a body streams.',
  },
)
export type UpstreamConfig = Static<typeof UpstreamConfig>

export function createPool(config: UpstreamConfig): Pool {
  const idle = toMs(config.idleTimeout ?? '4s')
  return new Pool(config.url, {
    connections: config.connections ?? 128,
    pipelining: 1,
    keepAliveTimeout: idle,
    keepAliveMaxTimeout: idle,
    keepAliveTimeoutThreshold: 1000,
    connect: { timeout: toMs(config.connectTimeout ?? '5s') },
    // Our deadline layers bound the wait for headers precisely; undici's timer is only a backstop.
    headersTimeout: 0,
    bodyTimeout: toMs(config.bodyIdleTimeout ?? '5m'),
  })
}
