// OAuth 2.0 token introspection (RFC 7662) with oauth4webapi: the gateway authenticates itself to
// the endpoint, active answers are reused until the token's `exp` (at most `cacheMax`), inactive
// ones briefly, and concurrent lookups of one token share a single request. Tokens are kept only
// as SHA-256 hashes (cache keys), never as they came.
import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import {
  allowInsecureRequests,
  ClientSecretBasic,
  ClientSecretPost,
  introspectionRequest,
  processIntrospectionResponse,
  type AuthorizationServer,
  type Client,
  type ClientAuth,
  type IntrospectionResponse,
} from 'oauth4webapi'
import type { Logger } from 'pino'
import type { Clock } from '../../core/clock.js'

export type Introspected =
  | { readonly kind: 'active'; readonly response: IntrospectionResponse }
  | { readonly kind: 'inactive' }
  | { readonly kind: 'unavailable'; readonly error: string }

export interface IntrospectorOptions {
  readonly url: string
  readonly issuer: string | undefined
  readonly clientId: string
  readonly clientSecret: string
  readonly clientAuth: 'basic' | 'post'
  readonly cacheMaxMs: number
  readonly negativeCacheMs: number
  readonly cacheEntries: number
  readonly timeoutMs: number
  readonly clock: Clock
  readonly log: Logger
}

interface Cached {
  readonly answer: Introspected
  readonly until: number
}

const INACTIVE: Introspected = { kind: 'inactive' }

export class Introspector {
  private readonly server: AuthorizationServer
  private readonly client: Client
  private readonly auth: ClientAuth
  private readonly cache: LRUCache<string, Cached>
  private readonly inFlight = new Map<string, Promise<Introspected>>()
  /** Requests sent to the endpoint so far (tests read it). */
  requests = 0

  constructor(private readonly options: IntrospectorOptions) {
    this.server = { issuer: options.issuer ?? new URL(options.url).origin, introspection_endpoint: options.url }
    this.client = { client_id: options.clientId }
    this.auth = options.clientAuth === 'post' ? ClientSecretPost(options.clientSecret) : ClientSecretBasic(options.clientSecret)
    this.cache = new LRUCache({ max: options.cacheEntries })
  }

  lookup(token: string): Promise<Introspected> {
    const key = createHash('sha256').update(token).digest('base64url')
    const now = this.options.clock.now()
    const cached = this.cache.get(key)
    if (cached !== undefined && cached.until > now) return Promise.resolve(cached.answer)
    const pending = this.inFlight.get(key)
    if (pending !== undefined) return pending
    const lookup = this.ask(token).then((answer) => {
      this.inFlight.delete(key)
      const until = this.cacheUntil(answer, this.options.clock.now())
      if (until !== undefined) this.cache.set(key, { answer, until })
      return answer
    })
    this.inFlight.set(key, lookup)
    return lookup
  }

  /** Active: until `exp`, at most cacheMax; inactive: negativeCache; the server down: not at all. */
  private cacheUntil(answer: Introspected, now: number): number | undefined {
    if (answer.kind === 'unavailable') return undefined
    if (answer.kind === 'inactive') return now + this.options.negativeCacheMs
    const exp = answer.response.exp
    const limit = now + this.options.cacheMaxMs
    return typeof exp === 'number' ? Math.min(limit, exp * 1000) : limit
  }

  private async ask(token: string): Promise<Introspected> {
    this.requests++
    try {
      const response = await introspectionRequest(this.server, this.client, this.auth, token, {
        signal: AbortSignal.timeout(this.options.timeoutMs),
        // Plain http only where the operator wrote an http:// URL (a sidecar's loopback server, tests).
        [allowInsecureRequests]: this.options.url.startsWith('http:'),
      })
      const result = await processIntrospectionResponse(this.server, this.client, response)
      if (!result.active) return INACTIVE
      // An "active" token past its exp is not: the server's clock or cache is behind.
      if (typeof result.exp === 'number' && result.exp * 1000 <= this.options.clock.now()) return INACTIVE
      if (typeof result.nbf === 'number' && result.nbf * 1000 > this.options.clock.now()) return INACTIVE
      return { kind: 'active', response: result }
    } catch (error) {
      const message = (error as Error).message
      this.options.log.warn({ url: this.options.url, err: message }, 'token introspection failed')
      return { kind: 'unavailable', error: message }
    }
  }
}
