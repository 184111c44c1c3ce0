// Certificates, keys and CA bundles read from PEM files, checked before use, and watched for change.
// A file that cannot be used is refused with the file and the reason (unreadable, no certificate in
// it, expired, not yet valid, a key that does not match its certificate), so a rotation that went
// wrong never replaces a good pair and the operator learns which file to fix.
import { readFileSync } from 'node:fs'
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'

/** What a file was read as: a CA bundle, a certificate (with its chain) or a private key. */
export type TlsFileRole = 'ca' | 'cert' | 'key'

/** A PEM file that cannot be used, and why. */
export class TlsFileError extends Error {
  constructor(
    readonly file: string,
    readonly role: TlsFileRole,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`)
    this.name = 'TlsFileError'
  }
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

function readPem(file: string, role: TlsFileRole): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (error) {
    throw new TlsFileError(file, role, `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`)
  }
}

/** Every certificate of a PEM text, in order; at least one. */
function certificatesOf(file: string, role: TlsFileRole, pem: string): X509Certificate[] {
  const blocks = pem.match(CERTIFICATE_BLOCK)
  if (blocks === null) throw new TlsFileError(file, role, 'no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)')
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block)
    } catch (error) {
      throw new TlsFileError(file, role, `certificate ${index + 1} is not valid (${(error as Error).message})`)
    }
  })
}

/** A CA bundle: the PEM text (what TLS options take) and its certificates. */
export interface CaBundle {
  readonly file: string
  readonly pem: string
  readonly certificates: readonly X509Certificate[]
}

export function loadCaBundle(file: string): CaBundle {
  const pem = readPem(file, 'ca')
  return { file, pem, certificates: certificatesOf(file, 'ca', pem) }
}

/** A certificate (with its chain) and its private key, checked to belong together and to be valid now. */
export interface KeyPair {
  readonly certFile: string
  readonly keyFile: string
  /** The certificate file's text: the leaf first, then its intermediates. */
  readonly certPem: string
  readonly keyPem: string
  readonly leaf: X509Certificate
  /** Milliseconds since the epoch after which the leaf is no longer valid. */
  readonly notAfterMs: number
}

export function loadKeyPair(certFile: string, keyFile: string, now = Date.now()): KeyPair {
  const certPem = readPem(certFile, 'cert')
  const keyPem = readPem(keyFile, 'key')
  const leaf = certificatesOf(certFile, 'cert', certPem)[0]!
  const notBeforeMs = Date.parse(leaf.validFrom)
  const notAfterMs = Date.parse(leaf.validTo)
  if (notAfterMs <= now) throw new TlsFileError(certFile, 'cert', `the certificate expired on ${new Date(notAfterMs).toISOString()}`)
  if (notBeforeMs > now) throw new TlsFileError(certFile, 'cert', `the certificate is not valid before ${new Date(notBeforeMs).toISOString()}`)
  let key: KeyObject
  try {
    key = createPrivateKey(keyPem)
  } catch (error) {
    throw new TlsFileError(keyFile, 'key', `not a usable private key (${(error as Error).message})`)
  }
  if (!leaf.checkPrivateKey(key)) throw new TlsFileError(keyFile, 'key', `the key does not match the certificate in ${certFile}`)
  return { certFile, keyFile, certPem, keyPem, leaf, notAfterMs }
}

/** The files of a TLS client: an optional CA bundle (else the system's CAs) and an optional certificate with its key. */
export interface ClientTlsFiles {
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
}

/** What a TLS client connects with: the checked files and one secure context built from them. */
export interface ClientTlsMaterial {
  readonly ca: CaBundle | undefined
  readonly pair: KeyPair | undefined
  readonly context: SecureContext
}

/** Reads and checks the files (throws a TlsFileError naming the file and the reason) and builds the secure context. */
export function loadClientTls(files: ClientTlsFiles): ClientTlsMaterial {
  const ca = files.ca === undefined ? undefined : loadCaBundle(files.ca)
  const pair = files.cert === undefined || files.key === undefined ? undefined : loadKeyPair(files.cert, files.key)
  let context: SecureContext
  try {
    context = createSecureContext({ ca: ca?.pem, cert: pair?.certPem, key: pair?.keyPem, minVersion: files.minVersion })
  } catch (error) {
    // Each file passed its own checks: what is left is OpenSSL refusing the combination.
    throw new TlsFileError(files.cert ?? files.ca ?? '-', files.cert === undefined ? 'ca' : 'cert', `OpenSSL refused it (${(error as Error).message})`)
  }
  return { ca, pair, context }
}
