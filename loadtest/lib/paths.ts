// Where the load tests find the repository's built programs and write their results. Compiled to
// dist/loadtest/lib/paths.js; tap runs the tests from the sources, loadtest/lib/paths.ts.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root, with a trailing slash. */
export const REPO_ROOT = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../../../' : '../../', import.meta.url))
/** The gateway's entry point (`waypost`), as built by `npm run build`. */
/** The gateway as it ships: the bundle (gateway/scripts/build.mjs). */
export const GATEWAY_MAIN = join(REPO_ROOT, 'dist/waypost/main.js')
/** The upstream stub's command line. */
export const STUB_CLI = join(REPO_ROOT, 'dist/upstream-stub/src/cli.js')
/** Where the scenarios write their JSON unless told otherwise (`--results-dir`). */
export const DEFAULT_RESULTS_DIR = join(REPO_ROOT, 'loadtest/results')

/** Throws unless every file exists: the scenarios run the built gateway and stub, not the sources. */
export function requireBuilt(files: readonly string[]): void {
  for (const file of files) if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first`)
}
