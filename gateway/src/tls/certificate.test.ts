import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { clientCertificateOf, distinguishedName, parseSubjectAltNames } from './certificate.js'
import { createCa, issueCertificate } from './issue.js'
import { xfccElement } from '../proxy/headers.js'

t.test("parses Node's subjectAltName text, JSON-quoted values included", async (t) => {
  t.same(parseSubjectAltNames('DNS:a.test, URI:spiffe://td/x, email:m@x.test, IP Address:127.0.0.1, DNS:"b, c.test"'), {
    dns: ['a.test', 'b, c.test'],
    uri: ['spiffe://td/x'],
    email: ['m@x.test'],
    ip: ['127.0.0.1'],
  })
  t.same(parseSubjectAltNames(undefined), { dns: [], uri: [], email: [], ip: [] })
  t.equal(distinguishedName('C=US\nO=Example\\, Inc.\nCN=app'), 'CN=app,O=Example\\, Inc.,C=US', 'most specific first, escapes kept')
})

t.test('a certificate as the identity carries it, and its XFCC element', async (t) => {
  const ca = createCa()
  const issued = issueCertificate(ca, { commonName: 'app', hosts: ['app.svc', '10.0.0.1'], uris: ['https://x.test/a', 'spiffe://td/ns/a/sa/b'], emails: ['a@x.test'], usage: 'client' })
  const x509 = new X509Certificate(issued.cert)
  const certificate = clientCertificateOf(x509)
  t.match(certificate, {
    subject: 'CN=app,O=Waypost development',
    issuer: 'CN=Waypost development CA,O=Waypost development',
    san: { dns: ['app.svc'], uri: ['https://x.test/a', 'spiffe://td/ns/a/sa/b'], email: ['a@x.test'] },
    spiffeId: 'spiffe://td/ns/a/sa/b',
    serial: issued.serial,
    notAfter: Date.parse(x509.validTo),
  })
  t.equal(certificate.fingerprint, x509.fingerprint256.replaceAll(':', '').toLowerCase())
  t.equal(
    xfccElement(certificate, ['spiffe://td/gw']),
    `By=spiffe://td/gw;Hash=${certificate.fingerprint};Subject="CN=app,O=Waypost development";URI=https://x.test/a;URI=spiffe://td/ns/a/sa/b;DNS=app.svc`,
  )
  t.equal(xfccElement({ ...certificate, subject: 'CN=a "b"', san: { dns: ['x;y'], uri: [], email: [] } }, []), `Hash=${certificate.fingerprint};Subject="CN=a \\"b\\"";DNS="x;y"`, 'quoted and escaped where a value holds a separator')
})
