// Who the client is, as one typed value on the exchange (ARCHITECTURE.md): the TLS listener sets it
// from a verified client certificate, authentication policies replace it with what a token or key
// proved, and rate limits, authorization and the logs read only this. Never built from a header
// the client sent.

/** A verified client certificate, as the listener's TLS handshake proved it. */
export interface ClientCertificate {
  /** The subject DN, e.g. "CN=app,O=example". */
  readonly subject: string
  readonly issuer: string
  readonly san: { readonly dns: readonly string[]; readonly uri: readonly string[]; readonly email: readonly string[] }
  /** The first URI SAN that is a SPIFFE ID (spiffe://trust-domain/path), if any. */
  readonly spiffeId: string | undefined
  /** SHA-256 of the DER certificate, lower-case hex (what XFCC's Hash carries). */
  readonly fingerprint: string
  readonly serial: string
  /** Expiry, ms since the epoch. */
  readonly notAfter: number
}

export type IdentityKind = 'anonymous' | 'mtls' | 'jwt' | 'apiKey' | 'introspection'

export interface Identity {
  readonly kind: IdentityKind
  /** Who: the certificate's subject or SPIFFE ID, a token's `sub`, an API key's name; '' when anonymous. */
  readonly subject: string
  /** Who vouched for it: a token's `iss`, the certificate's issuer; '' when none. */
  readonly issuer: string
  readonly roles: readonly string[]
  readonly scopes: readonly string[]
  /** A token's claims (or an introspection answer's fields); empty for other kinds. */
  readonly claims: Readonly<Record<string, unknown>>
  /** The connection's verified client certificate, whatever else authenticated the request. */
  readonly certificate: ClientCertificate | undefined
  /** The bucket a rate limit keyed on identity uses instead of kind and subject (an API key's `rateLimitKey`). */
  readonly rateLimitKey?: string
}

const NONE: readonly string[] = Object.freeze([])
const NO_CLAIMS: Readonly<Record<string, unknown>> = Object.freeze({})

/** The identity of a request nothing has authenticated: one shared value, no allocation per request. */
export const ANONYMOUS: Identity = Object.freeze({ kind: 'anonymous', subject: '', issuer: '', roles: NONE, scopes: NONE, claims: NO_CLAIMS, certificate: undefined })

/** The identity a verified client certificate gives a connection. */
export function certificateIdentity(certificate: ClientCertificate): Identity {
  return { kind: 'mtls', subject: certificate.spiffeId ?? certificate.subject, issuer: certificate.issuer, roles: NONE, scopes: NONE, claims: NO_CLAIMS, certificate }
}
