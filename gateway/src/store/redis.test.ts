import { createRequire } from 'node:module'
import t from 'tap'

const loaded = (): string[] => Object.keys(createRequire(import.meta.url).cache).filter((path) => /\/node_modules\/(ioredis|rate-limiter-flexible)\//.test(path))

t.test('the Redis client libraries load only when a Redis client is made', async (t) => {
  // Everything `waypost run` imports, rate limits included.
  await import('../server/gateway.js')
  await import('../config/load.js')
  await import('../policies/rate-limit/rate-limit.js')
  t.same(loaded(), [], 'nothing of ioredis or rate-limiter-flexible after importing the gateway')

  const { createRedisClient } = await import('./redis.js')
  // Port 1 on loopback: refused at once; the client is closed before it retries.
  const client = createRedisClient({ url: 'redis://127.0.0.1:1' }, () => {})
  client.disconnect()
  t.ok(loaded().some((path) => path.includes('/ioredis/')), 'ioredis is loaded for the first client')
})
