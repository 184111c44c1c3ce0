// Command-line options of the load tests. Two kinds of value: a flag alone (`--rate 300`), or, in
// the benchmarks, a flag that wins over an environment variable that wins over a preset (`--quick`)
// that wins over the default. Anything that is not a valid value is a UsageError, which main.ts
// prints with the usage text and exits 2 on.
import { resolve } from 'node:path'
import { DEFAULT_RESULTS_DIR } from './paths.js'

export class UsageError extends Error {}

/** `--help` / `-h`, for every load test with a usage text. */
export const HELP_FLAG = { help: { type: 'boolean', short: 'h', default: false } } as const

/** What node's parseArgs throws for an unknown flag or a missing value. */
export function isParseArgsError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')
}

/** The number a flag gives, or `fallback` without the flag. */
export function numberFlag(raw: string | undefined, flag: string, fallback: number, min = 0): number {
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < min) throw new UsageError(`--${flag}: expected a number >= ${min}, got ${JSON.stringify(raw)}`)
  return value
}

/** `--results-dir`, absolute: the JSON is written there whatever the run changes its directory to. */
export function resultsDirFlag(raw: string | undefined): string {
  return resolve(raw ?? DEFAULT_RESULTS_DIR)
}

/** A number from the flag, else from the environment variable `envName`, else `fallback`. */
export function numberSetting(flag: string | undefined, envName: string, fallback: number, { integer = false, minimum = 0 } = {}): number {
  const raw = flag ?? process.env[envName]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < minimum || (integer && !Number.isInteger(value))) {
    throw new UsageError(`${envName} (or its flag): expected ${integer ? 'an integer' : 'a number'} >= ${minimum}, got "${raw}"`)
  }
  return value
}

/** A string from the flag, else from the environment variable `envName`, else `fallback`. */
export function stringSetting(flag: string | undefined, envName: string, fallback: string): string {
  const raw = flag ?? process.env[envName]
  return raw === undefined || raw === '' ? fallback : raw
}

/** The flag if given, else whether `envName` is set to something other than empty, 0 or false. */
export function booleanSetting(flag: boolean | undefined, envName: string): boolean {
  if (flag !== undefined) return flag
  const raw = process.env[envName]
  return raw !== undefined && raw !== '' && raw !== '0' && raw !== 'false'
}
