// Token buckets by key: each holds up to `burst` tokens and refills at `rate` per second; a request
// takes one. Buckets live in an LRU bounded to `maxKeys`, so a flood of distinct clients costs
// bounded memory (an evicted client comes back with a full bucket: size maxKeys above the number
// of clients active within a refill period).
import { LRUCache } from 'lru-cache'

interface Bucket {
  tokens: number
  /** ms timestamp of the last refill. */
  at: number
}

export class TokenBuckets {
  private readonly buckets: LRUCache<string, Bucket>
  /** Whole tokens left after the last `take()`, and seconds until the bucket is full again. */
  remaining = 0
  resetSeconds = 0
  /** Seconds until a token is available, after a refused `take()`. */
  retryAfterSeconds = 0

  constructor(readonly rate: number, readonly burst: number, maxKeys: number) {
    this.buckets = new LRUCache({ max: maxKeys })
  }

  /** Takes a token for `key` when one is left; fills `remaining`, `resetSeconds` and `retryAfterSeconds`. */
  take(key: string, now = Date.now()): boolean {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      bucket = { tokens: this.burst, at: now }
      this.buckets.set(key, bucket)
    } else if (now > bucket.at) {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.rate)
      bucket.at = now
    }
    const allowed = bucket.tokens >= 1
    if (allowed) bucket.tokens -= 1
    this.remaining = Math.floor(bucket.tokens)
    this.resetSeconds = Math.ceil((this.burst - bucket.tokens) / this.rate)
    this.retryAfterSeconds = allowed ? 0 : Math.max(1, Math.ceil((1 - bucket.tokens) / this.rate))
    return allowed
  }

  get size(): number {
    return this.buckets.size
  }
}
