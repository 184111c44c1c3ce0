// YAML text → parsed document (with line:column) → schema validation → semantic checks.
// Every problem comes back as `file:line:col: field.path: message`, all of them at once.
import { readFile, stat } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import { isAlias, LineCounter, parseDocument, visit, type Document } from 'yaml'
import { Value } from '@sinclair/typebox/value'
import { DefaultErrorFunction, SetErrorFunction, ValueErrorType, type ValueError } from '@sinclair/typebox/errors'
import { GatewayConfig, type PoliciesConfig } from './schema.js'
import { registry } from '../policies/index.js'
import { parseCidr } from '../core/cidr.js'
import { linearRegexProblem } from '../routing/linear-regex.js'
import type { ValidateContext } from '../policies/policy.js'
import { upstreamProblems } from '../proxy/upstream/config.js'

export interface ConfigError {
  readonly file: string
  readonly line: number
  readonly col: number
  /** Dotted field path, e.g. `routes[0].policies.timeout.request`; empty for the whole file. */
  readonly path: string
  readonly message: string
}

export type LoadResult =
  | { ok: true; config: GatewayConfig; hash: string; text: string }
  | { ok: false; errors: ConfigError[] }

export function formatError(error: ConfigError): string {
  return `${error.file}:${error.line}:${error.col}: ${error.path === '' ? '' : `${error.path}: `}${error.message}`
}

// Schemas may carry a human `errorMessage`; TypeBox's defaults ("Expected union value") are not enough for users.
SetErrorFunction((parameter) => {
  const custom = (parameter.schema as { errorMessage?: unknown }).errorMessage
  return typeof custom === 'string' ? custom : DefaultErrorFunction(parameter)
})

/**
 * The largest policy file accepted. Real ones are a few KiB; a multi-MiB file stalls the event loop
 * while it is parsed (8 s for 5 MB) and a huge one exhausts the heap, on every replica at once.
 */
export const MAX_CONFIG_BYTES = 1024 * 1024

/**
 * Alias uses YAML may expand (yaml's own default is 100, which an honest file reusing one anchor
 * for 101 routes exceeds); an alias bomb's nested expansions pass this at once.
 */
const MAX_ALIAS_COUNT = 1000

export async function loadConfigFile(file: string): Promise<LoadResult> {
  let text: string
  try {
    const size = (await stat(file)).size
    if (size > MAX_CONFIG_BYTES) return { ok: false, errors: [tooLarge(file, size)] }
    text = await readFile(file, 'utf8')
  } catch (error) {
    return { ok: false, errors: [{ file, line: 0, col: 0, path: '', message: `cannot read the config file: ${(error as Error).message}` }] }
  }
  return parseConfig(text, file)
}

function tooLarge(file: string, bytes: number): ConfigError {
  return { file, line: 0, col: 0, path: '', message: `the config file is ${bytes} bytes, over the ${MAX_CONFIG_BYTES}-byte (1 MiB) limit` }
}

/** Never throws: whatever goes wrong in loading comes back as an error with a position. */
export function parseConfig(text: string, file: string): LoadResult {
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) return { ok: false, errors: [tooLarge(file, Buffer.byteLength(text))] }
  try {
    return parseConfigText(text, file)
  } catch (error) {
    return { ok: false, errors: [{ file, line: 1, col: 1, path: '', message: `cannot load the config: ${(error as Error).message}` }] }
  }
}

function parseConfigText(text: string, file: string): LoadResult {
  const lineCounter = new LineCounter()
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const located = locator(document, lineCounter, file)
  if (document.errors.length > 0) {
    return {
      ok: false,
      errors: document.errors.map((error) => {
        const position = error.linePos?.[0] ?? { line: 0, col: 0 }
        return { file, line: position.line, col: position.col, path: '', message: `YAML syntax: ${error.message.split('\n')[0]}` }
      }),
    }
  }
  let value: unknown
  try {
    value = document.toJS({ maxAliasCount: MAX_ALIAS_COUNT })
  } catch (error) {
    return { ok: false, errors: [aliasError(document, lineCounter, file, error as Error)] }
  }
  const errors = schemaErrors(value).map((error) => located(error.path, error.message))
  if (errors.length === 0) errors.push(...semanticErrors(value as GatewayConfig).map((error) => located(error.path, error.message)))
  if (errors.length > 0) return { ok: false, errors }
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 16)
  return { ok: true, config: value as GatewayConfig, hash, text }
}

/** An alias that expands too much, reported where the first alias stands. */
function aliasError(document: Document, lineCounter: LineCounter, file: string, error: Error): ConfigError {
  let position = { line: 1, col: 1 }
  visit(document, (_key, node) => {
    if (!isAlias(node) || node.range === undefined || node.range === null) return undefined
    position = lineCounter.linePos(node.range[0])
    return visit.BREAK
  })
  const message = /alias count/i.test(error.message)
    ? `YAML aliases expand past ${MAX_ALIAS_COUNT} uses (an alias bomb?): use fewer aliases or write the values out`
    : `YAML aliases: ${error.message}`
  return { file, line: position.line, col: position.col, path: '', message }
}

/** JSON pointer segments ("/routes/0/name") → the YAML node's position, walking up to the nearest node that exists. */
function locator(document: Document, lineCounter: LineCounter, file: string) {
  return (pointer: string, message: string): ConfigError => {
    const segments = pointer === '' ? [] : pointer.slice(1).split('/').map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'))
    const keys: Array<string | number> = segments.map((segment) => (/^\d+$/.test(segment) ? Number(segment) : segment))
    let line = 1
    let col = 1
    for (let depth = keys.length; depth >= 0; depth--) {
      const node = document.getIn(keys.slice(0, depth), true) as { range?: [number, number, number] } | undefined
      const range = node?.range ?? (depth === 0 ? document.contents?.range : undefined)
      if (range !== undefined && range !== null) {
        const position = lineCounter.linePos(range[0])
        line = position.line
        col = position.col
        break
      }
    }
    return { file, line, col, path: dotted(keys), message }
  }
}

function dotted(keys: ReadonlyArray<string | number>): string {
  let path = ''
  for (const key of keys) path += typeof key === 'number' ? `[${key}]` : path === '' ? key : `.${key}`
  return path
}

/** Schema errors, one per field; for a union, the member that got furthest explains the problem. */
function schemaErrors(value: unknown): Array<{ path: string; message: string }> {
  const seen = new Set<string>()
  const out: Array<{ path: string; message: string }> = []
  for (const error of Value.Errors(GatewayConfig, value)) {
    const explained = explain(error)
    if (seen.has(explained.path)) continue
    seen.add(explained.path)
    out.push(explained)
  }
  return out
}

function explain(error: ValueError): { path: string; message: string } {
  const custom = (error.schema as { errorMessage?: unknown }).errorMessage
  if (error.type === ValueErrorType.Union && typeof custom !== 'string' && error.errors.length > 0) {
    let best: ValueError | undefined
    for (const member of error.errors) {
      for (const inner of member) {
        if (best === undefined || inner.path.length > best.path.length) best = inner
        break
      }
    }
    if (best !== undefined && best.path.length > error.path.length) return explain(best)
  }
  if (error.type === ValueErrorType.ObjectAdditionalProperties || error.message === 'Unexpected property') {
    return { path: error.path, message: 'unknown field' }
  }
  if (error.type === ValueErrorType.ObjectRequiredProperty) return { path: error.path, message: 'required field is missing' }
  return { path: error.path, message: error.message }
}

/** What the schema cannot say: references, uniqueness, regexes, addresses. Paths are JSON pointers. */
function semanticErrors(config: GatewayConfig): Array<{ path: string; message: string }> {
  const errors: Array<{ path: string; message: string }> = []
  const upstreams = Object.keys(config.upstreams)
  if (upstreams.length === 0) errors.push({ path: '/upstreams', message: 'at least one upstream is required' })
  for (const name of upstreams) {
    for (const problem of upstreamProblems(config.upstreams[name]!)) errors.push({ path: `/upstreams/${name}${problem.path}`, message: problem.message })
  }
  const names = new Map<string, number>()
  config.routes.forEach((route, index) => {
    const first = names.get(route.name)
    if (first !== undefined) errors.push({ path: `/routes/${index}/name`, message: `duplicate route name "${route.name}" (first used by routes[${first}])` })
    else names.set(route.name, index)
    if (!Object.hasOwn(config.upstreams, route.upstream)) errors.push(unknownUpstream(`/routes/${index}/upstream`, route.upstream, upstreams))
    const path = route.match?.path
    if (path !== undefined) {
      const kinds = (['exact', 'prefix', 'regex'] as const).filter((kind) => path[kind] !== undefined)
      if (kinds.length !== 1) errors.push({ path: `/routes/${index}/match/path`, message: `expected exactly one of exact, prefix or regex, got ${kinds.length === 0 ? 'none' : kinds.join(' and ')}` })
      if (path.regex !== undefined) {
        const problem = linearRegexProblem(path.regex)
        if (problem !== undefined) errors.push({ path: `/routes/${index}/match/path/regex`, message: problem })
      }
    }
    for (const [header, match] of Object.entries(route.match?.headers ?? {})) {
      if (typeof match === 'object' && 'regex' in match) {
        const problem = linearRegexProblem(match.regex)
        if (problem !== undefined) errors.push({ path: `/routes/${index}/match/headers/${header}/regex`, message: problem })
      }
    }
    if (route.rewrite?.pathPrefix !== undefined && path?.prefix === undefined) {
      errors.push({ path: `/routes/${index}/rewrite/pathPrefix`, message: 'needs match.path.prefix: it replaces the matched prefix' })
    }
  })
  policyErrors(config, config.defaults?.policies, '/defaults/policies', errors)
  config.routes.forEach((route, index) => policyErrors(config, route.policies, `/routes/${index}/policies`, errors))
  config.listen?.trustedProxies?.forEach((entry, index) => {
    if (parseCidr(entry) === undefined) errors.push({ path: `/listen/trustedProxies/${index}`, message: `not an IP address or CIDR: "${entry}"` })
  })
  errors.push(...listenTlsErrors(config))
  return errors
}

/**
 * listen.tls and its companions. The certificate files are not read here: `waypost validate` checks
 * a file that may be deployed where its certificates are not (CI, a clean clone of the examples);
 * the running gateway reads them, and reports a missing or broken one with its file and reason.
 */
function listenTlsErrors(config: GatewayConfig): Array<{ path: string; message: string }> {
  const errors: Array<{ path: string; message: string }> = []
  const listen = config.listen
  const tls = listen?.tls
  if (listen?.plainAddress !== undefined) {
    if (tls === undefined) errors.push({ path: '/listen/plainAddress', message: 'a second cleartext listener is only for a TLS listener: add listen.tls, or use listen.address' })
    else if (listen.plainAddress === listen.address && !listen.address.endsWith(':0')) errors.push({ path: '/listen/plainAddress', message: 'must differ from listen.address' })
  }
  const mode = listen?.forwardClientCert
  if ((mode === 'forwardOnly' || mode === 'appendForward' || mode === 'alwaysForwardOnly') && (listen?.trustedProxies === undefined || listen.trustedProxies.length === 0)) {
    errors.push({ path: '/listen/forwardClientCert', message: `${mode} passes on X-Forwarded-Client-Cert only from listen.trustedProxies, and none are listed` })
  }
  if (tls === undefined) return errors
  const clientAuth = tls.clientAuth ?? 'none'
  if (clientAuth !== 'none' && tls.clientCa === undefined) errors.push({ path: '/listen/tls/clientCa', message: `clientAuth ${clientAuth} needs clientCa, the CA bundle client certificates must chain to` })
  if (clientAuth === 'none' && tls.clientCa !== undefined) errors.push({ path: '/listen/tls/clientAuth', message: 'clientCa is given but clientAuth is none: set clientAuth to optional or require, or remove clientCa' })
  if (tls.crl !== undefined && tls.clientCa === undefined) errors.push({ path: '/listen/tls/crl', message: 'a CRL revokes client certificates: it needs clientCa' })
  if (tls.ciphers !== undefined) {
    try {
      createSecureContext({ ciphers: tls.ciphers })
    } catch (error) {
      errors.push({ path: '/listen/tls/ciphers', message: `OpenSSL refuses this cipher list: ${(error as Error).message}` })
    }
  }
  if (tls.groups !== undefined) {
    try {
      createSecureContext({ ecdhCurve: tls.groups })
    } catch (error) {
      errors.push({ path: '/listen/tls/groups', message: `OpenSSL refuses these groups: ${(error as Error).message}` })
    }
  }
  const seen = new Map<string, number>()
  tls.sni?.forEach((entry, index) => {
    for (const host of entry.hosts) {
      const lower = host.toLowerCase()
      const first = seen.get(lower)
      if (first !== undefined) errors.push({ path: `/listen/tls/sni/${index}/hosts`, message: `"${host}" is already served by sni[${first}]` })
      else seen.set(lower, index)
    }
  })
  return errors
}

/** Each policy's own cross-field check (Policy.validate) on one policies section, a route's or the defaults. */
function policyErrors(config: GatewayConfig, policies: PoliciesConfig | undefined, path: string, errors: Array<{ path: string; message: string }>): void {
  if (policies === undefined) return
  const context: ValidateContext = { upstreams: new Set(Object.keys(config.upstreams)), redis: config.redis !== undefined }
  const sections = policies as Record<string, unknown>
  for (const policy of registry) {
    const section = sections[policy.name]
    if (section === undefined || section === false || policy.validate === undefined) continue
    for (const problem of policy.validate(section, context)) errors.push({ path: `${path}/${policy.name}${problem.path}`, message: problem.message })
  }
}

function unknownUpstream(path: string, name: string, defined: ReadonlyArray<string>): { path: string; message: string } {
  return { path, message: `unknown upstream "${name}"; defined: ${defined.join(', ') || 'none'}` }
}
