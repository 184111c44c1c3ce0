// Small helpers shared by the benchmark modules: statistics and formatting.

/** Median of the finite values, NaN when there are none. */
export function median(values: readonly number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

export function min(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite)
  return finite.length === 0 ? NaN : Math.min(...finite)
}

export function max(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite)
  return finite.length === 0 ? NaN : Math.max(...finite)
}

/** Nearest-rank percentile (p in 0..1) of an ascending-sorted array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))
  return sorted[rank]!
}

/** Fixed-point number, or "-" for NaN/Infinity. */
export function fmt(value: number, digits = 0): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-'
}

/** Number with an explicit sign ("+0.12"), or "-". */
export function signed(value: number, digits = 2): string {
  return Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(digits)}` : '-'
}

/** Ratio as "0.61x", or "-". */
export function ratio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : '-'
}

/** Left- or right-aligned text table. The first row is the header; columns listed in `left` are left-aligned. */
/** Environment variables as a shell would set them: `MALLOC_ARENA_MAX=1 OTHER=x`. */
export function assignments(variables: Readonly<Record<string, string>>): string[] {
  return Object.entries(variables).map(([name, value]) => `${name}=${value}`)
}

export function table(rows: readonly (readonly string[])[], left: ReadonlySet<number> = new Set([0])): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  const line = (row: readonly string[]): string =>
    row.map((cell, i) => (left.has(i) ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd()
  const [head, ...body] = rows
  if (head === undefined) return ''
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n')
}
