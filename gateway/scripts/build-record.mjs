// What `gateway/scripts/build.mjs` decides with: which sources tsconfig.json compiles, and whether
// its outDir is the build of them. Plain JavaScript: it runs before anything is compiled. `root` is
// the package's folder (npm runs scripts there); paths in the record are relative to it.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

export const TSCONFIG = 'tsconfig.json'
export const RECORD_NAME = '.build-ok'
const EXTRA_INPUTS = [TSCONFIG, 'package.json', 'package-lock.json']

/** Every `.ts` file under `dir`, recursively (node_modules excluded). */
function typescriptFiles(dir) {
  const found = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') found.push(...typescriptFiles(path))
    } else if (entry.name.endsWith('.ts')) {
      found.push(path)
    }
  }
  return found
}

/** tsconfig.json as JSON, or {} when it is not plain JSON (comments): then every build is due. */
export function readTsconfig(root = '.') {
  try {
    return JSON.parse(readFileSync(join(root, TSCONFIG), 'utf8'))
  } catch {
    return {}
  }
}

/** The sources tsconfig.json compiles, sorted, or undefined when its `include` is not of the `DIR/**\/*.ts` form this check understands. */
export function sources(tsconfig, root = '.') {
  const include = tsconfig.include
  if (!Array.isArray(include)) return undefined
  const files = []
  for (const pattern of include) {
    const match = /^([\w./-]+)\/\*\*\/\*\.ts$/.exec(pattern)
    if (match === null) return undefined
    const dir = join(root, match[1])
    if (existsSync(dir)) files.push(...typescriptFiles(dir).map((file) => relative(root, file)))
  }
  return files.sort()
}

/** Why `outDir` needs a build, or undefined when it is the build of these sources. */
export function staleness(outDir, inputs, root = '.') {
  if (inputs === undefined) return 'tsconfig.json include is not DIR/**/*.ts'
  const recordFile = join(root, outDir, RECORD_NAME)
  let record
  try {
    record = JSON.parse(readFileSync(recordFile, 'utf8'))
  } catch {
    return 'no record of a good build'
  }
  if (JSON.stringify(record.sources) !== JSON.stringify(inputs)) return 'sources were added or removed'
  const builtAt = statSync(recordFile).mtimeMs
  for (const file of [...inputs, ...EXTRA_INPUTS]) {
    const path = join(root, file)
    if (existsSync(path) && statSync(path).mtimeMs > builtAt) return `${file} changed`
  }
  return undefined
}
