// What a certificate says, in the shapes the rest of the gateway reads: a verified client
// certificate as core/identity's ClientCertificate (once per connection), and a summary of the
// certificates in use for GET /config and the logs.
import type { X509Certificate } from 'node:crypto'
import type { ClientCertificate } from '../core/identity.js'

export interface SubjectAltNames {
  readonly dns: readonly string[]
  readonly uri: readonly string[]
  readonly email: readonly string[]
  readonly ip: readonly string[]
}

/**
 * Parses Node's `subjectAltName` text ("DNS:a, URI:spiffe://td/x, email:m@x, IP Address:127.0.0.1").
 * Node writes a value holding a comma or a quote as a JSON string (since the 2022 fix for SAN
 * spoofing), so those are read as JSON.
 */
export function parseSubjectAltNames(text: string | undefined): SubjectAltNames {
  const dns: string[] = []
  const uri: string[] = []
  const email: string[] = []
  const ip: string[] = []
  if (text === undefined) return { dns, uri, email, ip }
  let i = 0
  while (i < text.length) {
    const colon = text.indexOf(':', i)
    if (colon === -1) break
    const kind = text.slice(i, colon)
    let value: string
    let next: number
    if (text[colon + 1] === '"') {
      let end = colon + 2
      while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1
      value = JSON.parse(text.slice(colon + 1, end + 1)) as string
      next = text.indexOf(', ', end)
    } else {
      next = text.indexOf(', ', colon)
      value = text.slice(colon + 1, next === -1 ? text.length : next)
    }
    if (kind === 'DNS') dns.push(value)
    else if (kind === 'URI') uri.push(value)
    else if (kind === 'email') email.push(value)
    else if (kind === 'IP Address') ip.push(value)
    if (next === -1) break
    i = next + 2
  }
  return { dns, uri, email, ip }
}

/**
 * A distinguished name as RFC 4514 writes it, most specific first ("CN=app,O=example"): Node gives
 * one attribute per line, least specific first, already escaped the RFC 2253 way.
 */
export function distinguishedName(multiline: string): string {
  return multiline.split('\n').filter((line) => line !== '').reverse().join(',')
}

/** "AB:CD:…" as Node prints a fingerprint → "abcd…", the form XFCC's Hash carries. */
export function hexFingerprint(fingerprint: string): string {
  return fingerprint.replaceAll(':', '').toLowerCase()
}

export function isSpiffeId(uri: string): boolean {
  return uri.startsWith('spiffe://')
}

/** A verified peer certificate as the exchange's identity carries it. */
export function clientCertificateOf(certificate: X509Certificate): ClientCertificate {
  const sans = parseSubjectAltNames(certificate.subjectAltName)
  return {
    subject: distinguishedName(certificate.subject),
    issuer: distinguishedName(certificate.issuer),
    san: { dns: sans.dns, uri: sans.uri, email: sans.email },
    spiffeId: sans.uri.find(isSpiffeId),
    fingerprint: hexFingerprint(certificate.fingerprint256),
    serial: certificate.serialNumber.toLowerCase(),
    notAfter: Date.parse(certificate.validTo),
  }
}

/** A certificate in use, as GET /config shows it. */
export interface CertificateSummary {
  /** Its role: `server`, `sni:HOST` for an SNI certificate, `client-ca` for the CA bundle. */
  readonly name: string
  readonly file: string
  readonly subject: string
  readonly issuer: string
  readonly serial: string
  readonly notBefore: string
  readonly notAfter: string
  readonly sans: readonly string[]
}

export function summary(name: string, file: string, certificate: X509Certificate): CertificateSummary {
  const sans = parseSubjectAltNames(certificate.subjectAltName)
  return {
    name,
    file,
    subject: distinguishedName(certificate.subject),
    issuer: distinguishedName(certificate.issuer),
    serial: certificate.serialNumber.toLowerCase(),
    notBefore: new Date(Date.parse(certificate.validFrom)).toISOString(),
    notAfter: new Date(Date.parse(certificate.validTo)).toISOString(),
    sans: [...sans.dns.map((name) => `DNS:${name}`), ...sans.ip.map((ip) => `IP:${ip}`), ...sans.uri.map((uri) => `URI:${uri}`), ...sans.email.map((email) => `email:${email}`)],
  }
}
