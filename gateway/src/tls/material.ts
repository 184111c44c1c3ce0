// A TLS listener's certificates, keys, CA bundle and CRL, read from PEM files and checked before any
// of it is used: each file readable and holding what it should, every certificate valid now, each
// key matching its certificate, a chain in order, and the whole accepted by OpenSSL. Whatever is
// wrong comes back as a MaterialError naming the file and the reason, so a rotation that went wrong
// never replaces a good set and the operator learns which file to fix.
import { readFile } from 'node:fs/promises'
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import { summary, type CertificateSummary } from './certificate.js'

export class MaterialError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
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

async function read(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    throw new MaterialError(file, `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`)
  }
}

function certificatesIn(file: string, pem: string): X509Certificate[] {
  const blocks = pem.match(CERTIFICATE)
  if (blocks === null) throw new MaterialError(file, 'no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)')
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block)
    } catch (error) {
      throw new MaterialError(file, `certificate ${index + 1} cannot be parsed (${(error as Error).message})`)
    }
  })
}

function checkValidity(file: string, certificate: X509Certificate, now: number, what = 'the certificate'): void {
  const notAfter = Date.parse(certificate.validTo)
  const notBefore = Date.parse(certificate.validFrom)
  if (notAfter <= now) throw new MaterialError(file, `${what} expired on ${new Date(notAfter).toISOString()}`)
  if (notBefore > now) throw new MaterialError(file, `${what} is not valid before ${new Date(notBefore).toISOString()}`)
}

async function keyPair(certFile: string, keyFile: string, now: number): Promise<KeyPair> {
  const [cert, key] = await Promise.all([read(certFile), read(keyFile)])
  const chain = certificatesIn(certFile, cert)
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
    throw new MaterialError(keyFile, `not a usable private key (${(error as Error).message})`)
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new MaterialError(keyFile, `the key does not match the certificate in ${certFile}`)
  return { cert, key, leaf }
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
    clientCa = await read(files.clientCa)
    const authorities = certificatesIn(files.clientCa, clientCa)
    const valid = authorities.filter((ca) => Date.parse(ca.validTo) > now && Date.parse(ca.validFrom) <= now)
    if (valid.length === 0) checkValidity(files.clientCa, authorities[0]!, now, 'every CA certificate in it is out of date; the first')
    // The one that expires first is the one to watch.
    const soonest = valid.reduce((first, ca) => (Date.parse(ca.validTo) < Date.parse(first.validTo) ? ca : first))
    certificates.push(summary('client-ca', files.clientCa, soonest))
  }
  let crl: string | undefined
  if (files.crl !== undefined) {
    crl = await read(files.crl)
    if (!crl.includes('-----BEGIN X509 CRL-----')) throw new MaterialError(files.crl, 'no PEM CRL in it (expected -----BEGIN X509 CRL-----)')
    try {
      createSecureContext({ crl })
    } catch (error) {
      throw new MaterialError(files.crl, `OpenSSL cannot read the CRL (${(error as Error).message})`)
    }
  }
  const digest = createHash('sha256')
  for (const text of [main.cert, main.key, ...sni.flatMap((entry) => [entry.pair.cert, entry.pair.key]), clientCa ?? '', crl ?? '']) digest.update(text).update('\0')
  return { main, sni, clientCa, crl, certificates, digest: digest.digest('hex') }
}
