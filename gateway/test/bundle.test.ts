// The gateway ships as a bundle (gateway/scripts/build.mjs): dist/waypost/main.js and its chunks,
// which the `waypost` bin, the image, the manifests, `npm start`, these tests and the load tests all
// run. Loading a few files instead of some 600 is 13-14 MiB of idle RSS (docs/performance.md#memory);
// these tests keep the bundle what it is meant to be: self-contained, and lazy where the code is.
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { dirname, join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { IMAGE_MAIN } from '../src/core/node-flags.js'
import { MAIN } from './helpers.js'

const BUNDLE_DIR = dirname(MAIN)
const root = (path: string): string => join(BUNDLE_DIR, '../..', path)

/**
 * The specifiers a chunk imports statically. esbuild hoists them to the top of each file, after the
 * shebang and the banner that gives the CommonJS dependencies a `require`.
 */
function staticImports(source: string): string[] {
  const statement = /\s*(?:import\s*(?:[\w$*{}\s,]+?\s*from\s*)?(["'])([^"']+)\1|const require = __waypostCreateRequire\(import\.meta\.url\));?/y
  const specifiers: string[] = []
  statement.lastIndex = source.startsWith('#!') ? source.indexOf('\n') + 1 : 0
  for (let match = statement.exec(source); match !== null; match = statement.exec(source)) {
    if (match[2] !== undefined) specifiers.push(match[2])
  }
  return specifiers
}

const isBuiltin = (specifier: string): boolean => specifier.startsWith('node:') || builtinModules.includes(specifier)

/** Every file main.js loads before it runs a line: it and what it imports statically, transitively. */
function loadedAtStart(): Map<string, string[]> {
  const files = new Map<string, string[]>()
  const visit = (file: string): void => {
    if (files.has(file)) return
    const specifiers = staticImports(readFileSync(file, 'utf8'))
    files.set(file, specifiers)
    for (const specifier of specifiers) if (specifier.startsWith('./')) visit(join(dirname(file), specifier))
  }
  visit(MAIN)
  return files
}

t.test('the bin, the image, npm start and the tests all run the bundle', async (t) => {
  t.ok(existsSync(MAIN), `${MAIN} is built by npm run build`)
  const pkg = JSON.parse(readFileSync(root('package.json'), 'utf8')) as { bin: Record<string, string> }
  t.equal(pkg.bin.waypost, 'dist/waypost/main.js')
  t.equal(IMAGE_MAIN, '/app/dist/waypost/main.js')
  t.match(readFileSync(root('gateway/scripts/start.ts'), 'utf8'), "dist('../../waypost/main.js')")
  const version = spawnSync(process.execPath, [MAIN, 'version'], { encoding: 'utf8' })
  t.equal(version.status, 0)
  t.match(version.stdout, /^waypost \d+\.\d+\.\d+/, 'finds package.json from the bundle')
})

t.test('what main.js loads at start is its own chunks and Node modules only', async (t) => {
  const files = loadedAtStart()
  t.ok(files.size >= 2 && files.size <= 12, `a handful of files (${files.size}), not hundreds`)
  for (const [file, specifiers] of files) {
    t.ok(specifiers.length > 0, `${file}: imports were read (the parser sees esbuild's layout)`)
    const foreign = specifiers.filter((specifier) => !specifier.startsWith('./') && !isBuiltin(specifier))
    t.same(foreign, [], `${file}: no package imported from node_modules`)
  }
})

t.test('tracing, certificates and pretty logs stay in chunks loaded on use', async (t) => {
  const atStart = [...loadedAtStart().keys()].map((file) => readFileSync(file, 'utf8'))
  // A name from each library's own code: the OpenTelemetry SDK, node-forge, pino-pretty.
  for (const [what, marker] of [
    ['the OpenTelemetry SDK (tracing off)', 'BatchSpanProcessorBase'],
    ['node-forge (waypost certs)', 'pki.rsa'],
    ['pino-pretty (--log-format pretty)', 'prettyFactory'],
  ] as const) {
    t.notOk(atStart.some((source) => source.includes(marker)), `${what} is not loaded at start`)
  }
})
