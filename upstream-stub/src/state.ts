// Mutable state of one stub instance: request statistics plus the per-key memory some endpoints need.
import type { ServerResponse } from 'node:http'
import type { DevIssuer } from './dev-issuer.js'

export interface StubStats {
  /** Requests received (HTTP and WebSocket upgrades), except the /__stats endpoints themselves. */
  requests: number
  /** Responses not yet finished or aborted right now. */
  inFlight: number
  maxInFlight: number
  /** Requests per pathname (no query string). */
  byPath: Map<string, number>
  /** TCP connections accepted. */
  connections: number
}

export interface StubState {
  readonly stats: StubStats
  /** /sequence/:key: how many requests each key has answered. */
  readonly sequences: Map<string, number>
  /** /cacheable/:key: requests each key has answered (its status sequence position and body generation). */
  readonly cacheable: Map<string, number>
  /** /flaky?seed=S: one PRNG stream per seed, so a seeded run is a reproducible sequence. */
  readonly randomStreams: Map<string, () => number>
  /** /cache/:seconds: full (200) answers generated so far, so callers can tell origin hits from cache hits. */
  cacheGenerated: number
  /** Last-Modified for /cache: fixed for the stub's lifetime so conditional requests can match. */
  readonly startedAt: Date
  /** The development token issuer (/.well-known/*, /dev/token, /dev/introspect); set once its keys are made. */
  issuer: DevIssuer | undefined
}

export function createState(): StubState {
  return {
    stats: { requests: 0, inFlight: 0, maxInFlight: 0, byPath: new Map(), connections: 0 },
    sequences: new Map(),
    cacheable: new Map(),
    randomStreams: new Map(),
    cacheGenerated: 0,
    // Whole seconds, because Last-Modified / If-Modified-Since carry no milliseconds.
    startedAt: new Date(Math.floor(Date.now() / 1000) * 1000),
    issuer: undefined,
  }
}

/** Zeroes the counters. `inFlight` is a live gauge, so it is kept (and becomes the new maximum). */
export function resetStats(stats: StubStats): void {
  stats.requests = 0
  stats.connections = 0
  stats.byPath.clear()
  stats.maxInFlight = stats.inFlight
}

/** Counts a request to `path`; when `res` is given, it is in flight until it closes (finished or aborted). */
export function countRequest(stats: StubStats, path: string, res?: ServerResponse): void {
  stats.requests += 1
  stats.byPath.set(path, (stats.byPath.get(path) ?? 0) + 1)
  if (res === undefined) return
  stats.inFlight += 1
  stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight)
  res.once('close', () => {
    stats.inFlight -= 1
  })
}

export function statsJson(stats: StubStats): Record<string, unknown> {
  return { ...stats, byPath: Object.fromEntries(stats.byPath) }
}
