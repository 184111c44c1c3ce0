// Where JWT verification keys come from: a JWKS URL (fetched before /ready, cached per its
// Cache-Control, refreshed in the background, refetched at most once per interval for a key id it
// does not know, the last good keys kept when a refresh fails), a local JWKS file (watched), or one
// PEM public key or shared secret. jose's createLocalJWKSet picks the key for a token's header.
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { watchFiles } from '../../core/file-watch.js'
import { request } from '../../proxy/undici.js'
import { createLocalJWKSet, errors, type JSONWebKeySet, type JWSHeaderParameters, type FlattenedJWSInput, type CryptoKey } from 'jose'
import type { Logger } from 'pino'
import { unrefTimer, type Clock, type TimerHandle } from '../../core/clock.js'

/** The keys could not be had at all (never fetched, file missing): the answer is 503, not 401. */
export class KeysUnavailable extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'KeysUnavailable'
  }
}

/** What jwtVerify calls to find the key for a token. */
export type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey | KeyObject | Uint8Array>

export interface KeySource {
  readonly resolve: KeyResolver
  /** Resolves once keys are first loaded (never rejects). */
  readonly ready: Promise<void>
  /** What `/ready` names while waiting. */
  readonly what: string
  /** Changes whenever a different set of keys is installed: what verified against an older one is checked again. */
  readonly generation: number
  dispose(): void
}

/** The keys last installed, and a generation that moves only when their text changes (a refresh that brings the same set keeps it). */
class InstalledKeys {
  keys: LocalSet | undefined
  generation = 0
  private text: string | undefined

  install(text: string): LocalSet {
    const keys = keySet(text)
    if (text !== this.text) this.generation++
    this.text = text
    this.keys = keys
    return keys
  }
}

/** A JWKS document is a few KiB; anything past this is not one. */
const MAX_JWKS_BYTES = 1024 * 1024
/** Retry delays after a failed fetch: 1 s, doubling, at most this. */
const MAX_RETRY_MS = 30_000

export interface RemoteJwksOptions {
  readonly url: string
  readonly minAgeMs: number
  readonly maxAgeMs: number
  readonly unknownKidIntervalMs: number
  readonly timeoutMs: number
  readonly clock: Clock
  readonly log: Logger
}

type LocalSet = ReturnType<typeof createLocalJWKSet>

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((done) => (resolve = done))
  return { promise, resolve }
}

/** The `max-age` of a Cache-Control value, in seconds; undefined when none (or no-store/no-cache). */
export function cacheMaxAge(cacheControl: string | string[] | undefined): number | undefined {
  if (cacheControl === undefined) return undefined
  const text = Array.isArray(cacheControl) ? cacheControl.join(',') : cacheControl
  let maxAge: number | undefined
  for (const directive of text.split(',')) {
    const [name = '', value] = directive.trim().toLowerCase().split('=', 2)
    if (name === 'no-store' || name === 'no-cache') return 0
    if (name === 'max-age' && value !== undefined && /^"?\d+"?$/.test(value)) maxAge = Number(value.replace(/"/g, ''))
  }
  return maxAge
}

/** A JWKS served over HTTP. */
export class RemoteJwks implements KeySource {
  readonly what: string
  readonly ready: Promise<void>
  private readonly markReady: () => void
  private readonly installed = new InstalledKeys()
  private fetching: Promise<void> | undefined
  private timer: TimerHandle | undefined
  private failures = 0
  private lastUnknownKidFetch = Number.NEGATIVE_INFINITY
  private disposed = false
  /** Fetches made so far (tests and the debug log read it). */
  fetches = 0

  constructor(private readonly options: RemoteJwksOptions) {
    this.what = `JWKS ${options.url}`
    const ready = deferred()
    this.ready = ready.promise
    this.markReady = ready.resolve
    void this.refresh()
  }

  get generation(): number {
    return this.installed.generation
  }

  readonly resolve: KeyResolver = async (header, token) => {
    if (this.installed.keys === undefined) await this.fetching
    const keys = this.installed.keys
    if (keys === undefined) throw new KeysUnavailable(`no keys from ${this.options.url} yet`)
    try {
      return await keys(header, token)
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error
      // A key id we do not know: the issuer may have rotated. Refetch, at most once per interval,
      // so a flood of made-up key ids cannot turn the gateway into a JWKS hammer.
      const now = this.options.clock.now()
      if (this.fetching === undefined && now - this.lastUnknownKidFetch < this.options.unknownKidIntervalMs) throw error
      if (this.fetching === undefined) this.lastUnknownKidFetch = now
      await this.refresh()
      return this.installed.keys!(header, token)
    }
  }

  /** One fetch at a time: callers during a fetch share it. Never rejects. */
  private refresh(): Promise<void> {
    if (this.fetching !== undefined) return this.fetching
    if (this.disposed) return Promise.resolve()
    this.options.clock.clearTimeout(this.timer)
    this.fetching = this.fetchOnce()
      .then(
        (maxAgeSeconds) => {
          this.failures = 0
          const { minAgeMs, maxAgeMs } = this.options
          this.schedule(Math.min(maxAgeMs, Math.max(minAgeMs, (maxAgeSeconds ?? Number.POSITIVE_INFINITY) * 1000)))
          this.markReady()
        },
        (error: unknown) => {
          this.failures++
          const retryMs = Math.min(MAX_RETRY_MS, this.options.minAgeMs, 1000 * 2 ** (this.failures - 1))
          this.options.log.warn({ url: this.options.url, err: (error as Error).message, failures: this.failures, retryMs, keptKeys: this.installed.keys !== undefined }, 'JWKS fetch failed; the last good keys stay in use')
          this.schedule(retryMs)
        },
      )
      .finally(() => (this.fetching = undefined))
    return this.fetching
  }

  private schedule(ms: number): void {
    if (this.disposed) return
    this.options.clock.clearTimeout(this.timer)
    this.timer = this.options.clock.setTimeout(() => void this.refresh(), ms)
    unrefTimer(this.timer)
  }

  /** Fetches and installs the set; resolves with the response's max-age (seconds). */
  private async fetchOnce(): Promise<number | undefined> {
    this.fetches++
    const response = await request(this.options.url, {
      method: 'GET',
      headers: { accept: 'application/jwk-set+json, application/json' },
      signal: AbortSignal.timeout(this.options.timeoutMs),
      headersTimeout: this.options.timeoutMs,
      bodyTimeout: this.options.timeoutMs,
    })
    if (response.statusCode !== 200) {
      await response.body.dump()
      throw new Error(`HTTP ${response.statusCode}`)
    }
    const declared = Number(response.headers['content-length'] ?? 0)
    if (declared > MAX_JWKS_BYTES) {
      await response.body.dump()
      throw new Error(`the JWKS is ${declared} bytes, over the ${MAX_JWKS_BYTES}-byte limit`)
    }
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > MAX_JWKS_BYTES) throw new Error(`the JWKS is over the ${MAX_JWKS_BYTES}-byte limit`)
      chunks.push(chunk)
    }
    const keys = this.installed.install(Buffer.concat(chunks).toString('utf8'))
    this.options.log.debug({ url: this.options.url, keys: keys.jwks().keys.length }, 'JWKS loaded')
    return cacheMaxAge(response.headers['cache-control'])
  }

  dispose(): void {
    this.disposed = true
    this.options.clock.clearTimeout(this.timer)
  }
}

/** A JWKS document parsed and checked: jose refuses what it cannot use when a key is looked up, so the shape is checked here. */
export function keySet(text: string): LocalSet {
  const parsed = JSON.parse(text) as unknown
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as { keys?: unknown }).keys)) throw new Error('not a JWKS: expected {"keys": [...]}')
  const keys = (parsed as JSONWebKeySet).keys
  for (const key of keys) {
    // A private key in a published set is a leak at the issuer; refuse to use the set rather than ignore it.
    if (typeof key !== 'object' || key === null || typeof key.kty !== 'string') throw new Error('not a JWKS: a key without "kty"')
    if ('d' in key) throw new Error('the JWKS holds a private key: refusing it')
    if (key.kty === 'oct') throw new Error('the JWKS holds a symmetric ("oct") key: use `secret` for HS* tokens')
  }
  return createLocalJWKSet(parsed as JSONWebKeySet)
}

/** A JWKS file, reloaded when it changes (the directory is watched: editors rename, Kubernetes swaps `..data`). */
export class FileJwks implements KeySource {
  readonly what: string
  readonly ready: Promise<void>
  private readonly markReady: () => void
  private readonly installed = new InstalledKeys()
  private readonly watcher: { close(): void }
  private loading: Promise<void>

  constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {
    this.what = `JWKS file ${file}`
    const ready = deferred()
    this.ready = ready.promise
    this.markReady = ready.resolve
    this.loading = this.load()
    this.watcher = watchFiles([file], () => void (this.loading = this.load()), {
      debounceMs: 100,
      onWatchError: (folder, error) => log.warn({ file, folder, err: error.message }, 'JWKS file: cannot watch its directory; changes need a reload'),
    })
  }

  private async load(): Promise<void> {
    try {
      const keys = this.installed.install(await readFile(this.file, 'utf8'))
      this.markReady()
      this.log.info({ file: this.file, keys: keys.jwks().keys.length }, 'JWKS file loaded')
    } catch (error) {
      this.log.error({ file: this.file, err: (error as Error).message, keptKeys: this.installed.keys !== undefined }, 'JWKS file rejected; the last good keys stay in use')
    }
  }

  get generation(): number {
    return this.installed.generation
  }

  readonly resolve: KeyResolver = async (header, token) => {
    if (this.installed.keys === undefined) await this.loading
    const keys = this.installed.keys
    if (keys === undefined) throw new KeysUnavailable(`no keys from ${this.file}`)
    return keys(header, token)
  }

  dispose(): void {
    this.watcher.close()
  }
}

/** One key for every token: a PEM public key (or certificate), or an HMAC secret. */
export class StaticKey implements KeySource {
  readonly ready = Promise.resolve()
  /** One key for the plan's life (a new key is a new plan). */
  readonly generation = 0
  readonly resolve: KeyResolver

  constructor(
    readonly what: string,
    key: KeyObject,
  ) {
    this.resolve = () => Promise.resolve(key)
  }

  static publicKey(pem: string): StaticKey {
    const key = createPublicKey(pem)
    return new StaticKey('public key', key)
  }

  static secret(secret: string): StaticKey {
    return new StaticKey('shared secret', createSecretKey(Buffer.from(secret, 'utf8')))
  }

  dispose(): void {}
}
