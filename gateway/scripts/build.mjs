// `npm run build` and `npm start`'s prestart: compile with tsc, then bundle the gateway, but let
// `npm start` skip both when dist/ is already the build of these sources (tsc takes 10-20 s on 2
// cores; `tsc -b` still takes ~2 s to find nothing to do; this check takes a few milliseconds).
//
// The bundle, dist/waypost/main.js, is what runs: the `waypost` bin, the image, `npm start`, the
// tests' and load tests' gateway processes. esbuild joins tsc's output (dist/gateway/src) and the
// dependencies it imports into a few files, a chunk per lazy import (tracing, certificates, workers):
// loading some 600 module files is what most of the gateway's idle memory was, and one file instead
// takes 13-14 MiB off idle RSS (docs/performance.md#memory). tsc still type-checks and compiles, and
// unit tests import its output; esbuild only joins files, it does not transform the code.
//
//   node gateway/scripts/build.mjs             always compile (type-check), as `tsc -p tsconfig.json`
//   node gateway/scripts/build.mjs --if-stale  compile only when a source changed since the last good build
//   node gateway/scripts/build.mjs --check     say whether a build is due (exit 1 when it is), compile nothing
//
// Plain JavaScript: it runs before anything is compiled. It works in the current directory (npm runs
// scripts in the package's root). After a build that passed, dist/.build-ok records when that build
// started and which sources it saw; a build that fails removes it, so a failing tree is never skipped.
// Stale means: no record, a different set of sources (one added or deleted), or any source, the
// tsconfig, package.json or package-lock.json modified after the recorded build started.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { RECORD_NAME, TSCONFIG, readTsconfig, sources, staleness } from './build-record.mjs'

const ifStale = process.argv.includes('--if-stale')
const checkOnly = process.argv.includes('--check')
const tsconfig = readTsconfig()
const outDir = tsconfig.compilerOptions?.outDir ?? 'dist'
const inputs = sources(tsconfig)
const BUNDLE_DIR = join(outDir, 'waypost')
const BUNDLE_MAIN = join(BUNDLE_DIR, 'main.js')
// A tree without the gateway has nothing to bundle (gateway/test/build.test.ts runs this script on a
// small project of its own).
const bundles = existsSync('gateway/src/main.ts')
if (ifStale || checkOnly) {
  const reason = staleness(outDir, inputs) ?? (!bundles || existsSync(BUNDLE_MAIN) ? undefined : `no ${BUNDLE_MAIN}`)
  if (reason === undefined) {
    console.error(checkOnly ? `build: ${outDir}/ is up to date` : `build: ${outDir}/ is up to date, skipping tsc`)
    process.exit(0)
  }
  console.error(checkOnly ? `build: a build is due (${reason})` : `build: compiling with tsc (${reason})`)
  if (checkOnly) process.exit(1)
}

const startedAt = new Date()
const recordFile = join(outDir, RECORD_NAME)
rmSync(recordFile, { force: true })
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
const result = spawnSync(process.execPath, [tsc, '-p', TSCONFIG], { stdio: 'inherit' })
if (result.status !== 0) process.exit(result.status ?? 1)
if (bundles) await bundle()
if (inputs !== undefined) {
  mkdirSync(outDir, { recursive: true })
  writeFileSync(recordFile, JSON.stringify({ sources: inputs }) + '\n')
  // Dated when tsc started: a source saved during the build is newer, so the next start rebuilds.
  utimesSync(recordFile, startedAt, startedAt)
}

/** dist/gateway/src/main.js and what it imports, joined into dist/waypost/ (see the top of this file). */
async function bundle() {
  const { build } = await import('esbuild')
  rmSync(BUNDLE_DIR, { recursive: true, force: true })
  const result = await build({
    entryPoints: [join(outDir, 'gateway/src/main.js')],
    outdir: BUNDLE_DIR,
    bundle: true,
    // A chunk per dynamic import, so what the gateway loads only when a policy needs it stays unloaded.
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // The CommonJS dependencies (pino, prom-client, ioredis...) call require() for Node's modules; in
    // an ES module there is none unless each chunk makes one.
    banner: { js: "import { createRequire as __waypostCreateRequire } from 'node:module'; const require = __waypostCreateRequire(import.meta.url);" },
    // Not minified: it saves under 1 MiB and would cost readable stack traces.
    logLevel: 'warning',
  })
  if (result.errors.length > 0) process.exit(1)
  chmodSync(BUNDLE_MAIN, 0o755)
}
