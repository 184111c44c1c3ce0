// YAML text → parsed document (with line:column) → schema validation and semantic checks.
// Every problem comes back as `file:line:col: field.path: message`, all of them at once: the
// semantic checks (references, uniqueness, each policy's cross-field checks) run on every part the
// schema accepted, so one pass shows a misspelt field and an unknown upstream together. Settings
// that are valid but contradict each other come back as warnings.
import { readFile, stat } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import { isAlias, isMap, isScalar, LineCounter, parseDocument, visit, type Document } from 'yaml'
import { Value } from '@sinclair/typebox/value'
import { DefaultErrorFunction, SetErrorFunction, ValueErrorType, type ValueError } from '@sinclair/typebox/errors'
import { GatewayConfig, MatchConfig } from './schema.js'
import { registry } from '../policies/index.js'
import { parseCidr } from '../core/cidr.js'
import { linearRegexProblem } from '../routing/linear-regex.js'
import type { ValidateContext } from '../policies/policy.js'
import { upstreamProblems, UpstreamConfig } from '../proxy/upstream/config.js'
import { Duration, toMs } from '../core/units.js'
import { nearest } from '../core/nearest.js'

export interface ConfigError {
  readonly file: string
  readonly line: number
  readonly col: number
  /** Dotted field path, e.g. `routes[0].policies.timeout.request`; empty for the whole file. */
  readonly path: string
  readonly message: string
}

/** Valid settings that contradict each other (a per-try deadline no shorter than the whole request's): the file loads, with a warning. */
export type ConfigWarning = ConfigError

export type LoadResult =
  | { ok: true; config: GatewayConfig; hash: string; text: string; warnings: ConfigWarning[] }
  | { ok: false; errors: ConfigError[]; warnings: ConfigWarning[] }

export function formatError(error: ConfigError): string {
  return `${error.file}:${error.line}:${error.col}: ${error.path === '' ? '' : `${error.path}: `}${error.message}`
}

export function formatWarning(warning: ConfigWarning): string {
  return formatError({ ...warning, message: `warning: ${warning.message}` })
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
    if (size > MAX_CONFIG_BYTES) return { ok: false, errors: [tooLarge(file, size)], warnings: [] }
    text = await readFile(file, 'utf8')
  } catch (error) {
    return { ok: false, errors: [{ file, line: 0, col: 0, path: '', message: `cannot read the config file: ${(error as Error).message}` }], warnings: [] }
  }
  return parseConfig(text, file)
}

function tooLarge(file: string, bytes: number): ConfigError {
  return { file, line: 0, col: 0, path: '', message: `the config file is ${bytes} bytes, over the ${MAX_CONFIG_BYTES}-byte (1 MiB) limit` }
}

/** Never throws: whatever goes wrong in loading comes back as an error with a position. */
export function parseConfig(text: string, file: string): LoadResult {
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) return { ok: false, errors: [tooLarge(file, Buffer.byteLength(text))], warnings: [] }
  try {
    return parseConfigText(text, file)
  } catch (error) {
    return { ok: false, errors: [{ file, line: 1, col: 1, path: '', message: `cannot load the config: ${(error as Error).message}` }], warnings: [] }
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
        // Without prettyErrors, yaml leaves linePos unset: the offset is always there.
        const position = lineCounter.linePos(error.pos[0])
        return { file, line: position.line, col: position.col, path: '', message: `YAML syntax: ${error.message.split('\n')[0]}` }
      }),
      warnings: [],
    }
  }
  let value: unknown
  try {
    value = document.toJS({ maxAliasCount: MAX_ALIAS_COUNT })
  } catch (error) {
    return { ok: false, errors: [aliasError(document, lineCounter, file, error as Error)], warnings: [] }
  }
  const schema = schemaErrors(value)
  // A field the schema already refused is not reported twice (a badly named upstream is also unknown).
  const refused = new Set(schema.map((error) => error.path))
  const semantic = semanticErrors(value).filter((error) => !refused.has(error.path))
  const errors = [...schema, ...semantic].map((error) => located(error.path, error.message, error.atKey))
  const warnings = contradictions(value).map((warning) => located(warning.path, warning.message))
  if (errors.length > 0) return { ok: false, errors, warnings }
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 16)
  return { ok: true, config: value as GatewayConfig, hash, text, warnings }
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

/**
 * JSON pointer segments ("/routes/0/name") → the YAML node's position, walking up to the nearest
 * node that exists; `atKey`: the key's position rather than its value's (an unknown field).
 */
function locator(document: Document, lineCounter: LineCounter, file: string) {
  return (pointer: string, message: string, atKey = false): ConfigError => {
    const segments = pointer === '' ? [] : pointer.slice(1).split('/').map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'))
    const keys: Array<string | number> = segments.map((segment) => (/^\d+$/.test(segment) ? Number(segment) : segment))
    let line = 1
    let col = 1
    const keyRange = atKey && keys.length > 0 ? keyNodeRange(document.getIn(keys.slice(0, -1), true), keys[keys.length - 1]!) : undefined
    for (let depth = keys.length; depth >= 0; depth--) {
      const node = document.getIn(keys.slice(0, depth), true) as { range?: [number, number, number] } | undefined
      const range = (depth === keys.length ? keyRange : undefined) ?? node?.range ?? (depth === 0 ? document.contents?.range : undefined)
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

/** Where a mapping's key `name` is written. */
function keyNodeRange(map: unknown, name: string | number): [number, number, number] | undefined {
  if (!isMap(map)) return undefined
  for (const pair of map.items) {
    if (isScalar(pair.key) && pair.key.value === name) return pair.key.range ?? undefined
  }
  return undefined
}

function dotted(keys: ReadonlyArray<string | number>): string {
  let path = ''
  for (const key of keys) path += typeof key === 'number' ? `[${key}]` : path === '' ? key : `.${key}`
  return path
}

/** Schema errors, one per field; for a union, the member that got furthest explains the problem. */
function schemaErrors(value: unknown): Problem[] {
  const seen = new Set<string>()
  const out: Problem[] = []
  for (const error of Value.Errors(GatewayConfig, value)) {
    const explained = explain(error)
    if (seen.has(explained.path)) continue
    seen.add(explained.path)
    out.push(explained)
  }
  return out
}

function explain(error: ValueError): Problem {
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
    return { path: error.path, message: unknownField(error), atKey: true }
  }
  if (error.type === ValueErrorType.ObjectRequiredProperty) return { path: error.path, message: 'required field is missing' }
  return { path: error.path, message: error.message }
}

/**
 * "unknown field", with the field the author most likely meant: the nearest allowed name at that
 * place (`attemps` → `attempts`), or a policy's own section written one level too high (`timeout`
 * beside `upstream` → `policies.timeout`); otherwise the fields allowed there.
 */
function unknownField(error: ValueError): string {
  const key = error.path.slice(error.path.lastIndexOf('/') + 1).replace(/~1/g, '/').replace(/~0/g, '~')
  const properties = (error.schema as { properties?: Record<string, unknown> }).properties ?? {}
  const allowed = Object.keys(properties).filter((name) => name !== '$schema')
  const candidates = [...allowed]
  if (allowed.includes('policies')) candidates.push(...registry.map((policy) => `policies.${policy.name}`))
  const byShortName = new Map(candidates.map((candidate) => [candidate.replace(/^policies\./, ''), candidate]))
  const match = nearest(key, [...byShortName.keys()])
  if (match !== undefined) return `unknown field "${key}"; did you mean "${byShortName.get(match)}"?`
  return allowed.length === 0 ? `unknown field "${key}"` : `unknown field "${key}"; expected one of ${allowed.join(', ')}`
}


/** A problem at a JSON pointer; `atKey`: reported where the key is written (an unknown field), not its value. */
interface Problem {
  path: string
  message: string
  atKey?: boolean
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * What the schema cannot say: references, uniqueness, regexes, addresses. Run on the raw value,
 * whatever the schema said of it: each check looks only at parts of the shape it needs, so a file
 * with a misspelt field still hears about its unknown upstream. Paths are JSON pointers.
 */
function semanticErrors(config: unknown): Problem[] {
  const errors: Problem[] = []
  if (!isRecord(config)) return errors
  const upstreamSection = isRecord(config.upstreams) ? config.upstreams : undefined
  const upstreams = Object.keys(upstreamSection ?? {})
  if (upstreamSection !== undefined) {
    if (upstreams.length === 0) errors.push({ path: '/upstreams', message: 'at least one upstream is required' })
    for (const name of upstreams) {
      const upstream = upstreamSection[name]
      if (!Value.Check(UpstreamConfig, upstream)) continue
      for (const problem of upstreamProblems(upstream)) errors.push({ path: `/upstreams/${name}${problem.path}`, message: problem.message })
    }
  }
  const routes = Array.isArray(config.routes) ? (config.routes as unknown[]) : []
  const names = new Map<string, number>()
  routes.forEach((route, index) => {
    if (!isRecord(route)) return
    if (typeof route.name === 'string') {
      const first = names.get(route.name)
      if (first !== undefined) errors.push({ path: `/routes/${index}/name`, message: `duplicate route name "${route.name}" (first used by routes[${first}])` })
      else names.set(route.name, index)
    }
    if (typeof route.upstream === 'string' && upstreamSection !== undefined && !Object.hasOwn(upstreamSection, route.upstream)) {
      errors.push(unknownUpstream(`/routes/${index}/upstream`, route.upstream, upstreams))
    }
    const matchValid = route.match === undefined || Value.Check(MatchConfig, route.match)
    const match = matchValid ? (route.match as MatchConfig | undefined) : undefined
    const path = match?.path
    if (path !== undefined) {
      const kinds = (['exact', 'prefix', 'regex'] as const).filter((kind) => path[kind] !== undefined)
      if (kinds.length !== 1) errors.push({ path: `/routes/${index}/match/path`, message: `expected exactly one of exact, prefix or regex, got ${kinds.length === 0 ? 'none' : kinds.join(' and ')}` })
      if (path.regex !== undefined) {
        const problem = linearRegexProblem(path.regex)
        if (problem !== undefined) errors.push({ path: `/routes/${index}/match/path/regex`, message: problem })
      }
    }
    for (const [header, headerMatch] of Object.entries(match?.headers ?? {})) {
      if (typeof headerMatch === 'object' && 'regex' in headerMatch) {
        const problem = linearRegexProblem(headerMatch.regex)
        if (problem !== undefined) errors.push({ path: `/routes/${index}/match/headers/${header}/regex`, message: problem })
      }
    }
    if (isRecord(route.rewrite) && route.rewrite.pathPrefix !== undefined && matchValid && path?.prefix === undefined) {
      errors.push({ path: `/routes/${index}/rewrite/pathPrefix`, message: 'needs match.path.prefix: it replaces the matched prefix' })
    }
  })
  const context: ValidateContext = { upstreams: new Set(upstreams), redis: config.redis !== undefined }
  const defaults = isRecord(config.defaults) ? config.defaults.policies : undefined
  policyErrors(context, defaults, '/defaults/policies', errors)
  routes.forEach((route, index) => policyErrors(context, isRecord(route) ? route.policies : undefined, `/routes/${index}/policies`, errors))
  const trusted = isRecord(config.listen) && Array.isArray(config.listen.trustedProxies) ? (config.listen.trustedProxies as unknown[]) : []
  trusted.forEach((entry, index) => {
    if (typeof entry === 'string' && parseCidr(entry) === undefined) errors.push({ path: `/listen/trustedProxies/${index}`, message: `not an IP address or CIDR: "${entry}"` })
  })
  // Like every check here, it reads only a section the schema accepted.
  if (config.listen === undefined || Value.Check(GatewayConfig.properties.listen, config.listen)) errors.push(...listenTlsErrors(config as unknown as GatewayConfig))
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

/** Each policy's own cross-field check (Policy.validate) on one policies section, a route's or the defaults; sections the schema refused are skipped. */
function policyErrors(context: ValidateContext, policies: unknown, path: string, errors: Problem[]): void {
  if (!isRecord(policies)) return
  for (const policy of registry) {
    const section = policies[policy.name]
    if (section === undefined || section === false || policy.validate === undefined || !Value.Check(policy.schema, section)) continue
    for (const problem of policy.validate(section, context)) errors.push({ path: `${path}/${policy.name}${problem.path}`, message: problem.message })
  }
}

/** A duration field's milliseconds, when it holds a valid duration. */
function durationMs(section: unknown, field: string): number | undefined {
  if (!isRecord(section)) return undefined
  const value = section[field]
  return Value.Check(Duration, value) ? toMs(value) : undefined
}

/**
 * Valid settings that defeat each other, on each route's policies as they apply (the defaults
 * merged with the route's own sections, as the compiler merges them). Each is reported once, where
 * the field that loses is written.
 */
function contradictions(config: unknown): Problem[] {
  if (!isRecord(config) || !Array.isArray(config.routes)) return []
  const defaults = isRecord(config.defaults) && isRecord(config.defaults.policies) ? config.defaults.policies : {}
  const warnings = new Map<string, string>()
  ;(config.routes as unknown[]).forEach((route, index) => {
    const own = isRecord(route) && isRecord(route.policies) ? route.policies : {}
    /** The section as it applies, and where a field of it is written (the route's own, or the defaults). */
    const effective = (name: string): { section: Record<string, unknown>; where: (field: string) => string } | undefined => {
      const mine = own[name]
      const base = defaults[name]
      if (mine === false || (mine === undefined && !isRecord(base))) return undefined
      const section = { ...(isRecord(base) ? base : {}), ...(isRecord(mine) ? mine : {}) }
      const where = (field: string): string => (isRecord(mine) && field in mine ? `/routes/${index}/policies/${name}/${field}` : `/defaults/policies/${name}/${field}`)
      return { section, where }
    }
    const timeout = effective('timeout')
    const requestMs = durationMs(timeout?.section, 'request')
    if (timeout === undefined || requestMs === undefined) return
    const perTryMs = durationMs(timeout.section, 'perTry')
    if (perTryMs !== undefined && perTryMs >= requestMs) {
      warnings.set(
        timeout.where('perTry'),
        `timeout.perTry (${perTryMs}ms) is not shorter than timeout.request (${requestMs}ms): the request deadline always passes first, so no attempt ever times out on its own and none is retried for it`,
      )
    }
    const concurrency = effective('concurrency')
    const queueMs = durationMs(concurrency?.section, 'queueTimeout')
    if (concurrency !== undefined && queueMs !== undefined && queueMs >= requestMs && typeof concurrency.section.queue === 'number' && concurrency.section.queue > 0) {
      warnings.set(
        concurrency.where('queueTimeout'),
        `concurrency.queueTimeout (${queueMs}ms) is not shorter than timeout.request (${requestMs}ms): a queued request times out (504) before the queue would refuse it (503)`,
      )
    }
  })
  return [...warnings].map(([path, message]) => ({ path, message }))
}

function unknownUpstream(path: string, name: string, defined: ReadonlyArray<string>): { path: string; message: string } {
  return { path, message: `unknown upstream "${name}"; defined: ${defined.join(', ') || 'none'}` }
}
