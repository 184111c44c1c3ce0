// External programs the load tests run (wrk, nginx, haproxy, taskset, openssl): found on PATH or in the
// sbin directories, where Debian puts nginx and haproxy.
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin']

/** Absolute path of an executable on PATH (or in the sbin directories), or undefined. */
export function findTool(name: string): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...SBIN]) {
    if (dir === '') continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** The Debian package of each tool, for the install hint. */
const PACKAGE_OF: Record<string, string> = {
  wrk: 'wrk',
  nginx: 'nginx-light',
  haproxy: 'haproxy',
  taskset: 'util-linux',
  getconf: 'libc-bin',
  openssl: 'openssl',
}

/**
 * Throws with an install command if any of the tools is missing; returns their paths. `fullSet`
 * names every package the caller may need, so one install covers its other modes too.
 */
export function requireTools(names: readonly string[], fullSet: string): Record<string, string> {
  const paths: Record<string, string> = {}
  const missing: string[] = []
  for (const name of names) {
    const path = findTool(name)
    if (path === undefined) missing.push(name)
    else paths[name] = path
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((name) => PACKAGE_OF[name] ?? name))]
    throw new Error(
      `missing tool(s): ${missing.join(', ')}\n` +
        `  install them (Debian/Ubuntu, as root): apt-get update && apt-get install -y ${packages.join(' ')}\n` +
        `  (${fullSet})`,
    )
  }
  return paths
}
