// gateway/scripts/build.mjs: `npm start`'s prestart compiles only when a source changed since the
// last good build (tsc takes 10-20 s here), and `npm run build` always compiles. Run on a small
// project of its own in a temporary folder, with this repository's TypeScript. Each kind of change
// is judged by the script's own check (build-record.mjs) in this process, so only the four builds
// that matter run tsc.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { readTsconfig, sources, staleness } from '../scripts/build-record.mjs'

const BUILD = fileURLToPath(new URL('../scripts/build.mjs', import.meta.url))

function project(): string {
  const root = mkdtempSync(join(tmpdir(), 'waypost-build-'))
  mkdirSync(join(root, 'src', 'deep'), { recursive: true })
  writeFileSync(
    join(root, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, rootDir: '.', outDir: 'out', types: [] }, include: ['src/**/*.ts'] }),
  )
  writeFileSync(join(root, 'package.json'), '{"type": "module"}\n')
  writeFileSync(join(root, 'src', 'a.ts'), 'export const a: number = 1\n')
  writeFileSync(join(root, 'src', 'deep', 'b.ts'), "import { a } from '../a.js'\nexport const b: number = a + 1\n")
  return root
}

function build(root: string, ...args: string[]): { status: number | null; stderr: string; output: string } {
  const result = spawnSync(process.execPath, [BUILD, ...args], { cwd: root, encoding: 'utf8' })
  return { status: result.status, stderr: result.stderr, output: result.stdout + result.stderr }
}

/** Why the project needs a build, as build.mjs --if-stale decides; undefined when it does not. */
function due(root: string): string | undefined {
  return staleness('out', sources(readTsconfig(root), root), root)
}

/** Dates a file `seconds` from now: an edit (0), or one from long ago (negative). */
function touch(file: string, seconds = 0): void {
  const when = new Date(Date.now() + seconds * 1000)
  utimesSync(file, when, when)
}

t.test('--if-stale compiles once, skips tsc until a source changes; a failed build is never skipped; build always compiles', async (t) => {
  const root = project()
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const out = join(root, 'out', 'src', 'a.js')

  const first = build(root, '--if-stale')
  t.equal(first.status, 0, first.output)
  t.match(first.stderr, /build: compiling with tsc \(no record of a good build\)/)
  const built = statSync(out).mtimeMs
  const second = build(root, '--if-stale')
  t.equal(second.status, 0, second.output)
  t.match(second.stderr, 'build: out/ is up to date, skipping tsc')
  t.equal(statSync(out).mtimeMs, built, 'tsc did not run: the output is untouched')

  touch(join(root, 'src', 'deep', 'b.ts'))
  t.equal(due(root), 'src/deep/b.ts changed', 'an edited source')
  touch(join(root, 'src', 'deep', 'b.ts'), -3600)
  t.equal(due(root), undefined, 'dated before the build again: up to date')
  for (const file of ['tsconfig.json', 'package.json']) {
    touch(join(root, file))
    t.equal(due(root), `${file} changed`)
    touch(join(root, file), -3600)
  }
  writeFileSync(join(root, 'src', 'c.ts'), 'export const c = 3\n')
  touch(join(root, 'src', 'c.ts'), -3600)
  t.equal(due(root), 'sources were added or removed', 'a new source, even one dated before the build')
  rmSync(join(root, 'src', 'c.ts'))
  t.equal(due(root), undefined)
  const check = build(root, '--check')
  t.equal(check.status, 0, '--check: nothing due')
  t.match(check.stderr, 'build: out/ is up to date')

  const forced = build(root)
  t.equal(forced.status, 0)
  t.not(statSync(out).mtimeMs, built, 'plain build compiles (type-checks) every time')

  writeFileSync(join(root, 'src', 'a.ts'), "export const a: number = 'one'\n")
  const failed = build(root, '--if-stale')
  t.not(failed.status, 0, 'the type error fails the build')
  t.match(failed.output, /error TS2322/)
  // tsc still wrote its output, newer than the source: that must not pass for a good build.
  t.equal(due(root), 'no record of a good build')

  writeFileSync(join(root, 'src', 'a.ts'), 'export const a: number = 1\n')
  rmSync(join(root, 'src', 'deep', 'b.ts'))
  t.equal(build(root, '--if-stale').status, 0, 'fixed')
  t.equal(due(root), undefined)
  t.same(sources(readTsconfig(root), root), ['src/a.ts'], 'the record is of the sources there are')
})
