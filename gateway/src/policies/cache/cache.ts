// A shared HTTP cache (RFC 9111) in front of the upstream: fresh responses answer from memory,
// stale ones are revalidated with a conditional request, and stale-while-revalidate /
// stale-if-error (RFC 5861) hide a slow or failing upstream. It sits right inside the request
// timeout, so hits skip the concurrency limit, the breaker and retries, and waiting for another
// request's miss still counts against the deadline.
//
// Stampede protection uses our own in-flight map (one pending promise per URI), not lru-cache's
// fetch(): fetch() coalesces on a promise of the finished value, so the first client would wait
// for the whole body before its first byte. Here the first client streams the body as it arrives
// (teed into memory by CapturingBody) and the others wait for it to be stored, then answer from it.
import { Type, type Static } from '@sinclair/typebox'
import { duration, size, toBytes, toMs } from '../../core/units.js'
import { pendingCount, sharedCounter, sharedGauge } from '../../telemetry/metrics.js'
import { endToEndHeaders } from '../../proxy/headers.js'
import { DeadlineExceeded, discardResponse, ExchangeSignal, localResponse, newExchangeRecord, onResponseDone, type AbortListener, type Exchange, type ProxyRequest, type ProxyResponse, type ResponseHeaders, type Upstream } from '../../core/exchange.js'
import { definePolicy, type Deps } from '../policy.js'
import type { Defaulted } from '../../core/schema-defaults.js'
import { NO_DIRECTIVES, parseCacheControl, type CacheControl } from './cache-control.js'
import { correctedInitialAge, currentAge, freshnessLifetime, headerText, notStorableBecause, type FreshnessSettings } from './freshness.js'
import { parseHttpDate } from '../../core/http-date.js'
import { CacheStore, entrySize, type StoredResponse } from './store.js'
import { purgeEndpoint } from './purge.js'
import type { BlockList } from 'node:net'
import { addressList, inList, parseCidr } from '../../core/cidr.js'
import { CapturingBody } from './capture.js'
import { varyValue } from './vary.js'
import { byteRange, ifRangeHolds } from './range.js'
import { SURROGATE_CAPABILITY } from './surrogate-control.js'
import { DEFAULT_TARGETED_HEADER, responseDirectives, stripOurControls } from './targeted.js'

/** A field name (RFC 9110 §5.1: a token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** Fields that cannot be a targeted field: the cache reads them with other rules. */
const NOT_TARGETED = new Set(['cache-control', 'surrogate-control', 'expires', 'pragma', 'age', 'date', 'vary'])

export const CacheConfig = Type.Object(
  {
    maxSize: Type.Optional(size({ default: '64MiB', description: 'Bounds the stored bytes, and again the copies still being made.' })),
    maxObjectSize: Type.Optional(size({ default: '1MiB', description: 'Bodies over this stream through unstored.' })),
    maxTtl: Type.Optional(duration({ default: '24h', description: 'Caps any freshness lifetime.' })),
    defaultTtl: Type.Optional(duration({ description: 'Freshness where the RFC allows a heuristic and the response gives none.' })),
    staleWhileRevalidate: Type.Optional(duration({ default: 0, description: 'For responses that do not say: how long a stale entry is served while it is refreshed in the background.' })),
    staleIfError: Type.Optional(duration({ default: 0, description: 'For responses that do not say: how long a stale entry is served when the upstream fails.' })),
    allowAuthorized: Type.Optional(Type.Boolean({ default: false, description: 'Store answers to requests with Authorization even when the response does not allow it (RFC 9111 §3.5).' })),
    purge: Type.Optional(Type.Boolean({ default: false, description: 'Accept the PURGE method on this route: it drops the stored responses of the request URI. Only operators may: callers on loopback, presenting the admin token (admin.token), or in `purgeFrom`; others get 401/403.' })),
    purgeFrom: Type.Optional(Type.Array(Type.String(), { default: [], description: 'Client addresses (CIDRs) that may PURGE without the admin token, e.g. the CI runners that deploy.' })),
    tagHeader: Type.Optional(Type.String({ minLength: 1, default: 'Surrogate-Key', description: 'Response header listing the entry\'s tags, space-separated, for purging by tag.' })),
    targetedHeader: Type.Optional(
      Type.String({
        pattern: HEADER_NAME.source,
        default: DEFAULT_TARGETED_HEADER,
        description: 'Response header with cache directives for this cache alone (RFC 9213 targeted field): when valid and non-empty it replaces Cache-Control, Expires and Surrogate-Control here, and is removed before the response goes on. Behind a CDN that reads CDN-Cache-Control, name a field of your own so that CDN-Cache-Control passes through.',
      }),
    ),
    keyHeaders: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'Request headers added to the cache key, as if every response varied on them.' })),
  },
  { additionalProperties: false, description: 'A shared HTTP cache (RFC 9111) for GET and HEAD.' },
)
export type CacheConfig = Static<typeof CacheConfig>
type ResolvedCacheConfig = Defaulted<CacheConfig, 'maxSize' | 'maxObjectSize' | 'maxTtl' | 'staleWhileRevalidate' | 'staleIfError' | 'allowAuthorized' | 'purge' | 'purgeFrom' | 'tagHeader' | 'targetedHeader' | 'keyHeaders'>

interface CacheSettings extends FreshnessSettings {
  readonly maxSize: number
  readonly maxObjectSize: number
  readonly staleWhileRevalidateS: number
  readonly staleIfErrorS: number
  readonly purge: boolean
  readonly tagHeader: string
  /** Lower case. */
  readonly targetedHeader: string
  readonly keyHeaders: readonly string[]
}

function settingsOf(config: ResolvedCacheConfig): CacheSettings {
  return {
    maxSize: toBytes(config.maxSize),
    maxObjectSize: toBytes(config.maxObjectSize),
    maxTtlS: toMs(config.maxTtl) / 1000,
    defaultTtlS: config.defaultTtl === undefined ? undefined : toMs(config.defaultTtl) / 1000,
    staleWhileRevalidateS: toMs(config.staleWhileRevalidate) / 1000,
    staleIfErrorS: toMs(config.staleIfError) / 1000,
    allowAuthorized: config.allowAuthorized,
    purge: config.purge,
    tagHeader: config.tagHeader.toLowerCase(),
    targetedHeader: config.targetedHeader.toLowerCase(),
    keyHeaders: config.keyHeaders.map((name) => name.toLowerCase()),
  }
}

const CACHEABLE_METHODS = new Set(['GET', 'HEAD'])
/** Methods that never invalidate (RFC 9110 §9.2.1 safe methods). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
const CONDITIONAL_HEADERS = new Set(['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range'])
/** Fields a 304 must not change in the stored response (RFC 9111 §3.2, and the cache-tests suite). */
const NOT_UPDATED_BY_304 = new Set(['content-length', 'content-encoding', 'content-range', 'content-md5', 'etag', 'age'])
/** A background revalidation has no client deadline of its own: this one keeps it from hanging forever. */
const BACKGROUND_TIMEOUT_MS = 30_000
/** Longest a request waits on another one's miss for the same URI (nginx's proxy_cache_lock_timeout is 5 s too). */
const LEADER_WAIT_MS = 5_000
/**
 * How the cache answered a GET or HEAD: from the store (`hit`; stale, by what allowed it:
 * `stale-while-revalidate`, `stale-if-error`, the client's `max-stale`; `revalidated` by a 304), or
 * not (`miss`: it went upstream, whatever came back, or failed); `bypass` for other methods.
 */
const RESULTS = ['hit', 'stale-while-revalidate', 'stale-if-error', 'max-stale', 'revalidated', 'miss', 'bypass'] as const
type Result = (typeof RESULTS)[number]

/** What the cache knows about one request before it looks anything up. */
interface Lookup {
  readonly uri: string
  readonly path: string
  readonly host: string
  readonly cacheControl: CacheControl
}

function requestCacheControl(request: ProxyRequest): CacheControl {
  const headers = request.incoming.headers
  const cacheControl = headers['cache-control']
  // Pragma: no-cache counts only without Cache-Control (RFC 9111 §5.4).
  if (cacheControl === undefined && headers.pragma !== undefined && /no-cache/i.test(headerText(headers.pragma)!)) return parseCacheControl('no-cache')
  return parseCacheControl(cacheControl)
}

/**
 * The key is the client's own target, never the path after a route's rewrite: two targets that
 * rewrite to one upstream path are still different resources to their clients, and a rewritten
 * path must not collide with a client target that happens to be spelled the same.
 */
function lookupOf(request: ProxyRequest): Lookup {
  // The request's one authority and its normalized target: what the router and the upstream saw.
  const host = request.authority.toLowerCase()
  const path = request.target
  return { uri: host + path, path, host, cacheControl: requestCacheControl(request) }
}

function varyNamesOf(headers: ResponseHeaders, keyHeaders: readonly string[]): string[] {
  const vary = headerText(headers.vary)
  const names = vary === undefined ? [] : vary.split(',').map((name) => name.trim().toLowerCase()).filter((name) => name !== '')
  for (const name of keyHeaders) if (!names.includes(name)) names.push(name)
  return names.sort()
}

/**
 * A request header as it went upstream (names compared case-insensitively, repeats joined): Vary
 * and keyHeaders are about what the origin saw, not what the client sent, since headers the client
 * names in Connection are dropped and forwarding headers replaced on the way.
 */
function sentHeader(request: ProxyRequest, name: string): string | undefined {
  const headers = request.headers
  let value: string | undefined
  for (let i = 0; i < headers.length; i += 2) {
    const header = headers[i]!
    if (header.length === name.length && header.toLowerCase() === name) value = value === undefined ? headers[i + 1]! : `${value},${headers[i + 1]!}`
  }
  return value
}

function matchesVary(entry: StoredResponse, request: ProxyRequest): boolean {
  for (let i = 0; i < entry.varyNames.length; i++) if (varyValue(entry.varyNames[i]!, sentHeader(request, entry.varyNames[i]!)) !== entry.varyValues[i]) return false
  return true
}

/** Weak comparison of entity tags (RFC 9110 §8.8.3.2), as If-None-Match uses. */
function etagMatches(condition: string, etag: string | undefined): boolean {
  if (etag === undefined) return false
  if (condition.trim() === '*') return true
  const opaque = etag.replace(/^W\//, '')
  return condition.split(',').some((tag) => tag.trim().replace(/^W\//, '') === opaque)
}

/** Whether the client's own conditional headers let us answer 304 from this entry (RFC 9110 §13.2.2). */
function clientHasCurrentCopy(request: ProxyRequest, entry: StoredResponse): boolean {
  const headers = request.incoming.headers
  const ifNoneMatch = headers['if-none-match']
  if (ifNoneMatch !== undefined) return etagMatches(ifNoneMatch, headerText(entry.headers.etag))
  // An If-Modified-Since that is not one valid HTTP-date is ignored (RFC 9110 §13.1.3).
  const since = parseHttpDate(headers['if-modified-since'])
  if (Number.isNaN(since)) return false
  return lastModifiedOf(entry) <= since
}

/**
 * When the stored response was last modified, as RFC 9111 §4.3.2 compares it with If-Modified-Since:
 * its Last-Modified, else its Date, else when it was received.
 */
function lastModifiedOf(entry: StoredResponse): number {
  const lastModified = parseHttpDate(entry.headers['last-modified'])
  if (!Number.isNaN(lastModified)) return lastModified
  const date = parseHttpDate(entry.headers.date)
  return Number.isNaN(date) ? entry.responseTime : date
}

/** The request headers sent upstream to revalidate `entry`: the client's conditionals replaced with ours. */
function conditionalHeaders(request: ProxyRequest, entry: StoredResponse): string[] {
  const headers: string[] = []
  const source = request.headers
  for (let i = 0; i < source.length; i += 2) if (!CONDITIONAL_HEADERS.has(source[i]!.toLowerCase())) headers.push(source[i]!, source[i + 1]!)
  const etag = headerText(entry.headers.etag)
  const lastModified = headerText(entry.headers['last-modified'])
  if (etag !== undefined) headers.push('if-none-match', etag)
  if (lastModified !== undefined) headers.push('if-modified-since', lastModified)
  return headers
}

function hasValidator(entry: StoredResponse): boolean {
  return entry.headers.etag !== undefined || entry.headers['last-modified'] !== undefined
}

/** Directives that forbid serving this entry stale (RFC 9111 §4.2.4; s-maxage implies proxy-revalidate). */
function mustRevalidate(cc: CacheControl): boolean {
  return cc.mustRevalidate || cc.proxyRevalidate || cc.sMaxAge !== undefined || cc.noCache
}

function appendCacheStatus(headers: ResponseHeaders, value: string): void {
  const prior = headerText(headers['cache-status'])
  headers['cache-status'] = prior === undefined ? value : `${prior}, ${value}`
}

/**
 * Waits for another request's miss to finish, at most LEADER_WAIT_MS (then this request goes
 * upstream itself: a leader whose client reads slowly must not hold everyone else), or rejects
 * when this exchange is aborted.
 */
function waitForLeader(pending: Promise<void>, signal: ExchangeSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason as Error)
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer)
      signal.unsubscribe(listener)
    }
    const listener: AbortListener = {
      onAbort: (reason) => {
        done()
        reject(reason as Error)
      },
    }
    const timer = setTimeout(() => {
      done()
      resolve()
    }, LEADER_WAIT_MS)
    signal.subscribe(listener)
    void pending.then(() => {
      done()
      resolve()
    })
  })
}

class ResponseCache {
  private readonly results: Record<Result, { inc(): void }>

  constructor(
    private readonly settings: CacheSettings,
    private readonly store: CacheStore,
    /** Per URI, the promise of the one request now fetching it (stampede protection). */
    private readonly pending: Map<string, Promise<void>>,
    counter: ReturnType<typeof sharedCounter<'route' | 'result'>>,
    route: string,
    /** Who may PURGE: operators (Deps.operator), and callers in `purgeFrom`. */
    private readonly operator: Deps['operator'],
    private readonly purgeFrom: BlockList | undefined,
    /** PURGEs, done or refused, are admin actions for the security log. */
    private readonly security: Deps['security'],
  ) {
    const results = {} as Record<Result, { inc(): void }>
    for (const result of RESULTS) results[result] = pendingCount(counter, route, result)
    this.results = results
  }

  /** Counts the lookup's result, and records it for the access log. */
  private count(exchange: Exchange, result: Result): void {
    this.results[result].inc()
    exchange.record.cache = result
    exchange.trace?.event('waypost.cache', { 'waypost.cache.result': result })
  }

  async handle(next: Upstream, exchange: Exchange): Promise<ProxyResponse> {
    const request = exchange.request
    const method = request.method
    // A WebSocket handshake is a GET, but never a stored resource.
    if (request.upgrade !== undefined) return next(exchange)
    if (!CACHEABLE_METHODS.has(method)) return this.passUnsafe(next, exchange)
    // Every GET and HEAD gets one result, so that the results add up to the requests: one that
    // ends without an answer from the store (only-if-cached, the upstream failed, a deadline, the
    // client left while waiting) is a miss too.
    const lookup = lookupOf(request)
    for (let waited = false; ; waited = true) {
      const now = Date.now()
      const entry = this.select(lookup.uri, request)
      if (entry !== undefined) {
        const age = currentAge(entry.initialAge, entry.responseTime, now)
        const served = this.fromStoreIfUsable(next, exchange, lookup, entry, age, waited)
        if (served !== undefined) return served
      }
      if (lookup.cacheControl.onlyIfCached) {
        this.count(exchange, 'miss')
        return localResponse(504, 'cache-only-if-cached', exchange, { 'cache-status': 'waypost; fwd=miss; detail=only-if-cached' })
      }
      // HEAD never fills the cache (it has no body to keep), so it does not lead or wait.
      if (method === 'HEAD') return this.forward(next, exchange, lookup, entry, fwdOf(entry, lookup, this.store))
      const pending = this.pending.get(lookup.uri)
      if (pending === undefined || waited) {
        const release = this.lead(lookup.uri)
        return this.forward(next, exchange, lookup, entry, fwdOf(entry, lookup, this.store), release)
      }
      try {
        await waitForLeader(pending, exchange.signal)
      } catch (error) {
        this.count(exchange, 'miss')
        throw error
      }
    }
  }

  /** The newest stored variant whose Vary fields match the request. */
  private select(uri: string, request: ProxyRequest): StoredResponse | undefined {
    const variants = this.store.variants(uri)
    if (variants === undefined) return undefined
    let chosen: StoredResponse | undefined
    for (const entry of variants) if (matchesVary(entry, request)) chosen = entry
    return chosen
  }

  /** A hit (fresh, or stale where allowed) or undefined when the upstream must be asked. */
  private fromStoreIfUsable(next: Upstream, exchange: Exchange, lookup: Lookup, entry: StoredResponse, age: number, collapsed: boolean): ProxyResponse | undefined {
    const requested = lookup.cacheControl
    const stored = entry.cacheControl
    if (requested.noCache || stored.noCache) return undefined
    if (requested.maxAge !== undefined && age > requested.maxAge) return undefined
    const ttl = entry.lifetime - age
    if (requested.minFresh !== undefined && ttl < requested.minFresh) return undefined
    if (ttl > 0) {
      this.count(exchange, 'hit')
      return this.answer(exchange, entry, age, collapsed ? 'fwd=uri-miss; collapsed' : `hit; ttl=${Math.floor(ttl)}`)
    }
    if (mustRevalidate(stored)) return undefined
    const staleness = -ttl
    if (requested.maxStale !== undefined && staleness <= requested.maxStale) {
      this.count(exchange, 'max-stale')
      return this.answer(exchange, entry, age, `hit; ttl=${Math.floor(ttl)}; detail=max-stale`)
    }
    const window = stored.staleWhileRevalidate ?? this.settings.staleWhileRevalidateS
    if (staleness <= window) {
      this.count(exchange, 'stale-while-revalidate')
      this.revalidateInBackground(next, exchange, lookup, entry)
      // Not forwarded: the refresh is the gateway's own request, so RFC 9211 calls this a hit (a negative ttl says stale).
      return this.answer(exchange, entry, age, `hit; ttl=${Math.floor(ttl)}; detail=stale-while-revalidate`)
    }
    return undefined
  }

  /** A response built from a stored one: a 304 when the client already holds it, HEAD without body. */
  private answer(exchange: Exchange, entry: StoredResponse, age: number, status: string): ProxyResponse {
    // Age saturates at 2^31 (RFC 9111 §1.2.2).
    const headers: ResponseHeaders = { ...entry.headers, age: String(Math.min(Math.floor(age), 2 ** 31)) }
    appendCacheStatus(headers, `waypost; ${status}`)
    stripOurControls(headers, this.settings.targetedHeader)
    const request = exchange.request
    if (entry.status >= 200 && entry.status < 300 && clientHasCurrentCopy(request, entry)) {
      delete headers['content-length']
      return { status: 304, headers, body: null, origin: 'cache' }
    }
    // Range is defined for GET only (RFC 9110 §14.2), and a 206 is a part of a 200.
    const incoming = request.incoming.headers
    if (incoming.range !== undefined && entry.status === 200 && request.method === 'GET' && ifRangeHolds(headerText(incoming['if-range']), entry.headers)) {
      const length = entry.body.length
      const range = byteRange(incoming.range, length)
      if (range === 'unsatisfiable') {
        headers['content-range'] = `bytes */${length}`
        headers['content-length'] = '0'
        delete headers['content-type']
        return { status: 416, headers, body: null, origin: 'cache' }
      }
      if (range !== undefined) {
        headers['content-range'] = `bytes ${range.start}-${range.end}/${length}`
        headers['content-length'] = String(range.end - range.start + 1)
        return { status: 206, headers, body: entry.body.subarray(range.start, range.end + 1), origin: 'cache' }
      }
    }
    return { status: entry.status, headers, body: request.method === 'HEAD' ? null : entry.body, origin: 'cache' }
  }

  /** Marks this request as the one fetching `uri`; returns the function that lets the waiters in. */
  private lead(uri: string): () => void {
    let wake!: () => void
    const pending = new Promise<void>((resolve) => (wake = resolve))
    this.pending.set(uri, pending)
    return () => {
      if (this.pending.get(uri) === pending) this.pending.delete(uri)
      wake()
    }
  }

  /**
   * Asks the upstream (conditionally when a stored entry has validators) and returns what the
   * client gets: the refreshed entry after a 304, the stale entry when the upstream failed and
   * stale-if-error allows it, or the upstream's response, teed into the store when storable.
   * `release` lets waiting requests in once the outcome is stored (or known not to be).
   */
  private async forward(next: Upstream, exchange: Exchange, lookup: Lookup, entry: StoredResponse | undefined, fwd: string, release?: () => void, background = false): Promise<ProxyResponse> {
    const request = exchange.request
    const conditional = entry !== undefined && hasValidator(entry)
    // Surrogate-Capability tells the origin our device token, for Surrogate-Control targeted at us.
    const headers = conditional ? conditionalHeaders(request, entry) : [...request.headers]
    headers.push('surrogate-capability', SURROGATE_CAPABILITY)
    const sent = { ...exchange, request: { ...request, headers } }
    const requestTime = Date.now()
    let response: ProxyResponse
    try {
      response = await next(sent)
    } catch (error) {
      const stale = entry === undefined ? undefined : this.staleIfError(exchange, entry, Date.now(), undefined)
      release?.()
      if (stale === undefined) {
        if (!background) this.count(exchange, 'miss')
        throw error
      }
      if (!background) this.count(exchange, 'stale-if-error')
      return stale
    }
    const responseTime = Date.now()
    if (entry !== undefined) {
      if (conditional && response.status === 304 && response.origin === 'upstream') {
        discardResponse(response, new Error('revalidated'))
        const refreshed = this.refresh(entry, response.headers, requestTime, responseTime, request.incoming.headers.authorization !== undefined)
        release?.()
        if (!background) this.count(exchange, 'revalidated')
        return this.answer(exchange, refreshed, currentAge(refreshed.initialAge, refreshed.responseTime, Date.now()), `fwd=${fwd}; fwd-status=304`)
      }
      if (response.status >= 500 || response.origin === 'local') {
        const stale = this.staleIfError(exchange, entry, responseTime, response)
        if (stale !== undefined) {
          release?.()
          if (!background) this.count(exchange, 'stale-if-error')
          return stale
        }
      }
    }
    if (!background) this.count(exchange, 'miss')
    const stored = request.method === 'GET' && response.origin === 'upstream' ? this.storeWhileStreaming(response, exchange, lookup, requestTime, responseTime, release) : undefined
    stripOurControls(response.headers, this.settings.targetedHeader)
    if (stored !== undefined) {
      appendCacheStatus(stored.headers, `waypost; fwd=${fwd}; stored`)
      return stored
    }
    release?.()
    // A new answer to a GET supersedes the stored one even when it cannot be kept itself; but not when
    // it is the request that kept it out (no-store, Authorization): any client could evict entries so.
    if (entry !== undefined && request.method === 'GET' && response.status < 500 && response.status !== 304 && !this.requestKeepsOut(exchange, lookup)) this.store.delete(entry)
    appendCacheStatus(response.headers, `waypost; fwd=${fwd}`)
    return response
  }

  private requestKeepsOut(exchange: Exchange, lookup: Lookup): boolean {
    return lookup.cacheControl.noStore || (exchange.request.incoming.headers.authorization !== undefined && !this.settings.allowAuthorized)
  }

  /** The stale entry when stale-if-error covers this failure, else undefined. */
  private staleIfError(exchange: Exchange, entry: StoredResponse, now: number, failed: ProxyResponse | undefined): ProxyResponse | undefined {
    const stored = entry.cacheControl
    const age = currentAge(entry.initialAge, entry.responseTime, now)
    const staleness = age - entry.lifetime
    // An explicit stale-if-error in the response wins over must-revalidate (RFC 5861 §4); the route default does not.
    const window = stored.staleIfError ?? (mustRevalidate(stored) ? -1 : this.settings.staleIfErrorS)
    if (staleness > window) return undefined
    let fwdStatus = ''
    if (failed !== undefined) {
      fwdStatus = `; fwd-status=${failed.status}`
      discardResponse(failed, new Error('stale-if-error'))
    }
    return this.answer(exchange, entry, age, `fwd=stale${fwdStatus}; detail=stale-if-error`)
  }

  /**
   * §4.3.4: a 304 updates the stored headers and the entry's clock. The updated entry replaces the
   * old one in the store (so its size counts the new headers), or leaves it when the 304 made it
   * private, per-user (Set-Cookie) or no-store: then only this client gets it. Returns it either way.
   */
  private refresh(entry: StoredResponse, headers: ResponseHeaders, requestTime: number, responseTime: number, authorized: boolean): StoredResponse {
    const updated = { ...entry.headers }
    const fresh = endToEndHeaders(headers)
    for (const name in fresh) if (!NOT_UPDATED_BY_304.has(name)) updated[name] = fresh[name]
    const cacheControl = responseDirectives(updated, this.settings.targetedHeader)
    const refreshed: StoredResponse = {
      ...entry,
      headers: updated,
      cacheControl,
      responseTime,
      initialAge: correctedInitialAge(headers, requestTime, responseTime),
      lifetime: freshnessLifetime(entry.status, updated, cacheControl, responseTime, this.settings),
      size: entrySize(entry.body, updated, entry.uri),
    }
    if (notStorableBecause(entry.status, updated, cacheControl, NO_DIRECTIVES, authorized, this.settings) !== undefined) this.store.delete(entry)
    else this.store.put(refreshed)
    return refreshed
  }

  /** Returns the response with its body teed into the store, or undefined when it must not be stored. */
  private storeWhileStreaming(response: ProxyResponse, exchange: Exchange, lookup: Lookup, requestTime: number, responseTime: number, release: (() => void) | undefined): ProxyResponse | undefined {
    const headers = response.headers
    const cacheControl = responseDirectives(headers, this.settings.targetedHeader)
    const request = exchange.request
    const authorized = request.incoming.headers.authorization !== undefined
    if (notStorableBecause(response.status, headers, cacheControl, lookup.cacheControl, authorized, this.settings) !== undefined) return undefined
    const lifetime = freshnessLifetime(response.status, headers, cacheControl, responseTime, this.settings)
    const staleWindow = Math.max(cacheControl.staleWhileRevalidate ?? this.settings.staleWhileRevalidateS, cacheControl.staleIfError ?? this.settings.staleIfErrorS)
    // Useless once stored: stale at once and nothing to revalidate it with.
    if (lifetime <= 0 && staleWindow <= 0 && headers.etag === undefined && headers['last-modified'] === undefined) return undefined
    const declared = Number(headerText(headers['content-length']) ?? NaN)
    if (declared > this.settings.maxObjectSize) return undefined
    const body = response.body
    if (body === null || Buffer.isBuffer(body)) return undefined

    const varyNames = varyNamesOf(headers, this.settings.keyHeaders)
    const varyValues = varyNames.map((name) => varyValue(name, sentHeader(request, name)))
    const tags = headerText(headers[this.settings.tagHeader])?.split(/\s+/).filter((tag) => tag !== '') ?? []
    const initialAge = correctedInitialAge(headers, requestTime, responseTime)
    // Copied now: the client's copy loses our Surrogate-Control directives, the stored one keeps them
    // so that a 304 refresh reads them again.
    const storedHeaders = endToEndHeaders(headers)
    // Cache-Status describes one exchange; hits get their own.
    delete storedHeaders['cache-status']
    const capture = new CapturingBody(body, this.settings.maxObjectSize, this.store.copies, (captured) => {
      if (captured !== undefined) {
        storedHeaders['content-length'] = String(captured.length)
        // The trailers themselves are not kept.
        delete storedHeaders.trailer
        this.store.put({
          id: `${lookup.uri}\u0000${varyNames.join(',')}\u0000${varyValues.join('\u0000')}`,
          uri: lookup.uri,
          path: lookup.path,
          status: response.status,
          headers: storedHeaders,
          cacheControl,
          body: captured,
          varyNames,
          varyValues,
          tags,
          responseTime,
          initialAge,
          lifetime,
          size: entrySize(captured, storedHeaders, lookup.uri),
        })
      }
      release?.()
    })
    return { ...response, body: capture }
  }

  /** Serves stale now; one request (the first to get here) refreshes the entry behind the client's back. */
  private revalidateInBackground(next: Upstream, exchange: Exchange, lookup: Lookup, entry: StoredResponse): void {
    if (this.pending.has(lookup.uri)) return
    const release = this.lead(lookup.uri)
    const signal = new ExchangeSignal()
    // Once headers are in, layers below (the per-try timeout) may no longer listen to the signal: cancel the body itself.
    let body: CapturingBody | undefined
    const timer = setTimeout(() => {
      const deadline = new DeadlineExceeded('timeout', BACKGROUND_TIMEOUT_MS)
      signal.abort(deadline)
      body?.cancel(deadline)
    }, BACKGROUND_TIMEOUT_MS)
    timer.unref()
    const background: Exchange = {
      ...exchange,
      // Always a GET, even for a HEAD that found the entry stale: only a GET's answer can replace it.
      // Its interim responses go nowhere: the client has had its answer.
      request: { ...exchange.request, method: 'GET', hasBody: false, body: undefined, sendContinue: undefined, sendInterim: undefined },
      signal,
      record: newExchangeRecord(),
    }
    this.forward(next, background, lookup, entry, 'stale', release, true).then(
      (response) => {
        if (response.body instanceof CapturingBody) {
          body = response.body
          body.drain()
        } else discardResponse(response, new Error('background revalidation'))
        onResponseDone(response, () => clearTimeout(timer))
      },
      (error: unknown) => {
        clearTimeout(timer)
        exchange.log.debug({ err: (error as Error).message, uri: lookup.uri }, 'cache: background revalidation failed')
      },
    )
  }

  private recordPurge(exchange: Exchange, status: number): void {
    const request = exchange.request
    this.security.record({ event: 'admin-action', reason: 'PURGE', method: 'PURGE', path: request.target.split('?', 1)[0], status, route: exchange.route.name, requestId: request.requestId, remote: request.incoming.socket.remoteAddress ?? '' })
  }

  /** Unsafe methods pass through; a non-error answer invalidates the URI and its Location / Content-Location (§4.4). */
  private async passUnsafe(next: Upstream, exchange: Exchange): Promise<ProxyResponse> {
    const request = exchange.request
    const lookup = lookupOf(request)
    if (request.method === 'PURGE' && this.settings.purge) {
      // Dropping entries (the stale copies staleIfError needs in an outage, too) is an operator's act.
      const from = this.purgeFrom
      if (from === undefined || !inList(from, request.incoming.socket.remoteAddress)) {
        const operator = await this.operator(request.incoming)
        if (!operator.ok) {
          exchange.log.warn({ route: exchange.route.name, remote: request.incoming.socket.remoteAddress, status: operator.status, reason: operator.error }, 'PURGE refused')
          this.recordPurge(exchange, operator.status)
          return localResponse(operator.status, 'purge-refused', exchange, operator.headers)
        }
      }
      const purged = this.store.deleteUri(lookup.uri)
      this.recordPurge(exchange, purged > 0 ? 200 : 404)
      return localResponse(purged > 0 ? 200 : 404, purged > 0 ? 'cache-purged' : 'cache-not-found', exchange, { 'cache-status': `waypost; detail=purged-${purged}` })
    }
    this.count(exchange, 'bypass')
    const response = await next(exchange)
    stripOurControls(response.headers, this.settings.targetedHeader)
    if (SAFE_METHODS.has(request.method) || response.status >= 400 || response.status < 200) return response
    this.store.deleteUri(lookup.uri)
    for (const name of ['location', 'content-location']) {
      const value = headerText(response.headers[name])
      if (value === undefined) continue
      try {
        const target = new URL(value, `http://${lookup.host}${lookup.path}`)
        if (target.host === lookup.host) this.store.deleteUri(target.host + target.pathname + target.search)
      } catch {
        // An unparsable Location invalidates nothing.
      }
    }
    return response
  }
}

/** Why the request goes upstream, as Cache-Status `fwd` says it (RFC 9211 §2.2). */
function fwdOf(entry: StoredResponse | undefined, lookup: Lookup, store: CacheStore): string {
  if (entry === undefined) return store.variants(lookup.uri) === undefined ? 'uri-miss' : 'vary-miss'
  const requested = lookup.cacheControl
  if (requested.noCache || requested.maxAge !== undefined || requested.minFresh !== undefined) return 'request'
  return 'stale'
}

function mebibytes(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 2 : 0)
}

export const cache = definePolicy({
  name: 'cache',
  schema: CacheConfig,
  admin: [purgeEndpoint],
  localReasons: (config) => (config.purge === true ? ['cache-only-if-cached', 'cache-purged', 'cache-not-found', 'purge-refused'] : ['cache-only-if-cached']),
  validate: (config) => [
    ...(config.purgeFrom ?? []).flatMap((entry, index) => (parseCidr(entry) === undefined ? [{ path: `/purgeFrom/${index}`, message: `not an IP address or CIDR: "${entry}"` }] : [])),
    ...(config.targetedHeader !== undefined && NOT_TARGETED.has(config.targetedHeader.toLowerCase()) ? [{ path: '/targetedHeader', message: `"${config.targetedHeader}" cannot be a targeted field: the cache reads it by its own rules` }] : []),
  ],
  build(config, deps: Deps<CacheStore>) {
    const settings = settingsOf(config as ResolvedCacheConfig)
    const route = deps.route.name
    const bytes = sharedGauge(deps.metrics, 'waypost_cache_stored_bytes', 'Bytes held by the response cache, by route.', ['route']).labels(route)
    const entries = sharedGauge(deps.metrics, 'waypost_cache_entries', 'Responses held by the response cache (each variant counts), by route.', ['route']).labels(route)
    const counter = sharedCounter(deps.metrics, 'waypost_cache_requests_total', `Requests seen by the response cache, by route and result (${RESULTS.join(', ')}).`, ['route', 'result'])
    // Kept across reloads while this config is unchanged; a changed config starts empty.
    const kept = deps.keep(
      'cache',
      config,
      () => ({
        store: new CacheStore(settings.maxSize, (size, count) => {
          bytes.set(size)
          entries.set(count)
        }),
        pending: new Map<string, Promise<void>>() }),
      (state) => state.store.clear(),
    )
    // From the first plan on, at the kept store's size (0 for a new one).
    bytes.set(kept.store.bytes)
    entries.set(kept.store.size)
    deps.expose(kept.store)
    deps.report(() => {
      const store = kept.store
      return { health: 'green', summary: `${store.size} responses, ${mebibytes(store.bytes)} of ${mebibytes(settings.maxSize)} MiB`, entries: store.size, bytes: store.bytes, maxBytes: settings.maxSize }
    })
    const responseCache = new ResponseCache(settings, kept.store, kept.pending, counter, route, deps.operator, addressList((config as ResolvedCacheConfig).purgeFrom), deps.security)
    return (next) => (exchange) => responseCache.handle(next, exchange)
  },
})
