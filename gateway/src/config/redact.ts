// Secrets never leave through the admin API: GET /config shows the plan's config with the admin
// token and any password in a URL (redis://:PASSWORD@host) replaced, whatever section holds it.
import type { GatewayConfig } from './schema.js'

export const REDACTED = '[redacted]'

function redactUrl(value: string): string {
  if (!value.includes('@') || !value.includes('://')) return value
  try {
    const url = new URL(value)
    if (url.password === '' && url.username === '') return value
    if (url.password !== '') url.password = REDACTED
    else url.username = REDACTED // a token sent as the user name (redis://TOKEN@host)
    return url.toString()
  } catch {
    return value
  }
}

function redactStrings(value: unknown): unknown {
  if (typeof value === 'string') return redactUrl(value)
  if (Array.isArray(value)) return value.map(redactStrings)
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [key, field] of Object.entries(value)) out[key] = redactStrings(field)
    return out
  }
  return value
}

export function redactSecrets(config: GatewayConfig): unknown {
  const copy = redactStrings(config) as GatewayConfig
  // The token itself; `{ file }` and `{ env }` only say where it is, and stay.
  if (typeof copy.admin?.token === 'string') return { ...copy, admin: { ...copy.admin, token: REDACTED } }
  return copy
}
