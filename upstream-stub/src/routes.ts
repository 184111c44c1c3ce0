// The stub's HTTP endpoints: a route table of small handlers. Handlers throw HttpError for bad
// input; anything else they throw after the client went away is ignored by the dispatcher.
import { validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http'
import { createHash } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import { CHUNK_SIZE, HttpError, parseNumber, parseStatus, patternChunk, queryObject, seededRandom, sendJson, sleep, writeFlushed, writePattern, writeWithBackpressure } from './support.js'
import { resetStats, statsJson, type StubState } from './state.js'
import { devIntrospect, devToken, jwks, openidConfiguration } from './dev-issuer.js'

/** One request as a handler sees it. */
export interface Exchange {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly url: URL
  /** The route pattern's capture groups ('' for a group that did not participate). */
  readonly params: readonly string[]
  /** Aborted when the response closes: finished, or the client went away. */
  readonly signal: AbortSignal
  readonly state: StubState
}

export type Handler = (exchange: Exchange) => void | Promise<void>

export interface Route {
  readonly pattern: RegExp
  /** Only this method; any method when absent. */
  readonly method?: string
  /** false for the stats endpoints, which must not disturb what they measure. */
  readonly counted?: boolean
  readonly handle: Handler
}

const MAX_DELAY_S = 60
const MAX_BYTES = 2 * 1024 ** 3
const MAX_STREAM_LINES = 100_000
const MAX_DRIP_BYTES = 10 * 1024 * 1024
const MAX_FAULT_MS = 60_000
/** Bodies up to this size are echoed as text by /anything; larger ones are only hashed. */
const MAX_INLINE_BODY = 64 * 1024
/** /fault/reset-mid-body promises this many bytes more than it sends. */
const UNSENT_BYTES = 64 * 1024
const DRIP_TICK_MS = 10
const STARS = Buffer.alloc(CHUNK_SIZE, '*')

// ---- httpbin-style endpoints -------------------------------------------------------------

function status({ res, params }: Exchange): void {
  const code = parseStatus(params[0], 'code')
  if (code >= 300 && code < 400) res.setHeader('location', '/redirected')
  // statusCode + end() (not writeHead) lets Node add `content-length: 0` instead of an empty chunked body.
  res.statusCode = code
  res.end()
}

async function delay(exchange: Exchange): Promise<void> {
  const seconds = parseNumber(exchange.params[0], 'seconds', { min: 0, max: MAX_DELAY_S })
  await sleep(seconds * 1000, exchange.signal)
  await anything(exchange)
}

async function bytes({ res, params, url, signal }: Exchange): Promise<void> {
  const n = parseNumber(params[0], 'n', { min: 0, max: MAX_BYTES, integer: true })
  const chunked = url.searchParams.get('chunked') === '1'
  // Without a content-length Node frames the body with chunked transfer-encoding.
  res.writeHead(200, { 'content-type': 'application/octet-stream', ...(chunked ? {} : { 'content-length': String(n) }) })
  await writePattern(res, n, signal)
  res.end()
}

async function stream({ req, res, params, url, signal }: Exchange): Promise<void> {
  const n = parseNumber(params[0], 'n', { min: 0, max: MAX_STREAM_LINES, integer: true })
  res.writeHead(200, { 'content-type': 'application/x-ndjson' })
  const args = queryObject(url.searchParams)
  for (let id = 0; id < n; id++) {
    await writeWithBackpressure(res, JSON.stringify({ id, url: req.url, args, headers: req.headers }) + '\n', signal)
  }
  res.end()
}

async function drip({ res, url, signal }: Exchange): Promise<void> {
  const query = url.searchParams
  const numbytes = parseNumber(query.get('numbytes'), 'numbytes', { min: 0, max: MAX_DRIP_BYTES, integer: true }, 10)
  const duration = parseNumber(query.get('duration'), 'duration', { min: 0, max: MAX_DELAY_S }, 2)
  const initialDelay = parseNumber(query.get('delay'), 'delay', { min: 0, max: MAX_DELAY_S }, 2)
  const code = parseStatus(query.get('code'), 'code', 200)
  await sleep(initialDelay * 1000, signal)
  res.writeHead(code, { 'content-type': 'application/octet-stream', 'content-length': String(numbytes) })
  await dripStars(res, numbytes, duration * 1000, signal)
  res.end()
}

/** Byte i is due at i * (duration / total). Whatever is due is sent together, so timers stay >= 10 ms apart. */
async function dripStars(res: ServerResponse, total: number, durationMs: number, signal: AbortSignal): Promise<void> {
  const interval = total === 0 ? 0 : durationMs / total
  const started = performance.now()
  let sent = 0
  while (sent < total) {
    const elapsed = performance.now() - started
    const due = interval === 0 ? total : Math.min(total, Math.floor(elapsed / interval) + 1)
    if (due > sent) {
      const count = Math.min(due - sent, CHUNK_SIZE)
      await writeWithBackpressure(res, STARS.subarray(0, count), signal)
      sent += count
    } else {
      await sleep(Math.max(DRIP_TICK_MS, sent * interval - elapsed), signal)
    }
  }
}

function headers({ req, res }: Exchange): void {
  sendJson(res, 200, { headers: req.headers, rawHeaders: req.rawHeaders })
}

async function anything({ req, res, url }: Exchange): Promise<void> {
  const body = await digestBody(req)
  sendJson(res, 200, {
    method: req.method,
    url: req.url,
    path: url.pathname,
    query: queryObject(url.searchParams),
    headers: req.headers,
    httpVersion: req.httpVersion,
    bodyLength: body.length,
    bodySha256: body.sha256,
    body: body.text,
    // Only complete once the body has been read to the end, which digestBody did.
    trailers: req.trailers,
  })
}

/** Hashes the request body as it streams in; keeps the text only while it stays small. */
async function digestBody(req: IncomingMessage): Promise<{ length: number; sha256: string; text: string | null }> {
  const hash = createHash('sha256')
  let length = 0
  let kept: Buffer[] | null = []
  for await (const chunk of req as AsyncIterable<Buffer>) {
    hash.update(chunk)
    length += chunk.length
    if (length > MAX_INLINE_BODY) kept = null
    else kept?.push(chunk)
  }
  return { length, sha256: hash.digest('hex'), text: kept === null ? null : Buffer.concat(kept).toString('utf8') }
}

async function echo({ req, res }: Exchange): Promise<void> {
  res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' })
  // pipeline pauses the request whenever the response can't take more, so memory stays bounded.
  await pipeline(req, res)
}

function trailers({ res }: Exchange): void {
  const body = 'a small body followed by a checksum trailer\n'
  res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' })
  res.write(body)
  res.addTrailers({ 'x-checksum': createHash('sha256').update(body).digest('hex') })
  res.end()
}

function cache({ req, res, params, state }: Exchange): void {
  const seconds = parseNumber(params[0], 'seconds', { min: 0, max: 365 * 24 * 3600, integer: true })
  // Weak: the body's counter changes between generations, but the representations are equivalent.
  const etag = `W/"cache-${seconds}"`
  const validators = { 'cache-control': `public, max-age=${seconds}`, etag, 'last-modified': state.startedAt.toUTCString() }
  if (notModified(req, etag, state.startedAt)) {
    res.writeHead(304, validators)
    res.end()
    return
  }
  state.cacheGenerated += 1
  sendJson(res, 200, { counter: state.cacheGenerated, maxAge: seconds, generatedAt: new Date().toISOString() }, validators)
}

/** RFC 9110 13.2.2: If-None-Match (weak comparison) wins; If-Modified-Since only when it is absent. */
function notModified(req: IncomingMessage, etag: string, lastModified: Date): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const opaque = (tag: string): string => tag.trim().replace(/^W\//, '')
  const ifNoneMatch = req.headers['if-none-match']
  if (ifNoneMatch !== undefined) return ifNoneMatch.trim() === '*' || ifNoneMatch.split(',').some((tag) => opaque(tag) === opaque(etag))
  const since = Date.parse(req.headers['if-modified-since'] ?? '')
  return !Number.isNaN(since) && lastModified.getTime() <= since
}

/**
 * A response whose caching headers the caller scripts in the query: `cc` (Cache-Control), `etag`,
 * `lastModified`, `vary`, `tag` (Surrogate-Key), `codes` (a status sequence, as /sequence),
 * `bytes` (a pattern body of that size instead of JSON) and `delayMs`. A matching If-None-Match
 * gets a 304 with the same headers; every answer (304 included) advances the key's count.
 */
/** `header=Name: value` parameters, by lower-case name in order; a malformed one is a 400 naming it. */
function scriptedHeaders(lines: readonly string[]): Map<string, string[]> {
  const headers = new Map<string, string[]>()
  for (const line of lines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    try {
      if (colon === -1) throw new Error('expected "Name: value"')
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch (error) {
      throw new HttpError(400, `invalid parameter "header": ${JSON.stringify(line)}: ${(error as Error).message}`)
    }
    const values = headers.get(name)
    if (values === undefined) headers.set(name, [value])
    else values.push(value)
  }
  return headers
}

async function cacheable({ req, res, params, url, state, signal }: Exchange): Promise<void> {
  const key = params[0] ?? ''
  const query = url.searchParams
  const codes = (query.get('codes') ?? '200').split(',').map((code) => parseStatus(code.trim(), 'codes'))
  const bytesParam = query.get('bytes')
  const size = bytesParam === null ? undefined : parseNumber(bytesParam, 'bytes', { min: 0, max: MAX_BYTES, integer: true })
  const delayMs = parseNumber(query.get('delayMs'), 'delayMs', { min: 0, max: MAX_FAULT_MS, integer: true }, 0)
  const extra = scriptedHeaders(query.getAll('header'))
  const index = state.cacheable.get(key) ?? 0
  state.cacheable.set(key, index + 1)
  // Interim responses before the final one: `hint` (repeatable) a 103 Early Hints with that Link, `processing=1` a 102.
  if (query.get('processing') === '1') res.writeProcessing()
  for (const link of query.getAll('hint')) {
    try {
      res.writeEarlyHints({ link })
    } catch (error) {
      throw new HttpError(400, `invalid parameter "hint": ${JSON.stringify(link)}: ${(error as Error).message}`)
    }
  }
  await sleep(delayMs, signal)
  const headers: Record<string, string | string[]> = { 'x-generation': String(index) }
  const scripted = { 'cache-control': query.get('cc') ?? 'max-age=60', etag: query.get('etag'), 'last-modified': query.get('lastModified'), vary: query.get('vary'), 'surrogate-key': query.get('tag'), 'surrogate-control': query.get('sc') }
  for (const [name, value] of Object.entries(scripted)) if (value !== null) headers[name] = value
  // `header=Name: value` (repeatable; one line each, so a name given twice is sent on two lines) comes last and wins.
  for (const [name, values] of extra) headers[name] = values.length === 1 ? values[0]! : values
  const etag = query.get('etag')
  const ifNoneMatch = req.headers['if-none-match']
  if (etag !== null && ifNoneMatch !== undefined && ifNoneMatch.split(',').some((tag) => tag.trim() === etag)) {
    // `cc304` / `cookie304`: what a 304 may change about the stored response.
    const cc304 = query.get('cc304')
    if (cc304 !== null) headers['cache-control'] = cc304
    const cookie304 = query.get('cookie304')
    if (cookie304 !== null) headers['set-cookie'] = cookie304
    res.writeHead(304, headers)
    res.end()
    return
  }
  const code = codes[Math.min(index, codes.length - 1)]!
  if (size === undefined) {
    const vary = query.get('vary')
    sendJson(res, code, { key, generation: index, status: code, varied: vary === null ? null : (req.headers[vary.toLowerCase()] ?? null) }, headers)
    return
  }
  res.writeHead(code, { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(size) })
  await writePattern(res, size, signal)
  res.end()
}

// ---- faults ------------------------------------------------------------------------------

/** Kills the connection: FIN by default, a TCP RST with `?rst=1`. */
function breakConnection({ req, url }: Exchange): void {
  if (url.searchParams.get('rst') === '1') req.socket.resetAndDestroy()
  else req.socket.destroy()
}

async function resetMidBody(exchange: Exchange): Promise<void> {
  const { res, url } = exchange
  const after = parseNumber(url.searchParams.get('after'), 'after', { min: 0, max: MAX_BYTES, integer: true }, 1024)
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(after + UNSENT_BYTES) })
  // Everything up to the last chunk streams normally; the last write (possibly empty, which still
  // carries the headers) is awaited so all `after` bytes reach the OS before the socket goes.
  const last = after === 0 ? 0 : ((after - 1) % CHUNK_SIZE) + 1
  await writePattern(res, after - last, exchange.signal)
  await writeFlushed(res, patternChunk(last))
  breakConnection(exchange)
}

function hang(): void {
  // Deliberately never answers. The response stays open until the client leaves or the stub closes.
}

async function slowHeaders({ res, url, signal }: Exchange): Promise<void> {
  const ms = parseNumber(url.searchParams.get('ms'), 'ms', { min: 0, max: MAX_FAULT_MS, integer: true }, 1000)
  await sleep(ms, signal)
  sendJson(res, 200, { ok: true, delayedHeadersMs: ms })
}

function closeAfterResponse({ res }: Exchange): void {
  // Node honours a handler-set `connection: close` by closing the socket once the response is sent.
  sendJson(res, 200, { ok: true, connection: 'close' }, { connection: 'close' })
}

// ---- scripted and random behaviour -------------------------------------------------------

async function sequence({ req, res, params, url, state }: Exchange): Promise<void> {
  const key = params[0] ?? ''
  const codes = (url.searchParams.get('codes') ?? '200').split(',').map((code) => parseStatus(code.trim(), 'codes'))
  const retryAfterRaw = url.searchParams.get('retryAfter')
  const retryAfter = retryAfterRaw === null ? undefined : parseNumber(retryAfterRaw, 'retryAfter', { min: 0, max: 86_400, integer: true })
  // Validate first: a bad request must not advance the key.
  const index = state.sequences.get(key) ?? 0
  state.sequences.set(key, index + 1)
  const code = codes[Math.min(index, codes.length - 1)]
  const failed = code < 200 || code >= 300
  // The body is read and described, so a test can check what each (re)sent attempt carried.
  const body = await digestBody(req)
  sendJson(res, code, { key, index, status: code, bodyLength: body.length, bodySha256: body.sha256 }, failed && retryAfter !== undefined ? { 'retry-after': String(retryAfter) } : {})
}

function resetSequence({ res, params, state }: Exchange): void {
  const key = params[0]
  if (key === undefined || key === '') state.sequences.clear()
  else state.sequences.delete(key)
  sendJson(res, 200, { key: key || null, reset: true })
}

async function flaky({ res, url, state, signal }: Exchange): Promise<void> {
  const query = url.searchParams
  const fail = parseNumber(query.get('fail'), 'fail', { min: 0, max: 1 }, 0.05)
  const code = parseStatus(query.get('status'), 'status', 503)
  const slow = parseNumber(query.get('slow'), 'slow', { min: 0, max: 1 }, 0.02)
  const slowMs = parseNumber(query.get('slowMs'), 'slowMs', { min: 0, max: MAX_FAULT_MS, integer: true }, 2000)
  const maxAge = query.has('maxAge') ? parseNumber(query.get('maxAge'), 'maxAge', { min: 0, max: 2 ** 31, integer: true }, 0) : undefined
  const random = randomSource(state, query.get('seed'))
  // Both draws happen every time, so a seeded stream advances the same way whatever the outcome.
  const failed = random() < fail
  const slowed = random() < slow
  if (failed) return sendJson(res, code, { error: 'flaky failure', status: code })
  if (slowed) await sleep(slowMs, signal)
  sendJson(res, 200, { ok: true, slow: slowed }, maxAge === undefined ? {} : { 'cache-control': `max-age=${maxAge}` })
}

function randomSource(state: StubState, seed: string | null): () => number {
  if (seed === null) return Math.random
  let stream = state.randomStreams.get(seed)
  if (stream === undefined) {
    stream = seededRandom(seed)
    state.randomStreams.set(seed, stream)
  }
  return stream
}

async function concurrencyLatency({ res, url, state, signal }: Exchange): Promise<void> {
  const baseMs = parseNumber(url.searchParams.get('baseMs'), 'baseMs', { min: 0, max: MAX_FAULT_MS }, 5)
  const perInFlightMs = parseNumber(url.searchParams.get('perInFlightMs'), 'perInFlightMs', { min: 0, max: MAX_FAULT_MS }, 2)
  // In flight at arrival, this request included.
  const inFlight = state.stats.inFlight
  const delayMs = Math.min(MAX_FAULT_MS, baseMs + perInFlightMs * inFlight)
  await sleep(delayMs, signal)
  sendJson(res, 200, { inFlight, delayMs })
}

// ---- stats -------------------------------------------------------------------------------

function getStats({ res, state }: Exchange): void {
  sendJson(res, 200, statsJson(state.stats))
}

function deleteStats({ res, state }: Exchange): void {
  resetStats(state.stats)
  sendJson(res, 200, statsJson(state.stats))
}

function notFound({ res, url }: Exchange): void {
  sendJson(res, 404, { error: 'not found', path: url.pathname })
}

/** First match wins; method-specific routes come before the any-method route for the same path. */
export const routes: readonly Route[] = [
  { pattern: /^\/__stats$/, method: 'DELETE', counted: false, handle: deleteStats },
  { pattern: /^\/__stats$/, counted: false, handle: getStats },
  { pattern: /^\/status\/([^/]+)$/, handle: status },
  { pattern: /^\/delay\/([^/]+)$/, handle: delay },
  { pattern: /^\/bytes\/([^/]+)$/, handle: bytes },
  { pattern: /^\/stream\/([^/]+)$/, handle: stream },
  { pattern: /^\/drip$/, handle: drip },
  { pattern: /^\/headers$/, handle: headers },
  { pattern: /^\/anything(\/.*)?$/, handle: anything },
  { pattern: /^\/echo$/, handle: echo },
  { pattern: /^\/trailers$/, handle: trailers },
  { pattern: /^\/cache\/([^/]+)$/, handle: cache },
  { pattern: /^\/cacheable\/([^/]+)$/, handle: cacheable },
  { pattern: /^\/fault\/reset-before-headers$/, handle: breakConnection },
  { pattern: /^\/fault\/reset-mid-body$/, handle: resetMidBody },
  { pattern: /^\/fault\/hang$/, handle: hang },
  { pattern: /^\/fault\/slow-headers$/, handle: slowHeaders },
  { pattern: /^\/fault\/close-after-response$/, handle: closeAfterResponse },
  { pattern: /^\/sequence(?:\/([^/]+))?$/, method: 'DELETE', handle: resetSequence },
  { pattern: /^\/sequence\/([^/]+)$/, handle: sequence },
  { pattern: /^\/flaky$/, handle: flaky },
  { pattern: /^\/concurrency-latency$/, handle: concurrencyLatency },
  // The development issuer (development only: it signs whatever it is asked to).
  { pattern: /^\/\.well-known\/openid-configuration$/, handle: openidConfiguration },
  { pattern: /^\/\.well-known\/jwks\.json$/, handle: jwks },
  { pattern: /^\/dev\/token$/, method: 'POST', handle: devToken },
  { pattern: /^\/dev\/introspect$/, method: 'POST', handle: devIntrospect },
]

const fallback: Route = { pattern: /^/, handle: notFound }

export function matchRoute(method: string, path: string): { route: Route; params: string[] } {
  for (const route of routes) {
    if (route.method !== undefined && route.method !== method) continue
    const match = route.pattern.exec(path)
    if (match !== null) return { route, params: match.slice(1).map((group) => group ?? '') }
  }
  return { route: fallback, params: [] }
}
