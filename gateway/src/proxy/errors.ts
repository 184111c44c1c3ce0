// Maps a failed upstream attempt to the status the client sees and a machine-readable reason.
// Connect failures and resets are 502 (the upstream is broken); deadlines are 504 (it was slow).
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

export function answerForError(error: unknown): ErrorAnswer {
  if (error instanceof DeadlineExceeded) return { status: 504, reason: error.reason }
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string') {
    const known = BY_CODE[code]
    if (known !== undefined) return known
    if (code.startsWith('HPE_')) return { status: 502, reason: 'upstream-protocol-error' }
  }
  return UNKNOWN
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
