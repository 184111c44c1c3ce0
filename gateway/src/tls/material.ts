// TLS material read from PEM files and checked before any of it is used: each file readable and
// holding what it should, every certificate valid now, each key matching its certificate, a chain in
// order, and the whole accepted by OpenSSL. A listener's set (certificates, SNI, client CA, CRL) and
// an upstream client's (CA bundle, client certificate) go through the same checks. Whatever is wrong
// comes back as a MaterialError naming the file and the reason, so a rotation that went wrong never
// replaces a good set and the operator learns which file to fix.
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import { summary, type CertificateSummary } from './certificate.js'

/** What a file was read as. */
export type MaterialRole = 'ca' | 'cert' | 'key' | 'crl'

export class MaterialError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
    readonly role: MaterialRole = 'cert',
  ) {
    super(`${file}: ${reason}`)
    this.name = 'MaterialError'
  }
}

/** Where a listener's PEM files are (absolute paths). */
export interface MaterialFiles {
  readonly cert: string
  readonly key: string
  readonly sni: ReadonlyArray<{ readonly hosts: readonly string[]; readonly cert: string; readonly key: string }>
  readonly clientCa: string | undefined
  readonly crl: string | undefined
}

export interface KeyPair {
  readonly cert: string
  readonly key: string
  readonly leaf: X509Certificate
}

/** Everything a listener's secure contexts are made of, checked. */
export interface ListenerMaterial {
  readonly main: KeyPair
  readonly sni: ReadonlyArray<{ readonly hosts: readonly string[]; readonly pair: KeyPair }>
  readonly clientCa: string | undefined
  readonly crl: string | undefined
  /** The certificates in use, for GET /config and the expiry metric. */
  readonly certificates: readonly CertificateSummary[]
  /** SHA-256 over every file's content: a reload that changes nothing applies nothing. */
  readonly digest: string
}

const CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

function unreadable(file: string, role: MaterialRole, error: unknown): MaterialError {
  return new MaterialError(file, `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, role)
}

async function read(file: string, role: MaterialRole): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    throw unreadable(file, role, error)
  }
}

function readNow(file: string, role: MaterialRole): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (error) {
    throw unreadable(file, role, error)
  }
}

function certificatesIn(file: string, pem: string, role: MaterialRole): X509Certificate[] {
  const blocks = pem.match(CERTIFICATE)
  if (blocks === null) throw new MaterialError(file, 'no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)', role)
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block)
    } catch (error) {
      throw new MaterialError(file, `certificate ${index + 1} cannot be parsed (${(error as Error).message})`, role)
    }
  })
}

function checkValidity(file: string, certificate: X509Certificate, now: number, what = 'the certificate', role: MaterialRole = 'cert'): void {
  const notAfter = Date.parse(certificate.validTo)
  const notBefore = Date.parse(certificate.validFrom)
  if (notAfter <= now) throw new MaterialError(file, `${what} expired on ${new Date(notAfter).toISOString()}`, role)
  if (notBefore > now) throw new MaterialError(file, `${what} is not valid before ${new Date(notBefore).toISOString()}`, role)
}

/** A certificate file's text (leaf first, then each issuer) and its key's, checked to belong together and to be valid now. */
function checkPair(certFile: string, cert: string, keyFile: string, key: string, now: number): KeyPair {
  const chain = certificatesIn(certFile, cert, 'cert')
  const leaf = chain[0]!
  checkValidity(certFile, leaf, now)
  for (let i = 1; i < chain.length; i++) {
    if (!chain[i - 1]!.checkIssued(chain[i]!)) throw new MaterialError(certFile, `certificate ${i + 1} of the chain did not issue certificate ${i}: the chain must go leaf first, then each issuer`)
    checkValidity(certFile, chain[i]!, now, `intermediate certificate ${i + 1}`)
  }
  let privateKey
  try {
    privateKey = createPrivateKey(key)
  } catch (error) {
    throw new MaterialError(keyFile, `not a usable private key (${(error as Error).message})`, 'key')
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new MaterialError(keyFile, `the key does not match the certificate in ${certFile}`, 'key')
  return { cert, key, leaf }
}

async function keyPair(certFile: string, keyFile: string, now: number): Promise<KeyPair> {
  // Read side by side, but when both fail, always name the certificate: with Promise.all the error
  // would be whichever read failed first, so /ready's message changed from one poll to the next.
  const [cert, key] = await Promise.allSettled([read(certFile, 'cert'), read(keyFile, 'key')])
  if (cert.status === 'rejected') throw cert.reason
  if (key.status === 'rejected') throw key.reason
  return checkPair(certFile, cert.value, keyFile, key.value, now)
}

/** A CA bundle's certificates: at least one, and at least one valid now. Returns the one that expires first of those. */
function checkAuthorities(file: string, pem: string, now: number): X509Certificate {
  const authorities = certificatesIn(file, pem, 'ca')
  const valid = authorities.filter((ca) => Date.parse(ca.validTo) > now && Date.parse(ca.validFrom) <= now)
  if (valid.length === 0) checkValidity(file, authorities[0]!, now, 'every CA certificate in it is out of date; the first', 'ca')
  return valid.reduce((first, ca) => (Date.parse(ca.validTo) < Date.parse(first.validTo) ? ca : first))
}

/** The files of a TLS client (an upstream): an optional CA bundle (else the system's CAs) and an optional certificate with its key. */
export interface ClientTlsFiles {
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3'
}

/** What a TLS client connects with: the checked files and one secure context built from them. */
export interface ClientTlsMaterial {
  readonly ca: string | undefined
  readonly pair: KeyPair | undefined
  /** Milliseconds since the epoch after which the client certificate is no longer valid. */
  readonly notAfterMs: number | undefined
  readonly context: SecureContext
}

/** Reads and checks a client's files now (an upstream is built synchronously); throws a MaterialError naming the file and the reason. */
export function loadClientTls(files: ClientTlsFiles, now = Date.now()): ClientTlsMaterial {
  const ca = files.ca === undefined ? undefined : readNow(files.ca, 'ca')
  if (files.ca !== undefined) checkAuthorities(files.ca, ca!, now)
  const pair = files.cert === undefined || files.key === undefined ? undefined : checkPair(files.cert, readNow(files.cert, 'cert'), files.key, readNow(files.key, 'key'), now)
  let context: SecureContext
  try {
    context = createSecureContext({ ca, cert: pair?.cert, key: pair?.key, minVersion: files.minVersion })
  } catch (error) {
    // Each file passed its own checks: what is left is OpenSSL refusing the combination.
    throw new MaterialError(files.cert ?? files.ca ?? '-', `OpenSSL refused it (${(error as Error).message})`, files.cert === undefined ? 'ca' : 'cert')
  }
  return { ca, pair, notAfterMs: pair === undefined ? undefined : Date.parse(pair.leaf.validTo), context }
}

/** Reads and checks every file; throws a MaterialError for the first problem. */
export async function loadListenerMaterial(files: MaterialFiles, now = Date.now()): Promise<ListenerMaterial> {
  const main = await keyPair(files.cert, files.key, now)
  const certificates: CertificateSummary[] = [summary('server', files.cert, main.leaf)]
  const sni: Array<{ hosts: readonly string[]; pair: KeyPair }> = []
  for (const entry of files.sni) {
    const pair = await keyPair(entry.cert, entry.key, now)
    sni.push({ hosts: entry.hosts, pair })
    certificates.push(summary(`sni:${entry.hosts[0]!}`, entry.cert, pair.leaf))
  }
  let clientCa: string | undefined
  if (files.clientCa !== undefined) {
    clientCa = await read(files.clientCa, 'ca')
    // The one that expires first is the one to watch.
    certificates.push(summary('client-ca', files.clientCa, checkAuthorities(files.clientCa, clientCa, now)))
  }
  let crl: string | undefined
  if (files.crl !== undefined) {
    crl = await read(files.crl, 'crl')
    if (!crl.includes('-----BEGIN X509 CRL-----')) throw new MaterialError(files.crl, 'no PEM CRL in it (expected -----BEGIN X509 CRL-----)', 'crl')
    try {
      createSecureContext({ crl })
    } catch (error) {
      throw new MaterialError(files.crl, `OpenSSL cannot read the CRL (${(error as Error).message})`, 'crl')
    }
  }
  const digest = createHash('sha256')
  for (const text of [main.cert, main.key, ...sni.flatMap((entry) => [entry.pair.cert, entry.pair.key]), clientCa ?? '', crl ?? '']) digest.update(text).update('\0')
  return { main, sni, clientCa, crl, certificates, digest: digest.digest('hex') }
}
