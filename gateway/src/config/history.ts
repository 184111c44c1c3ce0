// Every applied config is an event: version, hash, source, time and what changed. Kept in memory,
// newest last, so /config can show how the plan in force came to be.
import type { GatewayConfig } from './schema.js'

export interface ConfigEvent {
  readonly version: number
  readonly hash: string
  readonly source: string
  readonly at: string
  readonly summary: { readonly added: string[]; readonly removed: string[]; readonly changed: string[] }
}

const LIMIT = 100

export class ConfigHistory {
  private readonly events: ConfigEvent[] = []

  record(version: number, hash: string, source: string, previous: GatewayConfig | undefined, next: GatewayConfig): ConfigEvent {
    const event: ConfigEvent = { version, hash, source, at: new Date().toISOString(), summary: diff(previous, next) }
    this.events.push(event)
    if (this.events.length > LIMIT) this.events.shift()
    return event
  }

  list(): readonly ConfigEvent[] {
    return this.events
  }
}

/** Routes and upstreams added, removed or changed, by name ("route:api", "upstream:app", "defaults"). */
function diff(previous: GatewayConfig | undefined, next: GatewayConfig): ConfigEvent['summary'] {
  const before = sections(previous)
  const after = sections(next)
  const added: string[] = []
  const removed: string[] = []
  const changed: string[] = []
  for (const [key, value] of after) {
    const old = before.get(key)
    if (old === undefined) added.push(key)
    else if (old !== value) changed.push(key)
  }
  for (const key of before.keys()) if (!after.has(key)) removed.push(key)
  return { added, removed, changed }
}

function sections(config: GatewayConfig | undefined): Map<string, string> {
  const out = new Map<string, string>()
  if (config === undefined) return out
  for (const route of config.routes) out.set(`route:${route.name}`, JSON.stringify(route))
  for (const [name, upstream] of Object.entries(config.upstreams)) out.set(`upstream:${name}`, JSON.stringify(upstream))
  const { routes: _routes, upstreams: _upstreams, ...rest } = config
  out.set('settings', JSON.stringify(rest))
  return out
}
