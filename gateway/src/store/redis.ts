// The Redis connection settings shared by policies that keep state across replicas (global rate
// limits now, the cache later). Each user opens its own client from these settings: a client
// carries per-user script definitions, and one slow user must not queue behind another.
import { createRequire } from 'node:module'
import { Type, type Static } from '@sinclair/typebox'
import type { Redis } from 'ioredis'
import { Duration, toMs } from '../core/units.js'

/**
 * CommonJS packages that only a config with `redis` needs (ioredis, rate-limiter-flexible), loaded
 * on first use: importing them up front costs every gateway about 7 MiB of RSS and 140 ms of startup.
 */
export const requireOnUse = createRequire(import.meta.url)

export const RedisConfig = Type.Object(
  {
    url: Type.String({ pattern: '^rediss?://', errorMessage: 'expected a redis:// or rediss:// URL', description: 'e.g. "redis://127.0.0.1:6379/0".' }),
    keyPrefix: Type.Optional(Type.String({ description: 'Prefix of every key Waypost writes. Default "waypost:".' })),
    commandTimeout: Type.Optional(Duration),
    connectTimeout: Type.Optional(Duration),
  },
  {
    additionalProperties: false,
    description:
      'Redis for state shared by replicas. `commandTimeout` (default 100ms): a slower answer counts as Redis being down, and the policy falls back ' +
      'to local state; `connectTimeout` default 1s. Reconnects run in the background.',
  },
)
export type RedisConfig = Static<typeof RedisConfig>

/**
 * A client that fails fast instead of queueing: no offline queue and no per-command retries, so a
 * Redis outage costs each request one quick error (and a local fallback), never a wait.
 */
export function createRedisClient(config: RedisConfig, onError: (error: Error) => void): Redis {
  const { Redis: RedisClient } = requireOnUse('ioredis') as typeof import('ioredis')
  const client = new RedisClient(config.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: toMs(config.commandTimeout ?? '100ms'),
    connectTimeout: toMs(config.connectTimeout ?? '1s'),
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  })
  // Without a listener an unreachable Redis would be an unhandled 'error' event: a crash.
  client.on('error', onError)
  return client
}

export function keyPrefixOf(config: RedisConfig): string {
  return config.keyPrefix ?? 'waypost:'
}
