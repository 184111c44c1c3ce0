// Token buckets by key: each holds up to `burst` tokens and refills at `rate` per second; a request
// takes one. Buckets live in an LRU bounded to `maxKeys`, so a flood of distinct clients costs
// bounded memory (an evicted client comes back with a full bucket: size maxKeys above the number
// of clients active within a refill period).
import { LRUCache } from 'lru-cache'

/** One request's answer from a bucket. */
export interface Decision {
  readonly allowed: boolean
  /** Whole tokens left. */
  readonly remaining: number
  /** Seconds until the bucket is full again. */
  readonly resetSeconds: number
  /** Seconds until a token is available (0 when allowed). */
  readonly retryAfterSeconds: number
}

interface Bucket {
  tokens: number
  /** ms timestamp of the last refill. */
  at: number
}

export class TokenBuckets {
  private readonly buckets: LRUCache<string, Bucket>

  constructor(readonly rate: number, readonly burst: number, maxKeys: number) {
    this.buckets = new LRUCache({ max: maxKeys })
  }

  /** Takes a token for `key` when one is left. */
  take(key: string, now = Date.now()): Decision {
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
    return {
      allowed,
      remaining: Math.floor(bucket.tokens),
      resetSeconds: Math.ceil((this.burst - bucket.tokens) / this.rate),
      retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil((1 - bucket.tokens) / this.rate)),
    }
  }

  get size(): number {
    return this.buckets.size
  }
}
