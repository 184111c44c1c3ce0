// The `workers` setting: how many gateway processes serve the one listen port. Resolved once, at
// start (flag > WAYPOST_WORKERS > the file > 1), by the process that would become their supervisor.
import { availableParallelism } from 'node:os'

export const MAX_WORKERS = 64

/** `auto` or a whole number 1..64 as a flag or variable gives it; throws with the reason otherwise. */
export function parseWorkers(text: string): number | 'auto' {
  if (text === 'auto') return 'auto'
  if (!/^\d+$/.test(text)) throw new Error(`expected a whole number from 1 to ${MAX_WORKERS}, or auto, got "${text}"`)
  const count = Number(text)
  if (count < 1 || count > MAX_WORKERS) throw new Error(`expected a whole number from 1 to ${MAX_WORKERS}, or auto, got ${count}`)
  return count
}

/** The number of workers a setting means: `auto` is one per CPU this process may use (its affinity), at most 64. */
export function workerCount(setting: number | 'auto' | undefined): number {
  if (setting === undefined) return 1
  if (setting === 'auto') return Math.min(MAX_WORKERS, Math.max(1, availableParallelism()))
  return setting
}

/**
 * Whether net.Server#listen takes `reusePort` (SO_REUSEPORT: each worker binds its own socket and
 * the kernel spreads connections): Node 22.12+ and 23.1+. Older runtimes ignore the option, so the
 * version decides, not a trial bind.
 */
export function listenSupportsReusePort(version: string = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number)
  if (major === 22) return minor >= 12
  if (major === 23) return minor >= 1
  return major > 23
}
