// A small certificate authority for development and tests (`waypost certs`, the TLS tests): a CA,
// server and client certificates with DNS, IP, URI (SPIFFE) and email SANs, expired or not yet
// valid ones, and CRLs. node-forge builds and encodes the certificates; the RSA work (2048-bit keys,
// signatures) is node:crypto's, that is OpenSSL's: milliseconds where forge's pure JavaScript takes
// about a second per certificate. Never for production: a cluster gets its certificates from
// cert-manager or its mesh (docs/operations/tls.md).
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto'
import { isIP } from 'node:net'
import forge from 'node-forge'

const { pki, asn1 } = forge

/** A certificate and its private key, both PEM. */
export interface Issued {
  readonly cert: string
  readonly key: string
  /** The serial number, lower-case hex. */
  readonly serial: string
}

export interface Validity {
  /** Days from `notBefore` (default now, less a minute for clock skew) to expiry. Default 90. */
  readonly days?: number
  readonly notBefore?: Date
  /** Overrides `days`: a date in the past makes an expired certificate. */
  readonly notAfter?: Date
}

export interface LeafOptions extends Validity {
  readonly commonName: string
  /** DNS names and IP addresses, as `--host` takes them: each goes in the SAN by its kind. */
  readonly hosts?: readonly string[]
  /** URI SANs, such as a SPIFFE ID (spiffe://trust-domain/path). */
  readonly uris?: readonly string[]
  readonly emails?: readonly string[]
  /** What the certificate may be used for (extended key usage). Default both. */
  readonly usage?: 'server' | 'client' | 'both'
  readonly organization?: string
}

const SKEW_MS = 60_000
const DAY_MS = 86_400_000

function newKeyPair(): { key: string; publicKey: forge.pki.PublicKey } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  return { key: privateKey, publicKey: pki.publicKeyFromPem(publicKey) }
}

/** SHA-256 with RSA over `der` (a binary string, as forge holds bytes), by OpenSSL. */
function rsaSha256(der: string, keyPem: string): string {
  return sign('sha256', Buffer.from(der, 'binary'), keyPem).toString('binary')
}

/** What forge's cert.sign does, with the signature made by node:crypto. */
function signCertificate(cert: forge.pki.Certificate, keyPem: string): void {
  cert.signatureOid = cert.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption!
  // getTBSCertificate is forge's (what cert.sign calls) but missing from its type definitions.
  const tbs = (pki as typeof pki & { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert)
  ;(cert as forge.pki.Certificate & { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs
  cert.signature = rsaSha256(asn1.toDer(tbs).getBytes(), keyPem)
}

/** 16 random bytes, positive as a DER INTEGER (the top bit clear), as RFC 5280 §4.1.2.2 asks. */
function newSerial(): string {
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0]! & 0x7f) | 0x10
  return bytes.toString('hex')
}

function validity(cert: forge.pki.Certificate, options: Validity): void {
  const notBefore = options.notBefore ?? new Date(Date.now() - SKEW_MS)
  cert.validity.notBefore = notBefore
  cert.validity.notAfter = options.notAfter ?? new Date(notBefore.getTime() + (options.days ?? 90) * DAY_MS)
}

/** A self-signed CA certificate (CA:true, keyCertSign and cRLSign), 10 years unless told. */
export function createCa(options: Validity & { commonName?: string } = {}): Issued {
  const pair = newKeyPair()
  const cert = pki.createCertificate()
  cert.publicKey = pair.publicKey
  cert.serialNumber = newSerial()
  validity(cert, { days: 3650, ...options })
  // Least specific first, as X.509 names go: RFC 4514 then writes them "CN=…,O=…".
  const subject = [
    { name: 'organizationName', value: 'Waypost development' },
    { name: 'commonName', value: options.commonName ?? 'Waypost development CA' },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  signCertificate(cert, pair.key)
  return { cert: pki.certificateToPem(cert), key: pair.key, serial: cert.serialNumber }
}

/** A leaf certificate signed by `ca`. */
export function issueCertificate(ca: Pick<Issued, 'cert' | 'key'>, options: LeafOptions): Issued {
  const caCert = pki.certificateFromPem(ca.cert)
  const pair = newKeyPair()
  const cert = pki.createCertificate()
  cert.publicKey = pair.publicKey
  cert.serialNumber = newSerial()
  validity(cert, options)
  cert.setSubject([
    { name: 'organizationName', value: options.organization ?? 'Waypost development' },
    { name: 'commonName', value: options.commonName },
  ])
  cert.setIssuer(caCert.subject.attributes)
  const altNames: Array<{ type: number; value?: string; ip?: string }> = []
  for (const host of options.hosts ?? []) altNames.push(isIP(host) === 0 ? { type: 2, value: host } : { type: 7, ip: host })
  for (const uri of options.uris ?? []) altNames.push({ type: 6, value: uri })
  for (const email of options.emails ?? []) altNames.push({ type: 1, value: email })
  const usage = options.usage ?? 'both'
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: usage !== 'client', clientAuth: usage !== 'server' },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]
  // RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty; ours never is.
  if (altNames.length > 0) extensions.push({ name: 'subjectAltName', altNames })
  cert.setExtensions(extensions)
  signCertificate(cert, ca.key)
  return { cert: pki.certificateToPem(cert), key: pair.key, serial: cert.serialNumber }
}

/**
 * A CRL (RFC 5280 §5) signed by `ca`, revoking the given serials (hex). forge makes certificates but
 * not CRLs, so the structure is written out with its ASN.1 helpers.
 */
export function issueCrl(ca: Pick<Issued, 'cert' | 'key'>, revokedSerials: readonly string[], options: { days?: number } = {}): string {
  const caCert = pki.certificateFromPem(ca.cert)
  const now = new Date(Date.now() - SKEW_MS)
  const next = new Date(now.getTime() + (options.days ?? 30) * DAY_MS)
  const time = (date: Date): forge.asn1.Asn1 => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(date))
  const sha256WithRsa = (): forge.asn1.Asn1 =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(pki.oids.sha256WithRSAEncryption!).getBytes()),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
    ])
  const tbsFields: forge.asn1.Asn1[] = [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, String.fromCharCode(1)), // v2
    sha256WithRsa(),
    pki.distinguishedNameToAsn1(caCert.subject),
    time(now),
    time(next),
  ]
  if (revokedSerials.length > 0) {
    tbsFields.push(
      asn1.create(
        asn1.Class.UNIVERSAL,
        asn1.Type.SEQUENCE,
        true,
        revokedSerials.map((serial) =>
          asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
            asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, forge.util.hexToBytes(serial.length % 2 === 0 ? serial : `0${serial}`)),
            time(now),
          ]),
        ),
      ),
    )
  }
  const tbs = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, tbsFields)
  const signature = rsaSha256(asn1.toDer(tbs).getBytes(), ca.key)
  const crl = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [tbs, sha256WithRsa(), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, String.fromCharCode(0) + signature)])
  const der = asn1.toDer(crl).getBytes()
  return forge.pem.encode({ type: 'X509 CRL', body: der })
}
