// Progress lines on stderr, so stdout keeps only the report; and the clock every sample uses.
import { performance } from 'node:perf_hooks'

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Milliseconds since this process started its clock (performance.now()), the time base of every sample. */
export const now = (): number => performance.now()

const t0 = now()

/**
 * How a progress line is stamped: `clock`, the wall-clock time (the benchmarks, whose runs are
 * compared with what else ran on the machine then), or `elapsed`, seconds since the start (the
 * scenarios, whose timelines count from it).
 */
export type LogStamp = 'clock' | 'elapsed'
let stamp: LogStamp = 'elapsed'

export function setLogStamp(style: LogStamp): void {
  stamp = style
}

/** One progress line on stderr. */
export function log(message: string): void {
  const prefix = stamp === 'clock' ? new Date().toTimeString().slice(0, 8) : `${((now() - t0) / 1000).toFixed(1).padStart(6)}s`
  process.stderr.write(`[${prefix}] ${message}\n`)
}
