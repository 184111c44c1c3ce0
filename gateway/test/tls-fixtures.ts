// Certificates for the TLS tests, minted by the gateway's own development CA (src/tls/issue.ts):
// a CA with server and client certificates, another CA, an expired and a revoked client
// certificate, written to a temporary folder; and clients that present them.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type TLSSocket, type ConnectionOptions } from 'node:tls'
import { Agent, request } from 'undici'
import { createCa, issueCertificate, issueCrl, type Issued } from '../src/tls/issue.js'

export const CLIENT_SPIFFE = 'spiffe://cluster.local/ns/default/sa/app'

export interface Pki {
  readonly dir: string
  readonly ca: Issued
  readonly server: Issued
  readonly client: Issued
  readonly otherCa: Issued
  /** A client certificate from otherCa. */
  readonly foreign: Issued
  readonly expired: Issued
  readonly revoked: Issued
  /** A CRL of `ca` revoking `revoked`. */
  readonly crl: string
  /** Paths of the files written: ca.crt, server.crt, server.key, crl.pem. */
  readonly files: { ca: string; cert: string; key: string; crl: string }
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-tls-'))
  const ca = createCa()
  const server = issueCertificate(ca, { commonName: 'localhost', hosts: ['localhost', '127.0.0.1'], uris: ['spiffe://cluster.local/ns/default/sa/waypost'], usage: 'server' })
  const client = issueCertificate(ca, { commonName: 'app', uris: [CLIENT_SPIFFE], hosts: ['app.default.svc'], emails: ['app@example.test'], usage: 'client' })
  const otherCa = createCa({ commonName: 'Some other CA' })
  const foreign = issueCertificate(otherCa, { commonName: 'stranger', uris: [CLIENT_SPIFFE], usage: 'client' })
  const day = 86_400_000
  const expired = issueCertificate(ca, { commonName: 'old', uris: [CLIENT_SPIFFE], notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day), usage: 'client' })
  const revoked = issueCertificate(ca, { commonName: 'revoked', uris: [CLIENT_SPIFFE], usage: 'client' })
  const crl = issueCrl(ca, [revoked.serial])
  const files = { ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), crl: join(dir, 'crl.pem') }
  writeFileSync(files.ca, ca.cert)
  writeFileSync(files.cert, server.cert)
  writeFileSync(files.key, server.key)
  writeFileSync(files.crl, crl)
  return { dir, ca, server, client, otherCa, foreign, expired, revoked, crl, files }
}

/** `listen.tls` for the PKI's files, with more fields. */
export function tlsSection(pki: Pki, more: Record<string, unknown> = {}): Record<string, unknown> {
  return { cert: pki.files.cert, key: pki.files.key, ...more }
}

export interface ClientOptions {
  /** CA certificates the client trusts (default the PKI's CA). */
  readonly ca?: string | string[]
  /** The certificate the client presents, if any. */
  readonly identity?: Pick<Issued, 'cert' | 'key'>
  readonly servername?: string
  readonly maxVersion?: ConnectionOptions['maxVersion']
}

/** An undici Agent that trusts `ca` and presents `identity`. */
export function tlsAgent(pki: Pki, options: ClientOptions = {}): Agent {
  return new Agent({ connect: { ca: options.ca ?? pki.ca.cert, ...(options.identity === undefined ? {} : { cert: options.identity.cert, key: options.identity.key }), servername: options.servername ?? 'localhost', maxVersion: options.maxVersion } })
}

/** One request over a new TLS connection; the response status and JSON body (the stub's /headers echoes). */
export async function tlsGet(url: string, pki: Pki, options: ClientOptions & { headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const agent = tlsAgent(pki, options)
  try {
    const response = await request(url, { dispatcher: agent, headers: options.headers })
    return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
  } finally {
    await agent.close()
  }
}

export type HandshakeOptions = ClientOptions & { ciphers?: string; minVersion?: ConnectionOptions['minVersion']; anyName?: boolean }

/** A raw TLS handshake (trusting the PKI's CA, or `options.ca`): the socket once secure (the server's certificate is on it), or the error. */
export function handshake(port: number, pkiOrOptions: Pki | HandshakeOptions, maybeOptions: HandshakeOptions = {}): Promise<TLSSocket> {
  const pki = 'ca' in pkiOrOptions && typeof pkiOrOptions.ca === 'object' && !Array.isArray(pkiOrOptions.ca) ? (pkiOrOptions as Pki) : undefined
  const options = pki === undefined ? (pkiOrOptions as HandshakeOptions) : maybeOptions
  return new Promise((resolve, reject) => {
    const socket = connect({
      port,
      host: '127.0.0.1',
      ca: options.ca ?? pki?.ca.cert,
      servername: options.servername ?? 'localhost',
      maxVersion: options.maxVersion,
      minVersion: options.minVersion,
      ciphers: options.ciphers,
      // Chain verified, host name not: to see which certificate the server chose for a name.
      ...(options.anyName === true ? { checkServerIdentity: () => undefined } : {}),
      ...(options.identity === undefined ? {} : { cert: options.identity.cert, key: options.identity.key }),
    })
    socket.once('secureConnect', () => resolve(socket))
    socket.once('error', reject)
  })
}

export function portOf(url: string): number {
  return Number(new URL(url).port)
}
