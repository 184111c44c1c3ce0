import t from 'tap'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSecureContext } from 'node:tls'
import { createCa, issueCertificate, issueCrl } from './issue.js'
import { writeDevelopmentCertificates } from './command.js'

t.test('a CA, leaves with SANs, validity as asked, and a CRL OpenSSL reads', async (t) => {
  const ca = createCa({ commonName: 'Test CA' })
  const caCert = new X509Certificate(ca.cert)
  t.ok(caCert.ca, 'CA:true')
  t.ok(caCert.checkPrivateKey(createPrivateKey(ca.key)))
  const leaf = issueCertificate(ca, { commonName: 'svc', hosts: ['svc.test', '127.0.0.1', '::1'], uris: ['spiffe://td/x'], emails: ['a@b.test'], days: 2, usage: 'server' })
  const x509 = new X509Certificate(leaf.cert)
  t.notOk(x509.ca)
  t.ok(x509.verify(caCert.publicKey), 'signed by the CA')
  t.ok(x509.checkIssued(caCert))
  t.equal(x509.subjectAltName, 'DNS:svc.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, URI:spiffe://td/x, email:a@b.test')
  t.ok(Math.abs(Date.parse(x509.validTo) - Date.now() - 2 * 86_400_000) < 120_000, 'days')
  t.equal(x509.serialNumber.toLowerCase(), leaf.serial)
  t.match(x509.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'server auth only')
  const expired = new X509Certificate(issueCertificate(ca, { commonName: 'old', notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) }).cert)
  t.ok(Date.parse(expired.validTo) < Date.now(), 'an expired one when asked')
  const crl = issueCrl(ca, [leaf.serial])
  t.match(crl, /^-----BEGIN X509 CRL-----/)
  t.doesNotThrow(() => createSecureContext({ ca: ca.cert, crl }), 'OpenSSL parses the CRL')
})

t.test('waypost certs: six files, keys 0600; a second run keeps everything; --reissue replaces the leaves but keeps the CA', async (t) => {
  const dir = join(mkdtempSync(join(tmpdir(), 'waypost-certs-')), 'out')
  t.same(await writeDevelopmentCertificates({ out: dir, spiffe: 'spiffe://cluster.local/ns/default/sa/app', days: 5 }), { ca: 'created', server: 'issued', client: 'issued' })
  const read = (name: string): string => readFileSync(join(dir, name), 'utf8')
  for (const name of ['ca.key', 'server.key', 'client.key']) t.equal(statSync(join(dir, name)).mode & 0o777, 0o600, `${name} is 0600`)
  const server = new X509Certificate(read('server.crt'))
  t.equal(server.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1')
  t.equal(new X509Certificate(read('client.crt')).subjectAltName, 'URI:spiffe://cluster.local/ns/default/sa/app')
  const before = { ca: read('ca.crt'), server: read('server.crt') }
  t.same(await writeDevelopmentCertificates({ out: dir }), { ca: 'kept', server: 'kept', client: 'kept' })
  t.equal(read('server.crt'), before.server)
  t.same(await writeDevelopmentCertificates({ out: dir, reissue: true, hosts: ['gw.test'] }), { ca: 'kept', server: 'issued', client: 'issued' })
  t.equal(read('ca.crt'), before.ca, 'the CA clients trust is kept')
  const reissued = new X509Certificate(read('server.crt'))
  t.not(reissued.serialNumber, server.serialNumber)
  t.equal(reissued.subjectAltName, 'DNS:gw.test')
  t.ok(reissued.verify(new X509Certificate(before.ca).publicKey))
  rmSync(join(dir, 'client.key'))
  t.same(await writeDevelopmentCertificates({ out: dir }), { ca: 'kept', server: 'kept', client: 'issued' }, 'a missing leaf is issued again')
  rmSync(join(dir, 'ca.key'))
  await t.rejects(writeDevelopmentCertificates({ out: dir }), /ca\.key is missing beside its pair/, 'a half CA is refused, never replaced')
  writeFileSync(join(dir, 'ca.key'), createCa().key)
  await t.rejects(writeDevelopmentCertificates({ out: dir }), /ca\.key does not match/)
})
