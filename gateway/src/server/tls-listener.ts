// The proxy listener's TLS: its certificates (with SNI), client certificate verification, session
// ticket keys, and the certificate lifecycle. Files are read and checked before use and watched like
// the policy file (their folders, so a Kubernetes Secret's `..data` swap is seen); a new set is
// applied with setSecureContext, which new handshakes take while open connections carry on. A set
// that fails its checks never replaces the one in force: it is reported with the file and the reason
// (log, GET /config, waypost_tls_certificate_reload_total{result="failure"}).
//
// Per connection, once: the peer (identity from the verified client certificate, its XFCC element,
// TLS version and cipher) is worked out at 'secureConnection' and kept in a WeakMap for its requests.
import { randomBytes, type X509Certificate } from 'node:crypto'
import { constants as cryptoConstants } from 'node:crypto'
import { createSecureContext, type SecureContext, type SecureContextOptions, type TLSSocket } from 'node:tls'
import type { Server as HttpsServer, ServerOptions as HttpsServerOptions } from 'node:https'
import type { Socket } from 'node:net'
import { isAbsolute, resolve } from 'node:path'
import type { Logger } from 'pino'
import type { ListenerTls } from '../config/compile.js'
import { watchFiles } from '../core/file-watch.js'
import { loadListenerMaterial, MaterialError, type ListenerMaterial, type MaterialFiles } from '../tls/material.js'
import { clientCertificateOf, parseSubjectAltNames, type CertificateSummary } from '../tls/certificate.js'
import { ANONYMOUS, certificateIdentity } from '../core/identity.js'
import { xfccElement } from '../proxy/headers.js'
import type { GatewayMetrics } from '../telemetry/metrics.js'
import type { HandshakeFailure } from '../telemetry/tls-metrics.js'
import type { ConnectionPeer } from './peer.js'

/** The listener label of the metrics. */
const LISTENER = 'proxy'

const SECURE_OPTIONS = cryptoConstants.SSL_OP_NO_RENEGOTIATION | cryptoConstants.SSL_OP_CIPHER_SERVER_PREFERENCE
const NO_TICKETS = cryptoConstants.SSL_OP_NO_TICKET
const RETRY_MS = 1000

/** What an answer to plain HTTP on the TLS port says (nginx answers the same case with a 400 too). */
const HTTP_ON_TLS_BODY = 'This port speaks HTTPS: use https:// (400 http-request-on-tls-port)\n'
const HTTP_ON_TLS_ANSWER =
  'HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n' +
  `content-length: ${HTTP_ON_TLS_BODY.length}\r\nx-waypost-reason: http-request-on-tls-port route=- upstream=-\r\n\r\n${HTTP_ON_TLS_BODY}`

/** A client certificate verification error (OpenSSL's X509_V_ERR names, as Node reports them) → the metric's reason. */
function verifyFailure(code: string): HandshakeFailure {
  switch (code) {
    case 'CERT_HAS_EXPIRED':
    case 'CERT_NOT_YET_VALID':
      return 'expired'
    case 'CERT_REVOKED':
      return 'revoked'
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return 'unknown-ca'
    default:
      return 'bad-cert'
  }
}

/** A failed handshake's error → the metric's reason. */
function handshakeFailure(error: NodeJS.ErrnoException, socket: TLSSocket): HandshakeFailure {
  // A client certificate that did not verify: Node ends the handshake itself, as a reset, and keeps why here.
  const verifyError = (socket as TLSSocket & { authorizationError?: string | null }).authorizationError
  if (typeof verifyError === 'string' && verifyError !== '') return verifyFailure(verifyError)
  const code = error.code ?? ''
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'no-cert'
  if (code === 'ERR_SSL_HTTP_REQUEST') return 'http-request'
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout'
  if (code === 'ERR_SSL_NO_SHARED_CIPHER') return 'no-shared-cipher'
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'reset'
  if (/^ERR_SSL_(TLSV1|TLSV13|SSLV3)_ALERT_/.test(code)) return 'peer-alert'
  if (/VERSION|PROTOCOL|WRONG_VERSION|UNEXPECTED_MESSAGE|RECORD|PACKET/.test(code)) return 'protocol'
  return 'other'
}

export interface TlsStatus {
  readonly listener: string
  /** `waiting`: no good set loaded yet (not ready); `ok`: a set is in force. */
  readonly state: 'waiting' | 'ok'
  readonly clientAuth: ListenerTls['clientAuth']
  readonly appliedAt: string | null
  readonly certificates: readonly CertificateSummary[]
  readonly lastError: { readonly at: string; readonly file: string; readonly reason: string } | null
}

export class TlsListener {
  private settings: ListenerTls
  private material: ListenerMaterial | undefined
  private appliedAt: Date | undefined
  private server: HttpsServer | undefined
  private sniExact = new Map<string, SecureContext>()
  private sniWildcard: Array<{ suffix: string; context: SecureContext }> = []
  private readonly peers = new WeakMap<Socket, ConnectionPeer>()
  /** Raw sockets whose handshake is under way. */
  private readonly handshaking = new Set<Socket>()
  private watcher: { close(): void } | undefined
  /** While no good set has loaded: a retry each second (a folder that does not exist yet cannot be watched). */
  private retryTimer: NodeJS.Timeout | undefined
  private ticketTimer: NodeJS.Timeout | undefined
  private ticketKeys: Buffer | undefined
  private loading: Promise<boolean> = Promise.resolve(false)
  private firstLoad: { promise: Promise<void>; resolve: () => void }
  private forgetExpiry: Array<() => void> = []
  /** The URI SANs of our own certificate: XFCC's By. */
  private ownUris: readonly string[] = []
  lastError: TlsStatus['lastError'] = null

  constructor(
    settings: ListenerTls,
    private readonly baseDir: string,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    this.settings = settings
    let resolveFirst!: () => void
    this.firstLoad = { promise: new Promise<void>((resolve) => (resolveFirst = resolve)), resolve: resolveFirst }
    metrics.tls.listener(LISTENER)
  }

  /** Resolves once a good set of certificates is in force (at once if one is). */
  get loaded(): Promise<void> {
    return this.firstLoad.promise
  }

  get ready(): boolean {
    return this.material !== undefined
  }

  /** Why the listener is not ready, for GET /ready; undefined when it is. */
  get waitingFor(): string | undefined {
    if (this.material !== undefined) return undefined
    return this.lastError === null ? 'certificates not loaded yet' : `certificates: ${this.lastError.file}: ${this.lastError.reason}`
  }

  /** The options the https.Server is made with: everything but the certificates, which come with setSecureContext. */
  serverOptions(): HttpsServerOptions {
    const settings = this.settings
    return {
      ...this.contextOptions(),
      requestCert: settings.clientAuth !== 'none',
      // Verification is checked after the handshake either way (Node's own rejection leaves the
      // client a bare reset too); `optional` lets a client without a certificate through.
      rejectUnauthorized: settings.clientAuth === 'require',
      handshakeTimeout: settings.handshakeTimeoutMs,
      ALPNProtocols: ['http/1.1'],
      SNICallback: (servername, callback) => callback(null, this.sniContext(servername)),
      requestTimeout: 0,
    }
  }

  /** Starts serving on `server`: its events, the file watch and the ticket key rotation. */
  attach(server: HttpsServer): void {
    this.server = server
    server.on('connection', (socket: Socket) => this.handshakeStarted(socket))
    server.on('secureConnection', (socket: TLSSocket) => this.secured(socket))
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: TLSSocket) => this.failed(error, socket))
    if (this.material !== undefined) this.apply(this.material)
    this.rotateTicketKeys()
  }

  /** Loads the files now and whenever they change; resolves with whether the first load succeeded. */
  async start(): Promise<boolean> {
    this.watch()
    const loaded = await this.reload('startup')
    if (!loaded) {
      this.retryTimer = setInterval(() => {
        if (this.material !== undefined) return void clearInterval(this.retryTimer)
        this.watch()
        void this.reload('retry')
      }, RETRY_MS).unref()
    }
    return loaded
  }

  /** A new plan's settings: re-watch, reload, and take what applies to new connections. */
  update(settings: ListenerTls): void {
    const before = this.settings
    // A reload that leaves listen.tls as it was leaves the listener alone (its files are watched anyway).
    if (JSON.stringify(before) === JSON.stringify(settings)) return
    this.settings = settings
    if (before.handshakeTimeoutMs !== settings.handshakeTimeoutMs) this.log.warn({ handshakeTimeout: settings.handshakeTimeoutMs }, 'listen.tls.handshakeTimeout changes only on restart')
    if (this.server !== undefined) {
      // Read by Node for each new connection.
      const server = this.server as HttpsServer & { requestCert: boolean; rejectUnauthorized: boolean }
      server.requestCert = settings.clientAuth !== 'none'
      server.rejectUnauthorized = settings.clientAuth === 'require'
    }
    this.watch()
    if (before.ticketKeyRotationMs !== settings.ticketKeyRotationMs || before.sessionTickets !== settings.sessionTickets) this.rotateTicketKeys()
    // Ciphers, versions and the CA may have changed with the files unchanged: apply regardless.
    void this.reload('config', true)
  }

  /** Reads and checks every file; applies the set when it is good and new. Reloads run one at a time. */
  reload(source: string, force = false): Promise<boolean> {
    this.loading = this.loading.then(() => this.reloadNow(source, force))
    return this.loading
  }

  private async reloadNow(source: string, force: boolean): Promise<boolean> {
    let material: ListenerMaterial
    try {
      material = await loadListenerMaterial(this.files())
      // What OpenSSL refuses (a key type it cannot use with these ciphers, say) is refused here, before the swap.
      this.contexts(material)
    } catch (error) {
      const file = error instanceof MaterialError ? error.file : this.files().cert
      const reason = error instanceof MaterialError ? error.reason : (error as Error).message
      const same = this.lastError !== null && this.lastError.file === file && this.lastError.reason === reason
      this.lastError = { at: new Date().toISOString(), file, reason }
      // The retries while waiting at start repeat themselves: said once.
      if (source === 'retry' && same) return false
      this.metrics.tls.certificateReloads.labels(LISTENER, 'failure').inc()
      this.log.error({ source, file, reason, inForce: this.material?.certificates.map((each) => each.serial) ?? null }, this.material === undefined ? 'TLS certificates rejected; not ready until they load' : 'TLS certificates rejected; the set in force keeps serving')
      return false
    }
    if (!force && this.material?.digest === material.digest) return true
    this.apply(material)
    this.metrics.tls.certificateReloads.labels(LISTENER, 'success').inc()
    this.log.info({ source, certificates: material.certificates.map(({ name, serial, notAfter }) => ({ name, serial, notAfter })) }, 'TLS certificates applied')
    clearInterval(this.retryTimer)
    this.firstLoad.resolve()
    return true
  }

  private files(): MaterialFiles {
    const path = (file: string): string => (isAbsolute(file) ? file : resolve(this.baseDir, file))
    const settings = this.settings
    return {
      cert: path(settings.cert),
      key: path(settings.key),
      sni: settings.sni.map((entry) => ({ hosts: entry.hosts, cert: path(entry.cert), key: path(entry.key) })),
      clientCa: settings.clientCa === undefined ? undefined : path(settings.clientCa),
      crl: settings.crl === undefined ? undefined : path(settings.crl),
    }
  }

  private watch(): void {
    this.watcher?.close()
    const files = this.files()
    const all = [files.cert, files.key, ...files.sni.flatMap((entry) => [entry.cert, entry.key]), files.clientCa, files.crl].filter((file): file is string => file !== undefined)
    // Watched anew after each change: a folder watched through a link may have been replaced.
    this.watcher = watchFiles(all, () => {
      this.watch()
      void this.reload('file')
    })
  }

  private contextOptions(): SecureContextOptions {
    const settings = this.settings
    return {
      minVersion: settings.minVersion,
      ciphers: settings.ciphers,
      ecdhCurve: settings.groups,
      honorCipherOrder: true,
      secureOptions: SECURE_OPTIONS | (settings.sessionTickets ? 0 : NO_TICKETS),
    }
  }

  /** The options of one certificate's context: the pair, and the client CA and CRL every context must carry. */
  private pairOptions(material: ListenerMaterial, pair: { cert: string; key: string }): SecureContextOptions {
    return { ...this.contextOptions(), cert: pair.cert, key: pair.key, ca: material.clientCa, crl: material.crl }
  }

  private contexts(material: ListenerMaterial): { exact: Map<string, SecureContext>; wildcard: Array<{ suffix: string; context: SecureContext }> } {
    createSecureContext(this.pairOptions(material, material.main))
    const exact = new Map<string, SecureContext>()
    const wildcard: Array<{ suffix: string; context: SecureContext }> = []
    for (const entry of material.sni) {
      const context = createSecureContext({ ...this.pairOptions(material, entry.pair), sessionIdContext: this.sessionIdContext() })
      for (const host of entry.hosts) {
        const lower = host.toLowerCase()
        if (lower.startsWith('*.')) wildcard.push({ suffix: lower.slice(1), context })
        else exact.set(lower, context)
      }
    }
    // The longest suffix is the most specific wildcard.
    wildcard.sort((a, b) => b.suffix.length - a.suffix.length)
    return { exact, wildcard }
  }

  /** SNI contexts must resume sessions with the same id context as the server's own. */
  private sessionIdContext(): string | undefined {
    return (this.server as (HttpsServer & { sessionIdContext?: string }) | undefined)?.sessionIdContext
  }

  private apply(material: ListenerMaterial): void {
    const { exact, wildcard } = this.contexts(material)
    // A session resumed from a ticket keeps the client certificate it was made with: when the CA
    // bundle or the CRL changes, the old tickets must not outlive it.
    const trustChanged = this.material !== undefined && (this.material.clientCa !== material.clientCa || this.material.crl !== material.crl)
    this.material = material
    this.appliedAt = new Date()
    this.ownUris = parseSubjectAltNames(material.main.leaf.subjectAltName).uri
    for (const forget of this.forgetExpiry) forget()
    this.forgetExpiry = material.certificates.map((each) => this.metrics.certificateExpiry(LISTENER, each.name, Date.parse(each.notAfter)))
    if (this.server === undefined) return
    this.server.setSecureContext(this.pairOptions(material, material.main))
    // A new context comes with new ticket keys: keep the current ones, so a certificate rotation does
    // not end every session; a change of trust does.
    if (trustChanged) this.rotateTicketKeys()
    else if (this.ticketKeys !== undefined && this.settings.sessionTickets) this.server.setTicketKeys(this.ticketKeys)
    this.sniExact = exact
    this.sniWildcard = wildcard
  }

  private sniContext(servername: string): SecureContext | undefined {
    if (this.sniExact.size === 0 && this.sniWildcard.length === 0) return undefined
    const name = servername.toLowerCase()
    const exact = this.sniExact.get(name)
    if (exact !== undefined) return exact
    for (const { suffix, context } of this.sniWildcard) if (name.length > suffix.length && name.endsWith(suffix)) return context
    return undefined // the default certificate
  }

  /** Random ticket keys now and every `ticketKeyRotation`: a stolen key opens only that window's sessions. */
  private rotateTicketKeys(): void {
    clearInterval(this.ticketTimer)
    this.ticketTimer = undefined
    if (this.server === undefined || !this.settings.sessionTickets) return
    const server = this.server
    const rotate = (): void => {
      this.ticketKeys = randomBytes(48)
      server.setTicketKeys(this.ticketKeys)
    }
    rotate()
    this.ticketTimer = setInterval(rotate, this.settings.ticketKeyRotationMs).unref()
  }

  private handshakeStarted(socket: Socket): void {
    if (this.handshaking.size >= this.settings.maxHandshakes) {
      this.metrics.tls.handshakeFailures.labels(LISTENER, 'overloaded').inc()
      this.log.debug({ remote: socket.remoteAddress, limit: this.settings.maxHandshakes }, 'TLS handshake refused: too many in progress')
      socket.destroy()
      return
    }
    this.handshaking.add(socket)
    socket.once('close', () => this.handshaking.delete(socket))
  }

  private handshakeEnded(socket: TLSSocket): void {
    // The raw socket under the TLS one, as Node keeps it.
    const raw = (socket as TLSSocket & { _parent?: Socket | null })._parent
    if (raw !== undefined && raw !== null) this.handshaking.delete(raw)
  }

  private secured(socket: TLSSocket): void {
    this.handshakeEnded(socket)
    const version = socket.getProtocol() ?? 'unknown'
    let certificate
    if (this.settings.clientAuth !== 'none') {
      const peer: X509Certificate | undefined = socket.getPeerX509Certificate()
      if (peer !== undefined) {
        if (!socket.authorized) {
          // `optional`: a client may come without a certificate, never with one that does not verify.
          const code = String(socket.authorizationError)
          this.metrics.tls.handshakeFailures.labels(LISTENER, verifyFailure(code)).inc()
          this.log.debug({ remote: socket.remoteAddress, reason: code }, 'TLS client certificate refused')
          socket.destroy()
          return
        }
        certificate = clientCertificateOf(peer)
      }
    }
    this.metrics.tls.handshakes.labels(LISTENER, version).inc()
    this.peers.set(socket, {
      protocol: 'https',
      identity: certificate === undefined ? ANONYMOUS : certificateIdentity(certificate),
      certificate,
      xfcc: certificate === undefined ? undefined : xfccElement(certificate, this.ownUris),
      tlsVersion: version,
      tlsCipher: socket.getCipher()?.name,
    })
  }

  private failed(error: NodeJS.ErrnoException, socket: TLSSocket): void {
    this.handshakeEnded(socket)
    const reason = handshakeFailure(error, socket)
    this.metrics.tls.handshakeFailures.labels(LISTENER, reason).inc()
    this.log.debug({ remote: socket.remoteAddress, reason, err: error.code ?? error.message }, 'TLS handshake failed')
    if (reason === 'http-request') {
      // Plain HTTP on the TLS port: answered in plain HTTP on the raw socket, so curl and browsers say why.
      const raw = (socket as TLSSocket & { _parent?: Socket | null })._parent
      if (raw !== undefined && raw !== null && raw.writable) raw.end(HTTP_ON_TLS_ANSWER)
    }
  }

  /** The peer of a TLS connection (worked out at its handshake). */
  peer(socket: Socket): ConnectionPeer | undefined {
    return this.peers.get(socket)
  }

  status(): TlsStatus {
    return {
      listener: LISTENER,
      state: this.material === undefined ? 'waiting' : 'ok',
      clientAuth: this.settings.clientAuth,
      appliedAt: this.appliedAt?.toISOString() ?? null,
      certificates: this.material?.certificates ?? [],
      lastError: this.lastError,
    }
  }

  /** Connections whose handshake is under way (for tests and GET /config). */
  get handshakesInProgress(): number {
    return this.handshaking.size
  }

  stop(): void {
    this.watcher?.close()
    clearInterval(this.ticketTimer)
    clearInterval(this.retryTimer)
    for (const forget of this.forgetExpiry) forget()
    this.forgetExpiry = []
  }
}
