// Waypost's own version: the one in package.json (the container image keeps it beside dist/).
import { readFileSync } from 'node:fs'

let cached: string | undefined

/**
 * The `version` field of Waypost's package.json, read once. It is the nearest package.json above
 * this module: the package root both from dist/gateway/src/core/ and from the sources (tests).
 */
export function packageVersion(): string {
  if (cached !== undefined) return cached
  for (let up = '../'; up.length <= 5 * 3; up += '../') {
    let text: string
    try {
      text = readFileSync(new URL(`${up}package.json`, import.meta.url), 'utf8')
    } catch {
      continue
    }
    cached = (JSON.parse(text) as { version: string }).version
    return cached
  }
  throw new Error('package.json not found above gateway/src/core/version')
}
