// A route's `match.clientCert`: which verified client certificates it takes. Built once per plan;
// the test per request compares a few strings of the certificate the connection already parsed.
import type { ClientCertificate } from '../core/identity.js'

type OneOrMore = string | readonly string[]

export type ClientCertRule =
  | true
  | {
      readonly spiffeId?: OneOrMore
      readonly dns?: OneOrMore
      readonly uri?: OneOrMore
      readonly email?: OneOrMore
    }

function list(value: OneOrMore | undefined): readonly string[] | undefined {
  return value === undefined ? undefined : typeof value === 'string' ? [value] : value
}

/** A SPIFFE ID pattern: exact, or `spiffe://td/path/*` for any ID below `spiffe://td/path/`. */
function spiffeTest(pattern: string): (id: string) => boolean {
  if (pattern.endsWith('/*')) {
    const prefix = pattern.slice(0, -1)
    return (id) => id.startsWith(prefix) && id.length > prefix.length
  }
  return (id) => id === pattern
}

/** A DNS SAN pattern: exact (case-insensitive), or `*.example.com` for one or more labels. */
function dnsTest(pattern: string): (name: string) => boolean {
  const wanted = pattern.toLowerCase()
  if (wanted.startsWith('*.')) {
    const suffix = wanted.slice(1)
    return (name) => name.length > suffix.length && name.toLowerCase().endsWith(suffix)
  }
  return (name) => name.toLowerCase() === wanted
}

function anyOf(tests: ReadonlyArray<(value: string) => boolean>, values: readonly string[]): boolean {
  for (const value of values) for (const test of tests) if (test(value)) return true
  return false
}

export function clientCertTest(rule: ClientCertRule): (certificate: ClientCertificate | undefined) => boolean {
  if (rule === true) return (certificate) => certificate !== undefined
  const spiffe = list(rule.spiffeId)?.map(spiffeTest)
  const dns = list(rule.dns)?.map(dnsTest)
  const uri = list(rule.uri)?.map((wanted) => (value: string) => value === wanted)
  const email = list(rule.email)?.map((wanted) => (value: string) => value.toLowerCase() === wanted.toLowerCase())
  return (certificate) => {
    if (certificate === undefined) return false
    if (spiffe !== undefined && (certificate.spiffeId === undefined || !anyOf(spiffe, [certificate.spiffeId]))) return false
    if (dns !== undefined && !anyOf(dns, certificate.san.dns)) return false
    if (uri !== undefined && !anyOf(uri, certificate.san.uri)) return false
    if (email !== undefined && !anyOf(email, certificate.san.email)) return false
    return true
  }
}
