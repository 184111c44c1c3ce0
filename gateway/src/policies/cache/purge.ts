// POST /cache/purge on the admin listener: drops matching entries from every route's cache in the
// plan in force. Offered through the policy's admin hook, so the server knows nothing of caching.
import type { AdminEndpoint, AdminReply } from '../policy.js'
import type { CacheStore, PurgeSelector } from './store.js'

/** Exactly one of key, prefix or tag, each a non-empty string; else a message saying what is wrong. */
export function purgeSelector(value: unknown): PurgeSelector | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'expected a JSON object such as {"key": "/path"}, {"prefix": "/api/"} or {"tag": "product-42"}'
  const fields = Object.entries(value as Record<string, unknown>)
  if (fields.length !== 1) return 'expected exactly one of "key", "prefix" or "tag"'
  const [name, selector] = fields[0]!
  if (name !== 'key' && name !== 'prefix' && name !== 'tag') return `unknown field "${name}": expected "key", "prefix" or "tag"`
  if (typeof selector !== 'string' || selector === '') return `"${name}" must be a non-empty string`
  return { [name]: selector }
}

export const purgeEndpoint: AdminEndpoint<CacheStore> = {
  method: 'POST',
  path: '/cache/purge',
  description: 'drop cached responses: {"key": URI or path} | {"prefix": ...} | {"tag": ...}',
  handle(stores, request): AdminReply {
    const selector = purgeSelector(request.body)
    if (typeof selector === 'string') return { status: 400, body: { ok: false, error: selector } }
    let purged = 0
    for (const store of stores) purged += store.purge(selector)
    return { status: 200, body: { ok: true, purged } }
  },
}
