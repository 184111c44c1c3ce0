// Maps a failed upstream attempt to the status the client sees and a machine-readable reason.
// Connect failures and resets are 502 (the upstream is broken); deadlines are 504 (it was slow).
// A TLS failure with an upstream (its certificate cannot be verified, or it refused ours) is 502
// `upstream-tls`, whatever the code: the access log's error names the cause.
import { DeadlineExceeded } from '../core/exchange.js'
import type { Reason } from '../core/reasons.js'

export interface ErrorAnswer {
  readonly status: number
  readonly reason: Reason
}

const BY_CODE: Record<string, ErrorAnswer> = {
  ECONNREFUSED: { status: 502, reason: 'connect-refused' },
  ENOTFOUND: { status: 502, reason: 'dns-failure' },
  EAI_AGAIN: { status: 502, reason: 'dns-failure' },
  EHOSTUNREACH: { status: 502, reason: 'connect-failed' },
  ENETUNREACH: { status: 502, reason: 'connect-failed' },
  UND_ERR_CONNECT_TIMEOUT: { status: 504, reason: 'connect-timeout' },
  UND_ERR_HEADERS_TIMEOUT: { status: 504, reason: 'upstream-headers-timeout' },
  UND_ERR_SOCKET: { status: 502, reason: 'upstream-reset' },
  ECONNRESET: { status: 502, reason: 'upstream-reset' },
  EPIPE: { status: 502, reason: 'upstream-reset' },
  UND_ERR_CLOSED: { status: 502, reason: 'upstream-closed' },
  UND_ERR_REQ_CONTENT_LENGTH_MISMATCH: { status: 400, reason: 'request-body-length-mismatch' },
  UND_ERR_INVALID_ARG: { status: 400, reason: 'invalid-request' },
  HPE_INVALID_CONSTANT: { status: 502, reason: 'upstream-protocol-error' },
  WAYPOST_NO_ENDPOINTS: { status: 503, reason: 'no-endpoints' },
}

const UNKNOWN: ErrorAnswer = { status: 502, reason: 'upstream-error' }
const TLS_FAILURE: ErrorAnswer = { status: 502, reason: 'upstream-tls' }

/**
 * OpenSSL's certificate verification results as Node names them (X509_V_ERR_* without the prefix),
 * and Node's own name check. The alerts and protocol errors of a failed handshake are `ERR_SSL_*`
 * (the upstream refused our certificate or version, or spoke plain HTTP) and Node's `ERR_TLS_*`.
 */
const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'OUT_OF_MEM',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
])

/** Whether an error code is a TLS failure: verification, the name check, or the handshake itself. */
export function isTlsFailureCode(code: string): boolean {
  return TLS_VERIFY_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || code === 'EPROTO'
}

export function answerForError(error: unknown): ErrorAnswer {
  if (error instanceof DeadlineExceeded) return { status: 504, reason: error.reason }
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string') {
    const known = BY_CODE[code]
    if (known !== undefined) return known
    if (code.startsWith('HPE_')) return { status: 502, reason: 'upstream-protocol-error' }
    if (isTlsFailureCode(code)) return TLS_FAILURE
  }
  return UNKNOWN
}

/**
 * A TLS failure with an upstream endpoint, its message led by the code (`CERT_HAS_EXPIRED: certificate
 * has expired`, which is what the access log's `error` shows) and the endpoint. It keeps the code, so
 * it maps to `upstream-tls` like the error it wraps.
 */
export class UpstreamTlsError extends Error {
  readonly code: string

  constructor(endpoint: string, cause: Error & { code: string }) {
    super(`${cause.code}: ${cause.message.trim()} (${endpoint})`, { cause })
    this.name = 'UpstreamTlsError'
    this.code = cause.code
  }
}

/** `error` as an UpstreamTlsError when it is a TLS failure; otherwise `error` itself. */
export function withTlsCause(error: Error, endpoint: string): Error {
  const code = (error as { code?: unknown }).code
  if (typeof code !== 'string' || !isTlsFailureCode(code) || error instanceof UpstreamTlsError) return error
  return new UpstreamTlsError(endpoint, error as Error & { code: string })
}

/** The reason an exchange was aborted because its client went away (logged as status 499). */
export class ClientGone extends Error {
  constructor() {
    super('client closed the connection')
    this.name = 'ClientGone'
  }
}

/** The upstream has no endpoint to send to (its DNS name has not resolved yet). */
export class NoEndpoints extends Error {
  readonly code = 'WAYPOST_NO_ENDPOINTS'

  constructor(upstream: string) {
    super(`upstream ${upstream} has no endpoints`)
    this.name = 'NoEndpoints'
  }
}
