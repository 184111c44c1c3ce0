// Durations and sizes as users write them in YAML ("250ms", "2s", "1m", or a bare number of
// milliseconds). In core so every folder (policies, proxy, store, config) can read them.
import { Type, type Static } from '@sinclair/typebox'

/** What a field says about itself: the docs' field tables and the JSON Schema read both. */
export interface FieldOptions {
  description?: string
  default?: number | string
}

/** A field factory for a quantity written as a number or a number with a unit (`pattern`). */
function quantity(pattern: string, base: { description: string; examples: string[]; errorMessage: string }) {
  return (options: FieldOptions = {}) => Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern })], { ...base, ...options })
}

/** A duration field. */
export const duration = quantity('^\\d+(\\.\\d+)?(ms|s|m|h)$', {
  description: 'A duration: "250ms", "2s", "1.5m", "1h", or a number of milliseconds.',
  examples: ['250ms', '30s'],
  errorMessage: 'expected a duration such as "250ms", "2s", "1m" or a number of milliseconds',
})

export const Duration = duration()
export type Duration = Static<typeof Duration>

const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** Milliseconds for a schema-valid duration. */
export function toMs(value: Duration): number {
  if (typeof value === 'number') return value
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value)
  if (match === null) throw new Error(`invalid duration "${value}"`)
  return Math.round(Number(match[1]) * unitMs[match[2]!]!)
}

/** A size field. */
export const size = quantity('^\\d+(KiB|MiB|GiB|B)$', {
  description: 'A size in bytes: "64KiB", "1MiB", "512B", or a number of bytes.',
  examples: ['64KiB', '1MiB'],
  errorMessage: 'expected a size such as "64KiB", "1MiB", "512B" or a number of bytes',
})

export const Size = size()
export type Size = Static<typeof Size>

const unitBytes: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }

/** Bytes for a schema-valid size. */
export function toBytes(value: Size): number {
  if (typeof value === 'number') return value
  const match = /^(\d+)(KiB|MiB|GiB|B)$/.exec(value)
  if (match === null) throw new Error(`invalid size "${value}"`)
  return Number(match[1]) * unitBytes[match[2]!]!
}
