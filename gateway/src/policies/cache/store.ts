// Stored responses of one route, bounded in bytes by lru-cache (maxSize + sizeCalculation), with
// two indexes beside it: the variants of each URI (Vary, RFC 9111 §4.1) and the entries of each
// surrogate tag. lru-cache's dispose hook keeps both indexes in step with evictions.
import { LRUCache } from 'lru-cache'
import type { ResponseHeaders } from '../../core/exchange.js'
import type { CacheControl } from './cache-control.js'
import { CopyBudget } from './capture.js'

export interface StoredResponse {
  /** The LRU key: the URI key and the variant's secondary key. */
  readonly id: string
  /** `host` + path and query: the request target the response answers (primary key, §2). */
  readonly uri: string
  readonly path: string
  readonly status: number
  /** End-to-end headers only; a 304 replaces the entry with updated ones (§4.3.4). */
  readonly headers: ResponseHeaders
  readonly cacheControl: CacheControl
  readonly body: Buffer
  /** Request header names the response varies on (lower case), and the values the request had. */
  readonly varyNames: readonly string[]
  readonly varyValues: readonly string[]
  readonly tags: readonly string[]
  /** Clock readings (ms) around the exchange that produced or last validated it. */
  readonly responseTime: number
  /** Seconds (§4.2.3). */
  readonly initialAge: number
  /** Seconds (§4.2.1). */
  readonly lifetime: number
  readonly size: number
}

/** Bookkeeping per entry beyond its body: headers, keys and index slots, roughly. */
const ENTRY_OVERHEAD = 512

export function entrySize(body: Buffer, headers: ResponseHeaders, uri: string): number {
  let size = ENTRY_OVERHEAD + body.length + uri.length * 2
  for (const name in headers) {
    const value = headers[name]
    size += name.length + (Array.isArray(value) ? value.join('').length : (value?.length ?? 0))
  }
  return size
}

/** Which stored responses to drop: exactly one field is set. */
export interface PurgeSelector {
  /** A URI (`host/path?query`, an `http://` prefix is ignored) or a path (`/path?query`, any host). */
  readonly key?: string
  /** The same forms, matched as a prefix. */
  readonly prefix?: string
  /** A tag from the entry's tag header (Surrogate-Key by default). */
  readonly tag?: string
}

export class CacheStore {
  private readonly entries: LRUCache<string, StoredResponse>
  private readonly byUri = new Map<string, Set<StoredResponse>>()
  private readonly byTag = new Map<string, Set<StoredResponse>>()
  /** Copies being made hold at most maxSize more: the route's cache never holds over 2 × maxSize. */
  readonly copies: CopyBudget

  constructor(maxSize: number, private readonly onSizeChange: (bytes: number, entries: number) => void) {
    this.copies = new CopyBudget(maxSize)
    this.entries = new LRUCache<string, StoredResponse>({
      maxSize,
      sizeCalculation: (entry) => entry.size,
      dispose: (entry) => this.unindex(entry),
    })
  }

  get size(): number {
    return this.entries.size
  }

  get bytes(): number {
    return this.entries.calculatedSize
  }

  /** The variants stored for a URI (most recently stored last); marks none as used. */
  variants(uri: string): ReadonlySet<StoredResponse> | undefined {
    return this.byUri.get(uri)
  }

  put(entry: StoredResponse): boolean {
    this.entries.set(entry.id, entry)
    // lru-cache refuses (silently) an entry bigger than maxSize.
    if (this.entries.peek(entry.id) !== entry) return false
    let variants = this.byUri.get(entry.uri)
    if (variants === undefined) this.byUri.set(entry.uri, (variants = new Set()))
    variants.add(entry)
    for (const tag of entry.tags) {
      let tagged = this.byTag.get(tag)
      if (tagged === undefined) this.byTag.set(tag, (tagged = new Set()))
      tagged.add(entry)
    }
    this.onSizeChange(this.entries.calculatedSize, this.entries.size)
    return true
  }

  delete(entry: StoredResponse): void {
    if (this.entries.peek(entry.id) === entry) this.entries.delete(entry.id)
    this.onSizeChange(this.entries.calculatedSize, this.entries.size)
  }

  /** Removes every variant of a URI (invalidation, §4.4); returns how many. */
  deleteUri(uri: string): number {
    const variants = this.byUri.get(uri)
    if (variants === undefined) return 0
    const doomed = [...variants]
    for (const entry of doomed) this.delete(entry)
    return doomed.length
  }

  purge(selector: PurgeSelector): number {
    let doomed: StoredResponse[] = []
    if (selector.tag !== undefined) doomed = [...(this.byTag.get(selector.tag) ?? [])]
    else if (selector.key !== undefined) {
      const key = withoutScheme(selector.key)
      if (!key.startsWith('/')) doomed = [...(this.byUri.get(key) ?? [])]
      else for (const variants of this.byUri.values()) for (const entry of variants) if (entry.path === key) doomed.push(entry)
    } else if (selector.prefix !== undefined) {
      const prefix = withoutScheme(selector.prefix)
      const byPath = prefix.startsWith('/')
      for (const variants of this.byUri.values()) for (const entry of variants) if ((byPath ? entry.path : entry.uri).startsWith(prefix)) doomed.push(entry)
    }
    for (const entry of doomed) this.delete(entry)
    return doomed.length
  }

  clear(): void {
    this.entries.clear()
    this.onSizeChange(0, 0)
  }

  private unindex(entry: StoredResponse): void {
    const variants = this.byUri.get(entry.uri)
    if (variants !== undefined && variants.delete(entry) && variants.size === 0) this.byUri.delete(entry.uri)
    for (const tag of entry.tags) {
      const tagged = this.byTag.get(tag)
      if (tagged !== undefined && tagged.delete(entry) && tagged.size === 0) this.byTag.delete(tag)
    }
  }
}

function withoutScheme(key: string): string {
  return key.replace(/^https?:\/\//, '')
}
