// State that must outlive a reload (limiter counts, upstream pools) is keyed by a stable identity:
// owner + policy name + a hash of that policy's config. A compile marks what it uses; committing the
// new plan retires the rest, whose disposers run once the old plan has no exchange in flight.
import { createHash } from 'node:crypto'

interface Entry {
  readonly value: unknown
  readonly dispose: ((value: never) => void) | undefined
}

function configHash(config: unknown): string {
  return createHash('sha256').update(JSON.stringify(config) ?? 'undefined').digest('hex').slice(0, 16)
}

export class KeptState {
  private readonly entries = new Map<string, Entry>()
  private pending: Set<string> | undefined

  /** Starts marking the keys a compile uses. */
  begin(): void {
    this.pending = new Set()
  }

  keep<T>(owner: string, name: string, config: unknown, create: () => T, dispose?: (value: T) => void): T {
    const key = `${owner}/${name}/${configHash(config)}`
    this.pending?.add(key)
    const existing = this.entries.get(key)
    if (existing !== undefined) return existing.value as T
    const value = create()
    this.entries.set(key, { value, dispose: dispose as ((value: never) => void) | undefined })
    return value
  }

  /** The compile succeeded: everything it did not use is retired. Returns the disposer to run later. */
  commit(): () => void {
    const used = this.pending ?? new Set<string>()
    this.pending = undefined
    const retired: Entry[] = []
    for (const [key, entry] of this.entries) {
      if (!used.has(key)) {
        this.entries.delete(key)
        retired.push(entry)
      }
    }
    this.used = used
    return () => {
      for (const entry of retired) entry.dispose?.(entry.value as never)
    }
  }

  /** The compile failed: drop what it created, keep what the plan in force uses. */
  rollback(): void {
    const created = this.pending ?? new Set<string>()
    this.pending = undefined
    for (const key of created) {
      if (this.used.has(key)) continue
      const entry = this.entries.get(key)
      this.entries.delete(key)
      entry?.dispose?.(entry.value as never)
    }
  }

  /** Shutdown: dispose of everything (closes the upstream pools). */
  disposeAll(): void {
    for (const entry of this.entries.values()) entry.dispose?.(entry.value as never)
    this.entries.clear()
  }

  private used = new Set<string>()
}
