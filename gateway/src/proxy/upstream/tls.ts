// TLS to an upstream's https:// endpoints: one connector per upstream, shared by its endpoints'
// pools and health-check clients. It verifies the upstream's certificate (against `ca`, or the
// system's CAs) and presents a client certificate when one is configured.
//
// Rotation: the CA and client certificate files are watched. A change builds a new undici connector
// around a new secure context and swaps it in; the pools' `connect` is a stable function that calls
// whichever is current, so new connections present the new certificate while open ones carry on
// until they close (within `idleTimeout` once idle). The new connector also starts a fresh TLS
// session cache, so no new connection resumes a session made with the old certificate. Files that
// cannot be used (unreadable, expired, a key that does not match) never replace good ones: the
// refusal is logged with the file and the reason, and shown in GET /upstreams.
import { isIP, type Socket } from 'node:net'
import { buildConnector } from '../undici.js'
import type { Logger } from 'pino'
import type { GatewayMetrics } from '../../telemetry/metrics.js'
import { loadClientTls, MaterialError, type ClientTlsMaterial as Material } from '../../tls/material.js'
import { watchFiles } from '../../core/file-watch.js'
import type { ResolvedUpstreamTlsConfig } from './config.js'
import { isTlsFailureCode } from '../errors.js'

/** What the upstream's TLS uses; the defaults when the upstream has https endpoints but no `tls`. */
export const DEFAULT_UPSTREAM_TLS: ResolvedUpstreamTlsConfig = { minVersion: 'TLSv1.2', verify: true }

export interface UpstreamTlsDeps {
  readonly upstream: string
  readonly log: Logger
  readonly metrics: GatewayMetrics
  readonly connectTimeoutMs: number
  /** The name to verify when `serverName` is not set and the endpoint's host is not it (`dns.name`). */
  readonly defaultServerName?: string
}

/** What GET /upstreams shows of an upstream's TLS. */
export interface UpstreamTlsSnapshot {
  readonly serverName: string | null
  readonly verify: boolean
  readonly minVersion: string
  readonly ca: string | null
  readonly clientCert: { file: string; subject: string; serial: string; notAfter: string } | null
  /** Times the files were rotated since the upstream was loaded. */
  readonly rotations: number
  /** The last rotation refused, when it came after the last one applied. */
  readonly refused: { file: string; reason: string; at: string } | null
}

/** Reads and checks the files of `config`: throws a MaterialError naming the file and the reason. */
function loadMaterial(config: ResolvedUpstreamTlsConfig): Material {
  return loadClientTls({ ca: config.ca, cert: config.clientCert, key: config.clientKey, minVersion: config.minVersion })
}

/**
 * A TLS alert after the handshake (in TLS 1.3 an upstream checks our certificate only then, and
 * refuses it with an alert such as `certificate required`) is emitted as a socket error that undici
 * notes but then replaces with "other side closed" when the upstream hangs up. Destroying the
 * socket with the alert keeps it as the error the request fails with, so the answer is
 * `upstream-tls` and the log names the alert.
 */
function failOnTlsAlert(this: Socket, error: Error): void {
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string' && isTlsFailureCode(code) && !this.destroyed) this.destroy(error)
}

export class UpstreamTls {
  /** The name sent in SNI and verified, when fixed by config (`serverName`, or `dns.name`). */
  readonly serverName: string | undefined
  private material: Material
  private connector: buildConnector.connector
  private forgetExpiry: (() => void) | undefined
  private readonly stopWatching: () => void
  private rotations = 0
  private refused: { file: string; reason: string; at: string } | null = null

  /** Loads the files (throws a MaterialError naming the file when one cannot be used) and watches them. */
  constructor(
    private readonly config: ResolvedUpstreamTlsConfig,
    private readonly deps: UpstreamTlsDeps,
  ) {
    this.serverName = config.serverName ?? deps.defaultServerName
    this.material = loadMaterial(config)
    this.connector = this.connectorFor(this.material)
    this.reportExpiry()
    if (!config.verify) {
      deps.log.warn({ upstream: deps.upstream }, 'upstream TLS verification is off (tls.verify: false): any certificate is accepted, so anyone on the path can read and change the traffic')
    }
    const files = [config.ca, config.clientCert, config.clientKey].filter((file): file is string => file !== undefined)
    this.stopWatching =
      files.length === 0
        ? () => undefined
        : watchFiles(files, () => this.reload(), {
            onWatchError: (directory, error) => deps.log.error({ upstream: deps.upstream, directory, error: error.message }, 'cannot watch the upstream TLS files: a change needs a restart'),
          }).close
  }

  /**
   * The undici connector every pool and health-check client of this upstream uses. It sets the
   * server name itself: undici would otherwise take it from each request's Host header (the
   * client's), and verify the upstream's certificate against that.
   */
  readonly connect: buildConnector.connector = (options, callback) => {
    const servername = this.serverName ?? (isIP(options.hostname) === 0 ? options.hostname : undefined)
    this.connector({ ...options, servername }, (error, socket) => {
      if (socket) socket.on('error', failOnTlsAlert)
      // The callback's types pair an error with a null socket; undici calls it either way round.
      ;(callback as (error: Error | null, socket: Socket | null) => void)(error, socket)
    })
  }

  /**
   * Reads the files again. A good set replaces the one in force for new connections; a bad one is
   * refused and logged, and the one in force stays. Returns whether the new files were applied.
   */
  reload(): boolean {
    let material: Material
    try {
      material = loadMaterial(this.config)
    } catch (error) {
      // Anything else is refused the same way: this runs from a file watch, where a throw would end the process.
      const { file, reason } = error instanceof MaterialError ? error : { file: this.config.clientCert ?? this.config.ca ?? '-', reason: (error as Error).message }
      this.refused = { file, reason, at: new Date().toISOString() }
      this.deps.log.error({ upstream: this.deps.upstream, file, reason }, 'upstream TLS files refused: new connections keep the certificates in force')
      return false
    }
    const before = this.material
    if (before.ca === material.ca && before.pair?.cert === material.pair?.cert && before.pair?.key === material.pair?.key) {
      this.refused = null
      return false
    }
    this.material = material
    this.connector = this.connectorFor(material)
    this.rotations++
    this.refused = null
    this.reportExpiry()
    const leaf = material.pair?.leaf
    this.deps.log.info(
      { upstream: this.deps.upstream, clientCert: this.config.clientCert, serial: leaf?.serialNumber, notAfter: leaf === undefined ? undefined : new Date(material.notAfterMs!).toISOString(), ca: this.config.ca },
      'upstream TLS files rotated: new connections use them',
    )
    return true
  }

  snapshot(): UpstreamTlsSnapshot {
    const pair = this.material.pair
    return {
      serverName: this.serverName ?? null,
      verify: this.config.verify,
      minVersion: this.config.minVersion,
      ca: this.config.ca ?? null,
      clientCert: pair === undefined ? null : { file: this.config.clientCert!, subject: pair.leaf.subject, serial: pair.leaf.serialNumber, notAfter: new Date(this.material.notAfterMs!).toISOString() },
      rotations: this.rotations,
      refused: this.refused,
    }
  }

  /** Stops watching the files and reporting the certificate (the upstream was retired). */
  stop(): void {
    this.stopWatching()
    this.forgetExpiry?.()
    this.forgetExpiry = undefined
  }

  private connectorFor(material: Material): buildConnector.connector {
    // One secure context for every connection: passing the PEM texts instead would parse them (the
    // whole CA bundle) again at each handshake.
    return buildConnector({ secureContext: material.context, rejectUnauthorized: this.config.verify, timeout: this.deps.connectTimeoutMs })
  }

  private reportExpiry(): void {
    this.forgetExpiry?.()
    const pair = this.material.pair
    this.forgetExpiry = pair === undefined ? undefined : this.deps.metrics.certificateExpiry(`upstream:${this.deps.upstream}`, this.config.clientCert!, this.material.notAfterMs!)
  }
}
