// A TLS listener's counters: handshakes by version, failed handshakes by reason, and certificate
// reloads by result. Counted once per connection, not per request, so prom-client's own counters
// are cheap enough here. Every series a listener can have exists from its start, at 0.
import { Counter, type Registry } from 'prom-client'

/** Why a handshake failed, as the failures counter labels it (docs/reference/metrics.md). */
export const HANDSHAKE_FAILURES = [
  'no-cert',
  'unknown-ca',
  'expired',
  'revoked',
  'bad-cert',
  'protocol',
  'no-shared-cipher',
  'http-request',
  'peer-alert',
  'timeout',
  'overloaded',
  'reset',
  'other',
] as const
export type HandshakeFailure = (typeof HANDSHAKE_FAILURES)[number]

export class TlsMetrics {
  readonly handshakes: Counter<'listener' | 'version'>
  readonly handshakeFailures: Counter<'listener' | 'reason'>
  readonly certificateReloads: Counter<'listener' | 'result'>

  constructor(registry: Registry) {
    this.handshakes = new Counter({
      name: 'waypost_tls_handshakes_total',
      help: 'Completed TLS handshakes, by listener and protocol version (resumed sessions included).',
      labelNames: ['listener', 'version'] as const,
      registers: [registry],
    })
    this.handshakeFailures = new Counter({
      name: 'waypost_tls_handshake_failures_total',
      help: 'TLS handshakes that failed, by listener and reason (no-cert, unknown-ca, expired, revoked, bad-cert, protocol, no-shared-cipher, http-request, peer-alert, timeout, overloaded, reset, other).',
      labelNames: ['listener', 'reason'] as const,
      registers: [registry],
    })
    this.certificateReloads = new Counter({
      name: 'waypost_tls_certificate_reload_total',
      help: "Loads of a listener's certificates, keys, CA bundle and CRL, by result (success, failure: the set in force keeps serving).",
      labelNames: ['listener', 'result'] as const,
      registers: [registry],
    })
  }

  /** The listener's series, at 0. */
  listener(name: string): void {
    for (const version of ['TLSv1.2', 'TLSv1.3']) this.handshakes.labels(name, version).inc(0)
    for (const reason of HANDSHAKE_FAILURES) this.handshakeFailures.labels(name, reason).inc(0)
    for (const result of ['success', 'failure']) this.certificateReloads.labels(name, result).inc(0)
  }
}
