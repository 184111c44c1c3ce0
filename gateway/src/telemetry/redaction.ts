// What never reaches a log line: credentials in headers (Authorization, Proxy-Authorization,
// Cookie, Set-Cookie, and the headers the policy file adds under log.redact.headers) and the query
// parameters it names (log.redact.query, some by default). Applied to every pino line through its
// logMethod hook (objects are copied with those fields replaced, strings scrubbed) and to the access
// log's error text. Secrets are kept out at their source too (a rate-limit key from a header is
// logged as a fingerprint); this is the net under every line, whatever a later change logs.
import { createHash } from 'node:crypto'

export const REDACTED = '[redacted]'

/** Headers that carry credentials in every deployment: always redacted, whatever the file says. */
export const ALWAYS_REDACTED_HEADERS: readonly string[] = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie']

/** Query parameters that carry credentials by convention (OAuth 2.0, signed URLs); log.redact.query replaces the list. */
export const DEFAULT_REDACTED_QUERY: readonly string[] = ['access_token', 'id_token', 'refresh_token', 'client_secret', 'code', 'api_key', 'apikey', 'token', 'password', 'signature', 'sig', 'x-amz-signature', 'x-amz-credential', 'x-amz-security-token']

/** How deep into a logged object fields are looked at; deeper values are replaced whole. */
const MAX_DEPTH = 8

/** `Bearer abc…`, `Basic abc…` in any text: a credential whatever header or message it came in. */
const AUTH_SCHEME = /\b(Bearer|Basic|Digest|Negotiate)\s+[A-Za-z0-9._~+/=-]{4,}/gi

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** A stable short fingerprint of a secret (first 12 hex digits of its sha256), for logs that must tell keys apart. */
export function fingerprint(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex').slice(0, 12)}`
}

export class LogRedaction {
  private headers: ReadonlySet<string> = new Set(ALWAYS_REDACTED_HEADERS)
  private query: RegExp | null = null

  constructor() {
    this.configure([], DEFAULT_REDACTED_QUERY)
  }

  /** The policy file's lists (applied on every reload): headers are added to the four always redacted; query names replace the default list. */
  configure(headers: readonly string[], query: readonly string[]): void {
    this.headers = new Set([...ALWAYS_REDACTED_HEADERS, ...headers.map((name) => name.toLowerCase())])
    // `name=value` after ?, & or ; up to the next separator, case-insensitively, in any text.
    this.query = query.length === 0 ? null : new RegExp(`([?&;](?:${query.map(escapeRegExp).join('|')})=)[^&#;\\s"'<>]*`, 'gi')
  }

  /** The header names redacted now (lower case). */
  get headerNames(): readonly string[] {
    return [...this.headers]
  }

  isSecretHeader(name: string): boolean {
    return this.headers.has(name.toLowerCase())
  }

  /** Text with the configured query parameters' values and any `Bearer`/`Basic` credential replaced. */
  scrubText(text: string): string {
    let out = text
    if (this.query !== null && (out.includes('=') || out.includes('%3D'))) out = out.replace(this.query, `$1${REDACTED}`)
    if (out.length > 8) out = out.replace(AUTH_SCHEME, `$1 ${REDACTED}`)
    return out
  }

  /**
   * A copy of a logged value with secret headers' values replaced wherever they appear as a field
   * (`{ headers: { authorization } }`) or in a raw header list (`['Cookie', 'a=b']`), and every
   * string scrubbed. Plain objects, arrays and errors are copied; other instances pass as they are.
   */
  scrub(value: unknown, depth = 0): unknown {
    if (typeof value === 'string') return this.scrubText(value)
    if (value === null || typeof value !== 'object') return value
    if (depth >= MAX_DEPTH) return REDACTED
    if (Array.isArray(value)) {
      const out: unknown[] = []
      for (let i = 0; i < value.length; i++) {
        const element: unknown = value[i]
        const previous: unknown = value[i - 1]
        // Node's rawHeaders: name, value, name, value…
        if (i % 2 === 1 && typeof previous === 'string' && this.headers.has(previous.toLowerCase())) out.push(REDACTED)
        else out.push(this.scrub(element, depth + 1))
      }
      return out
    }
    if (value instanceof Error) {
      const copy = Object.create(Object.getPrototypeOf(value) as object) as Error & Record<string, unknown>
      for (const [key, field] of Object.entries(value)) copy[key] = this.headers.has(key.toLowerCase()) ? REDACTED : this.scrub(field, depth + 1)
      copy.message = this.scrubText(value.message)
      if (value.stack !== undefined) copy.stack = this.scrubText(value.stack)
      return copy
    }
    const prototype = Object.getPrototypeOf(value) as object | null
    if (prototype !== Object.prototype && prototype !== null) return value
    const out: Record<string, unknown> = {}
    for (const [key, field] of Object.entries(value)) out[key] = this.headers.has(key.toLowerCase()) ? REDACTED : this.scrub(field, depth + 1)
    return out
  }

  /** pino's hooks option: every argument of a log call is scrubbed before pino formats the line. */
  pinoHooks(): { logMethod(this: unknown, args: unknown[], method: (...args: unknown[]) => void): void } {
    const scrub = (value: unknown): unknown => this.scrub(value)
    return {
      // pino calls it with the logger as `this`, which the method it passes needs.
      logMethod(args, method) {
        for (let i = 0; i < args.length; i++) args[i] = scrub(args[i])
        method.apply(this, args)
      },
    }
  }
}
