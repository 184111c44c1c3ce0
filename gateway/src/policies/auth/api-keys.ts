// API keys from a file (YAML or JSON; a mounted Kubernetes Secret is such a file), watched and
// reloaded on change. Only SHA-256 hashes are stored; a presented key is hashed and compared with
// every stored hash in constant time (no early exit), so neither the file nor the timing gives one away.
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { watchFiles } from '../../core/file-watch.js'
import YAML from 'yaml'
import type { Logger } from 'pino'

export interface ApiKey {
  readonly name: string
  readonly hash: Buffer
  readonly roles: readonly string[]
  readonly rateLimitKey: string | undefined
}

/** The SHA-256 of a key, as stored in the file (lower-case hex). */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex')
}

/** Parses and checks a keys file; throws naming the first problem (by entry). */
export function parseApiKeys(text: string): ApiKey[] {
  const document = YAML.parse(text) as unknown
  const list = (document as { keys?: unknown } | null)?.keys
  if (!Array.isArray(list)) throw new Error('expected `keys:` with a list of { name, sha256, roles, rateLimitKey }')
  const names = new Set<string>()
  const hashes = new Set<string>()
  return list.map((entry: unknown, index): ApiKey => {
    const where = `keys[${index}]`
    if (typeof entry !== 'object' || entry === null) throw new Error(`${where}: expected { name, sha256, roles }`)
    const { name, sha256, roles, rateLimitKey, ...rest } = entry as Record<string, unknown>
    const unknown = Object.keys(rest)
    if (unknown.length > 0) throw new Error(`${where}: unknown field ${unknown.join(', ')}${unknown.includes('key') ? ' (store the SHA-256 of the key as `sha256`, never the key)' : ''}`)
    if (typeof name !== 'string' || name === '') throw new Error(`${where}.name: expected a name`)
    if (names.has(name)) throw new Error(`${where}.name: "${name}" is used twice`)
    if (typeof sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(sha256)) throw new Error(`${where}.sha256: expected the key's SHA-256 as 64 hex digits`)
    if (hashes.has(sha256.toLowerCase())) throw new Error(`${where}.sha256: the same key is listed twice`)
    if (roles !== undefined && !(Array.isArray(roles) && roles.every((role) => typeof role === 'string'))) throw new Error(`${where}.roles: expected a list of strings`)
    if (rateLimitKey !== undefined && typeof rateLimitKey !== 'string') throw new Error(`${where}.rateLimitKey: expected a string`)
    names.add(name)
    hashes.add(sha256.toLowerCase())
    return { name, hash: Buffer.from(sha256, 'hex'), roles: (roles as string[] | undefined) ?? [], rateLimitKey }
  })
}

/** The keys of one file, reloaded when it changes; a bad edit keeps the last good keys. */
export class ApiKeyStore {
  readonly ready: Promise<void>
  private markReady!: () => void
  private keys: readonly ApiKey[] = []
  private loaded = false
  private readonly watcher: { close(): void }
  private loading: Promise<void>

  constructor(
    readonly file: string,
    private readonly log: Logger,
  ) {
    this.ready = new Promise((resolve) => (this.markReady = resolve))
    this.loading = this.load()
    this.watcher = watchFiles([file], () => void (this.loading = this.load()), {
      debounceMs: 100,
      onWatchError: (folder, error) => log.warn({ file, folder, err: error.message }, "API keys: cannot watch the file's folder; changes need a reload"),
    })
  }

  private async load(): Promise<void> {
    try {
      this.keys = parseApiKeys(await readFile(this.file, 'utf8'))
      this.loaded = true
      this.markReady()
      this.log.info({ file: this.file, keys: this.keys.length }, 'API keys loaded')
    } catch (error) {
      this.log.error({ file: this.file, err: (error as Error).message, keptKeys: this.keys.length }, 'API keys file rejected; the last good keys stay in use')
    }
  }

  /** The key whose hash matches, after comparing with all of them; undefined when none does. */
  async find(presented: string): Promise<ApiKey | undefined | 'unavailable'> {
    if (!this.loaded) await this.loading
    if (!this.loaded) return 'unavailable'
    const hash = createHash('sha256').update(presented, 'utf8').digest()
    let found: ApiKey | undefined
    for (const key of this.keys) {
      // No early exit: the time taken does not depend on which key (if any) matched.
      if (timingSafeEqual(hash, key.hash) && found === undefined) found = key
    }
    return found
  }

  dispose(): void {
    this.watcher.close()
  }
}
