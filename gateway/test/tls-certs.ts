// Test certificates: a private CA and the leaves it signs (servers, clients, expired or not yet valid
// ones), made in memory with node-forge. Keys come from node:crypto (RSA 2048, fast and native);
// forge only assembles and signs the certificates.
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import forge from 'node-forge'

export interface Issued {
  /** The certificate (PEM). */
  readonly cert: string
  /** Its private key (PKCS#8 PEM). */
  readonly key: string
  /** The serial number, hex as Node's X509Certificate.serialNumber prints it (upper case). */
  readonly serial: string
}

export interface LeafOptions {
  readonly commonName: string
  /** DNS names in the subjectAltName. */
  readonly dns?: readonly string[]
  /** IP addresses in the subjectAltName. */
  readonly ips?: readonly string[]
  /** Default: an hour ago. */
  readonly notBefore?: Date
  /** Default: in a day. */
  readonly notAfter?: Date
}

export interface TestCa extends Issued {
  issue(options: LeafOptions): Issued
}

function keyPair(): { publicPem: string; privatePem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  })
  return { publicPem: publicKey, privatePem: privateKey }
}

/** A positive serial (the first bit clear), 16 bytes. */
function serialHex(): string {
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0]! & 0x7f) | 0x10
  return bytes.toString('hex')
}

const HOUR = 3_600_000

function certificate(subject: string, publicPem: string, notBefore: Date, notAfter: Date, extensions: object[], issuer: { name: string; key: string } | null, privatePem: string): Issued {
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(publicPem)
  cert.serialNumber = serialHex()
  cert.validity.notBefore = notBefore
  cert.validity.notAfter = notAfter
  cert.setSubject([{ name: 'commonName', value: subject }])
  cert.setIssuer([{ name: 'commonName', value: issuer?.name ?? subject }])
  cert.setExtensions([...extensions, { name: 'subjectKeyIdentifier' }])
  cert.sign(forge.pki.privateKeyFromPem(issuer?.key ?? privatePem), forge.md.sha256.create())
  return { cert: forge.pki.certificateToPem(cert), key: privatePem, serial: cert.serialNumber.toUpperCase() }
}

/** A leaf for a server and a client alike (serverAuth and clientAuth). Self-signed when `ca` is null. */
function leaf(options: LeafOptions, ca: { name: string; key: string } | null): Issued {
  const { publicPem, privatePem } = keyPair()
  const altNames = [...(options.dns ?? []).map((value) => ({ type: 2, value })), ...(options.ips ?? []).map((ip) => ({ type: 7, ip }))]
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
  ]
  return certificate(options.commonName, publicPem, options.notBefore ?? new Date(Date.now() - HOUR), options.notAfter ?? new Date(Date.now() + 24 * HOUR), extensions, ca, privatePem)
}

export function createCa(name = 'Waypost Test CA'): TestCa {
  const { publicPem, privatePem } = keyPair()
  const extensions = [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]
  const ca = certificate(name, publicPem, new Date(Date.now() - HOUR), new Date(Date.now() + 30 * 24 * HOUR), extensions, null, privatePem)
  return { ...ca, issue: (options) => leaf(options, { name, key: privatePem }) }
}

/** A self-signed leaf (no CA). */
export function selfSigned(options: LeafOptions): Issued {
  return leaf(options, null)
}

/** A fresh temporary directory for certificate files. */
export function certDir(): string {
  return mkdtempSync(join(tmpdir(), 'waypost-certs-'))
}

/** Writes a file by rename, as a Secret volume or `mv` replaces it: readers never see half a file. */
export function replaceFile(file: string, text: string): void {
  const temporary = `${file}.${process.pid}.tmp`
  writeFileSync(temporary, text)
  renameSync(temporary, file)
}
