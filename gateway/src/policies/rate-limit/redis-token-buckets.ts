// The same token buckets, kept in Redis so every replica takes from one bucket per key: a global
// limit. Built on rate-limiter-flexible's RateLimiterRedis (key prefixing, readiness checks, the
// consumed/remaining result) with its documented `customIncrTtlLuaScript` hook carrying a
// token-bucket script instead of the default fixed window, so a global limit means exactly what a
// local one does. The script uses Redis's clock, so replicas with skewed clocks still agree.
//
// When Redis cannot answer (down, slow beyond commandTimeout, not connected yet), the decision
// falls back to the local buckets: the gateway never fails closed by accident. The fallback is
// logged on each change and visible in metrics.
import type { Logger } from 'pino'
import type { Redis } from 'ioredis'
import type { Gauge, Counter } from 'prom-client'
import type { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { requireOnUse } from '../../store/redis.js'
import type { Decision, TokenBuckets } from './token-buckets.js'

/** KEYS[1] the bucket; ARGV[1] tokens to take, ARGV[2] key lifetime in seconds. Returns {consumed, ms}. */
function tokenBucketScript(rate: number, burst: number): string {
  return `
local rate = ${rate}
local burst = ${burst}
local take = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
  at = now
end
local consumed
local ms
if tokens >= take then
  tokens = tokens - take
  consumed = burst - math.floor(tokens)
  ms = math.ceil((burst - tokens) / rate * 1000)
else
  consumed = burst + 1
  ms = math.ceil((take - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', at)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {consumed, ms}`
}

export interface GlobalBucketsMetrics {
  /** 1 while Redis answers, 0 while decisions fall back to local buckets. */
  readonly storeUp: ReturnType<Gauge<'route'>['labels']>
  readonly fallbacks: ReturnType<Counter<'route'>['labels']>
}

export class RedisTokenBuckets {
  private readonly limiter: RateLimiterRedis
  /** rate-limiter-flexible's refusal class; loaded with the limiter (see requireOnUse). */
  private readonly Refusal: typeof RateLimiterRes
  private degraded = false

  constructor(
    private readonly client: Redis,
    keyPrefix: string,
    readonly rate: number,
    readonly burst: number,
    private readonly local: TokenBuckets,
    private readonly route: string,
    private readonly log: Logger,
    private readonly metrics: GlobalBucketsMetrics,
  ) {
    const flexible = requireOnUse('rate-limiter-flexible') as typeof import('rate-limiter-flexible')
    this.Refusal = flexible.RateLimiterRes
    this.limiter = new flexible.RateLimiterRedis({
      storeClient: client,
      keyPrefix: `${keyPrefix}ratelimit:${route}`,
      points: burst,
      // Only the key's lifetime: long enough to refill a bucket, then Redis forgets it.
      duration: Math.ceil(burst / rate) + 1,
      rejectIfRedisNotReady: true,
      customIncrTtlLuaScript: tokenBucketScript(rate, burst),
    })
    // Connection state, not just the last answer: a quiet route still shows an outage.
    metrics.storeUp.set(client.status === 'ready' ? 1 : 0)
    client.on('ready', () => metrics.storeUp.set(1))
    client.on('close', () => metrics.storeUp.set(0))
  }

  async take(key: string): Promise<Decision> {
    let result: RateLimiterRes
    let allowed = true
    try {
      result = await this.limiter.consume(key)
    } catch (caught) {
      if (!(caught instanceof this.Refusal)) return this.fallBack(key, caught)
      result = caught
      allowed = false
    }
    if (this.degraded) {
      this.degraded = false
      this.log.info({ route: this.route }, 'rate limit: Redis answers again; the limit is global again')
    }
    const ms = result.msBeforeNext
    return allowed
      ? { allowed, remaining: result.remainingPoints, resetSeconds: Math.ceil(ms / 1000), retryAfterSeconds: 0 }
      : { allowed, remaining: 0, resetSeconds: Math.ceil(this.burst / this.rate), retryAfterSeconds: Math.max(1, Math.ceil(ms / 1000)) }
  }

  private fallBack(key: string, error: unknown): Decision {
    this.metrics.fallbacks.inc()
    if (!this.degraded) {
      this.degraded = true
      this.log.warn({ route: this.route, err: (error as Error).message }, 'rate limit: Redis unavailable; limiting with local buckets until it answers')
    }
    return this.local.take(key)
  }

  close(): void {
    this.client.disconnect()
  }
}
