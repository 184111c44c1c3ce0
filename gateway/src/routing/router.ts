// Route table and matching. Routes are sorted once, most specific first, so a request takes the
// first route that matches. Precedence (as in the Kubernetes Gateway API, with regex placed as
// Envoy Gateway does): host exact > host wildcard > any host; then path exact > regex > longest
// prefix > any path; then routes with methods; then more header matches; then routes that ask for
// a client certificate; then file order.
import type { IncomingHttpHeaders } from 'node:http'
import { linearRegex } from './linear-regex.js'
import type { ClientCertificate } from '../core/identity.js'

export interface HeaderMatch {
  readonly name: string
  /** Exact value, a regex, or mere presence. */
  readonly test: (value: string) => boolean
}

export interface RouteMatch {
  readonly host?: string
  readonly path?: { exact: string } | { prefix: string } | { regex: string }
  readonly methods?: readonly string[]
  readonly headers?: readonly HeaderMatch[]
  /** Whether the connection's verified client certificate (undefined: none) is one the route takes; absent: any client. */
  readonly clientCert?: (certificate: ClientCertificate | undefined) => boolean
}

interface CompiledMatcher<R> {
  readonly route: R
  readonly specificity: readonly number[]
  readonly order: number
  /** Whether the route asks for a client certificate (match.clientCert). */
  readonly certificateOnly: boolean
  /** `certificate` null: the client certificate is not looked at. */
  matches(method: string, host: string, path: string, headers: IncomingHttpHeaders, certificate: ClientCertificate | undefined | null): boolean
}

export class Router<R> {
  private readonly table: ReadonlyArray<CompiledMatcher<R>>

  constructor(routes: ReadonlyArray<{ route: R; match: RouteMatch }>) {
    const table = routes.map(({ route, match }, order) => compileMatcher(route, match, order))
    table.sort(bySpecificity)
    this.table = table
  }

  /**
   * The route for a request; `host` is the Host header as received, `path` excludes the query,
   * `certificate` the connection's verified client certificate (undefined when none).
   */
  match(method: string, host: string | undefined, path: string, headers: IncomingHttpHeaders, certificate?: ClientCertificate): R | undefined {
    const hostname = normalizeHost(host)
    // A route that would take the request but for its client certificate protects what it matches:
    // the request may still go to a route that matches it as closely (same host, path, methods and
    // headers ranks: a public twin, or one for another certificate), never to a broader one.
    let refused: CompiledMatcher<R> | undefined
    for (const entry of this.table) {
      if (refused !== undefined && !sameLocation(entry, refused)) return undefined
      if (entry.matches(method, hostname, path, headers, certificate)) return entry.route
      if (entry.certificateOnly && refused === undefined && entry.matches(method, hostname, path, headers, null)) refused = entry
    }
    return undefined
  }

  /**
   * For a request no route took: whether one would have, but for its client certificate (none, or
   * not one the route takes). The request is then refused 403 rather than 404. Off the hot path.
   */
  // (Called only after match() returned undefined, so any route it finds is one a certificate kept away.)
  wantsOtherCertificate(method: string, host: string | undefined, path: string, headers: IncomingHttpHeaders): boolean {
    const hostname = normalizeHost(host)
    for (const entry of this.table) {
      if (entry.matches(method, hostname, path, headers, null)) return true
    }
    return false
  }

  /** Routes in the order they are tried (for /config and debugging). */
  get order(): R[] {
    return this.table.map((entry) => entry.route)
  }
}

function normalizeHost(host: string | undefined): string {
  if (host === undefined) return ''
  // Strip the port; IPv6 literals keep their brackets.
  const end = host.startsWith('[') ? host.indexOf(']') + 1 : host.indexOf(':')
  return (end > 0 ? host.slice(0, end) : host).toLowerCase()
}

/** Two routes that match requests as closely: every rank but the client certificate's is the same. */
function sameLocation<R>(a: CompiledMatcher<R>, b: CompiledMatcher<R>): boolean {
  for (let i = 0; i < a.specificity.length - 1; i++) if (a.specificity[i] !== b.specificity[i]) return false
  return true
}

function bySpecificity<R>(a: CompiledMatcher<R>, b: CompiledMatcher<R>): number {
  for (let i = 0; i < a.specificity.length; i++) {
    const difference = b.specificity[i]! - a.specificity[i]!
    if (difference !== 0) return difference
  }
  return a.order - b.order
}

function compileMatcher<R>(route: R, match: RouteMatch, order: number): CompiledMatcher<R> {
  const hostTest = compileHost(match.host)
  const pathTest = compilePath(match.path)
  const methods = match.methods === undefined || match.methods.length === 0 ? undefined : new Set(match.methods.map((m) => m.toUpperCase()))
  const headers = match.headers ?? []
  const hostRank = match.host === undefined ? 0 : match.host.startsWith('*.') ? 1 : 2
  const path = match.path
  const pathRank = path === undefined ? 0 : 'exact' in path ? 3 : 'regex' in path ? 2 : 1
  const prefixLength = path !== undefined && 'prefix' in path ? path.prefix.length : 0
  const clientCert = match.clientCert
  return {
    route,
    order,
    certificateOnly: clientCert !== undefined,
    specificity: [hostRank, pathRank, prefixLength, methods === undefined ? 0 : 1, headers.length, clientCert === undefined ? 0 : 1],
    matches(method, host, requestPath, requestHeaders, certificate) {
      if (methods !== undefined && !methods.has(method)) return false
      if (hostTest !== undefined && !hostTest(host)) return false
      if (pathTest !== undefined && !pathTest(requestPath)) return false
      for (const header of headers) {
        const value = requestHeaders[header.name]
        if (value === undefined) return false
        if (!header.test(Array.isArray(value) ? value.join(', ') : value)) return false
      }
      return clientCert === undefined || certificate === null || clientCert(certificate)
    },
  }
}

function compileHost(host: string | undefined): ((hostname: string) => boolean) | undefined {
  if (host === undefined) return undefined
  const wanted = host.toLowerCase()
  if (wanted.startsWith('*.')) {
    const suffix = wanted.slice(1) // ".example.com": a wildcard covers one or more labels, not the apex
    return (hostname) => hostname.endsWith(suffix) && hostname.length > suffix.length
  }
  return (hostname) => hostname === wanted
}

function compilePath(path: RouteMatch['path']): ((requestPath: string) => boolean) | undefined {
  if (path === undefined) return undefined
  if ('exact' in path) {
    const exact = path.exact
    return (requestPath) => requestPath === exact
  }
  if ('regex' in path) {
    const regex = linearRegex(path.regex)
    return (requestPath) => regex.test(requestPath)
  }
  // Prefixes match whole path segments: "/api" matches "/api" and "/api/x", not "/apix".
  const prefix = path.prefix.endsWith('/') ? path.prefix.slice(0, -1) : path.prefix
  if (prefix === '') return () => true
  return (requestPath) =>
    requestPath.startsWith(prefix) && (requestPath.length === prefix.length || requestPath.charCodeAt(prefix.length) === 47 /* / */)
}
