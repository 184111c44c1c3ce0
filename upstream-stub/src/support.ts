// Small helpers shared by the stub's handlers: parameter parsing, JSON answers, cancellable
// sleeps, backpressure-aware byte streaming and a seeded PRNG.
import type { ServerResponse } from 'node:http'
import { once } from 'node:events'

/** Thrown by handlers for bad input; the dispatcher turns it into a JSON error answer. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export const CHUNK_SIZE = 64 * 1024

/** One 64 KiB chunk of the repeating 0..255 pattern. Streams are cut into chunks at multiples of 64 KiB, so every chunk is a prefix of this one. */
const PATTERN = Buffer.from(Array.from({ length: CHUNK_SIZE }, (_, i) => i & 0xff))

export interface NumberRule {
  min: number
  max: number
  integer?: boolean
}

/** Parses a number parameter, or throws a 400 naming it. `undefined`/'' means "use the default". */
export function parseNumber(raw: string | null | undefined, name: string, rule: NumberRule, fallback?: number): number {
  if (raw == null || raw === '') {
    if (fallback === undefined) throw new HttpError(400, `missing parameter "${name}"`)
    return fallback
  }
  // Number('') and Number(' ') are 0, and parseFloat accepts trailing junk; require a plain decimal.
  const value = /^-?(\d+\.?\d*|\.\d+)$/.test(raw) ? Number(raw) : Number.NaN
  if (Number.isNaN(value)) throw new HttpError(400, `invalid parameter "${name}": ${JSON.stringify(raw)} is not a number`)
  if (rule.integer === true && !Number.isInteger(value)) throw new HttpError(400, `invalid parameter "${name}": ${raw} is not an integer`)
  if (value < rule.min || value > rule.max) throw new HttpError(400, `invalid parameter "${name}": ${raw} is outside ${rule.min}..${rule.max}`)
  return value
}

/** A final (non-1xx) HTTP status code. */
export function parseStatus(raw: string | null | undefined, name: string, fallback?: number): number {
  const code = parseNumber(raw, name, { min: 100, max: 599, integer: true }, fallback)
  if (code < 200) throw new HttpError(400, `invalid parameter "${name}": ${code} is informational (1xx) and cannot be a final answer`)
  return code
}

/** 204 and 304 must carry neither a body nor a content-length describing one. */
function isBodyless(status: number): boolean {
  return status === 204 || status === 304
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  if (isBodyless(status)) {
    res.writeHead(status, headers)
    res.end()
    return
  }
  const text = JSON.stringify(body) + '\n'
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

/** Resolves after `ms`, or rejects with an AbortError as soon as `signal` aborts (the timer is cleared). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal.reason)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Writes `chunk`; when the socket buffer is full, waits for 'drain' so memory stays bounded.
 * Rejects if the response closes first (client went away).
 */
export async function writeWithBackpressure(res: ServerResponse, chunk: Buffer | string, signal: AbortSignal): Promise<void> {
  if (!res.write(chunk)) await once(res, 'drain', { signal })
}

/** Writes `chunk` and waits until it has been handed to the OS (used before deliberately breaking the socket). */
export function writeFlushed(res: ServerResponse, chunk: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => res.write(chunk, (error) => (error == null ? resolve() : reject(error))))
}

/** The pattern's first `length` (<= 64 KiB) bytes, which is also every chunk that starts at a multiple of 64 KiB. */
export function patternChunk(length: number): Buffer {
  return PATTERN.subarray(0, length)
}

/** Streams `total` bytes of the 0..255 pattern in 64 KiB chunks; never allocates more than the shared chunk. */
export async function writePattern(res: ServerResponse, total: number, signal: AbortSignal): Promise<void> {
  for (let sent = 0; sent < total; sent += CHUNK_SIZE) {
    await writeWithBackpressure(res, patternChunk(Math.min(CHUNK_SIZE, total - sent)), signal)
  }
}

/** mulberry32: tiny, fast and good enough to make "random" faults reproducible from a seed. */
export function seededRandom(seed: string): () => number {
  let state = hashSeed(seed)
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** FNV-1a, so any string (not just numbers) works as a seed. */
function hashSeed(seed: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < seed.length; i++) hash = Math.imul(hash ^ seed.charCodeAt(i), 0x01000193)
  return hash >>> 0
}

/** Query parameters as an object; repeated keys become arrays (httpbin's `args` shape). */
export function queryObject(params: URLSearchParams): Record<string, string | string[]> {
  // No prototype, so keys like `__proto__` are kept as data instead of being swallowed.
  const out = Object.create(null) as Record<string, string | string[]>
  for (const [key, value] of params) {
    const existing = out[key]
    out[key] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value]
  }
  return out
}
