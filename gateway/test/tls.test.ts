// The TLS listener end to end, over real sockets and real handshakes: mTLS with and without a
// client certificate, another CA's, an expired and a revoked one; SNI; routes that match on the
// SPIFFE ID; X-Forwarded-Client-Cert in each of Envoy's modes; plain HTTP on the TLS port; the
// cleartext listener beside it; versions and ciphers refused; renegotiation refused.
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { connect as connectTcp } from 'node:net'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, startGateway, type RunningGateway } from './helpers.js'
import { CLIENT_SPIFFE, handshake, makePki, portOf, tlsGet, tlsSection } from './tls-fixtures.js'
import { issueCertificate } from '../src/tls/issue.js'

const pki = makePki()
const stub = await startStub()
t.teardown(() => stub.close())

async function gatewayWith(listen: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<RunningGateway> {
  const gw = await startGateway(catchAllConfig(stub.url, { listen, extra }))
  t.teardown(() => gw.close())
  return gw
}

interface Echo {
  headers: Record<string, string>
}

const failure = (text: string, reason: string): number => Number(new RegExp(`waypost_tls_handshake_failures_total\\{listener="proxy",reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ?? NaN)

t.test('clientAuth require: a client certificate from the CA gets through; none, another CA, expired or revoked fail the handshake', async (t) => {
  const gw = await gatewayWith({ tls: tlsSection(pki, { clientAuth: 'require', clientCa: pki.files.ca, crl: pki.files.crl }) })
  t.match(gw.url, /^https:\/\//)
  const ok = await tlsGet(`${gw.url}/headers`, pki, { identity: pki.client })
  t.equal(ok.status, 200)
  const echo = JSON.parse(ok.body) as Echo
  t.equal(echo.headers['x-forwarded-proto'], 'https', 'the upstream learns the scheme')
  const fingerprint = new X509Certificate(pki.client.cert).fingerprint256.replaceAll(':', '').toLowerCase()
  t.equal(
    echo.headers['x-forwarded-client-cert'],
    `By=spiffe://cluster.local/ns/default/sa/waypost;Hash=${fingerprint};Subject="CN=app,O=Waypost development";URI=${CLIENT_SPIFFE};DNS=app.default.svc`,
    "XFCC in Envoy's format, the default sanitizeSet",
  )
  await t.rejects(tlsGet(`${gw.url}/headers`, pki), 'no certificate')
  await t.rejects(tlsGet(`${gw.url}/headers`, pki, { identity: pki.foreign }), "another CA's certificate")
  await t.rejects(tlsGet(`${gw.url}/headers`, pki, { identity: pki.expired }), 'an expired certificate')
  await t.rejects(tlsGet(`${gw.url}/headers`, pki, { identity: pki.revoked }), 'a revoked certificate (CRL)')
  await t.rejects(tlsGet(`${gw.url}/headers`, pki, { identity: pki.client, maxVersion: 'TLSv1.2' }).then(() => tlsGet(`${gw.url}/headers`, pki, { maxVersion: 'TLSv1.2' })), 'none over TLS 1.2 either')
  const metrics = await metricsText(gw)
  t.ok(failure(metrics, 'no-cert') >= 2, 'no-cert counted')
  t.equal(failure(metrics, 'unknown-ca'), 1, 'unknown-ca counted')
  t.equal(failure(metrics, 'expired'), 1, 'expired counted')
  t.equal(failure(metrics, 'revoked'), 1, 'revoked counted')
  t.match(metrics, /waypost_tls_handshakes_total\{listener="proxy",version="TLSv1\.3"\} [1-9]/)
  t.match(metrics, new RegExp(`waypost_tls_certificate_expiry_timestamp_seconds\\{listener="proxy",name="server"\\} ${Math.floor(Date.parse(new X509Certificate(pki.server.cert).validTo) / 1000)}`))
  const access = gw.accessLines().find((line) => line.path === '/headers' && line.status === 200)
  t.match(access, { tlsVersion: 'TLSv1.3', tlsCipher: /^TLS_/ }, 'TLS version and cipher in the access log')
})

t.test('clientAuth optional: anonymous clients reach public routes; an mTLS-only route matches on the SPIFFE ID; a certificate that does not verify is refused', async (t) => {
  const gw = await gatewayWith(
    { tls: tlsSection(pki, { clientAuth: 'optional', clientCa: pki.files.ca }) },
    {
      routes: [
        { name: 'public-twin', match: { path: { prefix: '/anything/twin' } }, upstream: 'app' },
        { name: 'twin', match: { path: { prefix: '/anything/twin' }, clientCert: true }, upstream: 'app' },
        { name: 'workload', match: { path: { prefix: '/anything/workload' }, clientCert: { spiffeId: CLIENT_SPIFFE } }, upstream: 'app' },
        { name: 'namespace', match: { path: { prefix: '/anything/ns' }, clientCert: { spiffeId: 'spiffe://cluster.local/ns/default/*' } }, upstream: 'app' },
        { name: 'by-dns', match: { path: { prefix: '/anything/dns' }, clientCert: { dns: '*.default.svc' } }, upstream: 'app' },
        { name: 'someone-else', match: { path: { prefix: '/anything/other' }, clientCert: { spiffeId: 'spiffe://cluster.local/ns/other/sa/x' } }, upstream: 'app' },
      ],
    },
  )
  const anonymous = await tlsGet(`${gw.url}/headers`, pki)
  t.equal(anonymous.status, 200, 'no certificate: the public route')
  t.notOk('x-forwarded-client-cert' in (JSON.parse(anonymous.body) as Echo).headers, 'and no XFCC')
  const refused = await tlsGet(`${gw.url}/anything/workload`, pki)
  t.equal(refused.status, 403, 'the mTLS-only route without a certificate')
  t.match(refused.headers['x-waypost-reason'], /^client-cert-required route=- upstream=-/)
  for (const path of ['/anything/workload', '/anything/ns/x', '/anything/dns']) {
    t.equal((await tlsGet(`${gw.url}${path}`, pki, { identity: pki.client })).status, 200, `${path} with the workload's certificate`)
  }
  const wrong = await tlsGet(`${gw.url}/anything/other`, pki, { identity: pki.client })
  t.equal(wrong.status, 403, "another workload's route: refused, not handed to the catch-all route /")
  t.equal((await tlsGet(`${gw.url}/anything/twin`, pki)).status, 200, 'a public route as specific as the mTLS one takes anonymous clients')
  t.equal((await tlsGet(`${gw.url}/anything/twin`, pki, { identity: pki.client })).status, 200)
  await t.rejects(tlsGet(`${gw.url}/headers`, pki, { identity: pki.foreign }), "optional still refuses a certificate that does not verify")
  t.equal(failure(await metricsText(gw), 'unknown-ca'), 1)
  const routes = gw.accessLines().filter((line) => line.status === 200).map((line) => line.route)
  t.same(routes.sort(), ['all', 'by-dns', 'namespace', 'public-twin', 'twin', 'workload'], 'the twin with clientCert is tried first')
})

t.test('X-Forwarded-Client-Cert: each of Envoy modes, and a client-sent one stripped unless the peer is a trusted proxy', async (t) => {
  const forged = 'Hash=forged;Subject="CN=admin"'
  const fingerprint = new X509Certificate(pki.client.cert).fingerprint256.replaceAll(':', '').toLowerCase()
  const ours = `By=spiffe://cluster.local/ns/default/sa/waypost;Hash=${fingerprint};Subject="CN=app,O=Waypost development";URI=${CLIENT_SPIFFE};DNS=app.default.svc`
  const xfccSent = async (listen: Record<string, unknown>, withCertificate = true): Promise<string | undefined> => {
    const gw = await gatewayWith({ tls: tlsSection(pki, { clientAuth: 'optional', clientCa: pki.files.ca }), ...listen })
    const response = await tlsGet(`${gw.url}/headers`, pki, { identity: withCertificate ? pki.client : undefined, headers: { 'x-forwarded-client-cert': forged } })
    await gw.close()
    return (JSON.parse(response.body) as Echo).headers['x-forwarded-client-cert']
  }
  const trusted = { trustedProxies: ['127.0.0.1'] }
  t.equal(await xfccSent({ forwardClientCert: 'sanitize' }), undefined, 'sanitize: none')
  t.equal(await xfccSent({ forwardClientCert: 'sanitizeSet' }), ours, "sanitizeSet: ours only, the client's dropped")
  t.equal(await xfccSent({ forwardClientCert: 'sanitizeSet' }, false), undefined, 'sanitizeSet without a client certificate: none')
  t.equal(await xfccSent({ forwardClientCert: 'appendForward', ...trusted }), `${forged},${ours}`, "appendForward from a trusted proxy: its element, then ours")
  t.equal(await xfccSent({ forwardClientCert: 'appendForward', trustedProxies: ['10.0.0.0/8'] }), ours, 'appendForward from an untrusted peer: ours only')
  t.equal(await xfccSent({ forwardClientCert: 'forwardOnly', ...trusted }), forged, "forwardOnly: the trusted proxy's, unchanged")
  t.equal(await xfccSent({ forwardClientCert: 'forwardOnly', ...trusted }, false), undefined, 'forwardOnly needs mTLS')
  t.equal(await xfccSent({ forwardClientCert: 'alwaysForwardOnly', ...trusted }, false), forged, 'alwaysForwardOnly: mTLS or not')
  t.equal(await xfccSent({ forwardClientCert: 'alwaysForwardOnly', trustedProxies: ['10.0.0.0/8'] }, false), undefined, '...but never from an untrusted peer')
})

t.test('a cleartext gateway drops a client-sent X-Forwarded-Client-Cert too', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url))
  t.teardown(() => gw.close())
  const response = await request(`${gw.url}/headers`, { headers: { 'x-forwarded-client-cert': 'Hash=forged' } })
  t.notOk('x-forwarded-client-cert' in ((await response.body.json()) as Echo).headers)
})

t.test('SNI: exact names, then wildcards, else the default certificate', async (t) => {
  const exact = issueCertificate(pki.ca, { commonName: 'api.example.test', hosts: ['api.example.test'], usage: 'server' })
  const wildcard = issueCertificate(pki.ca, { commonName: 'wild.example.test', hosts: ['*.apps.example.test'], usage: 'server' })
  const { writeFileSync } = await import('node:fs')
  const { join } = await import('node:path')
  const files = { exactCert: join(pki.dir, 'api.crt'), exactKey: join(pki.dir, 'api.key'), wildCert: join(pki.dir, 'wild.crt'), wildKey: join(pki.dir, 'wild.key') }
  writeFileSync(files.exactCert, exact.cert)
  writeFileSync(files.exactKey, exact.key)
  writeFileSync(files.wildCert, wildcard.cert)
  writeFileSync(files.wildKey, wildcard.key)
  const gw = await gatewayWith({
    tls: tlsSection(pki, {
      sni: [
        { hosts: ['api.example.test'], cert: files.exactCert, key: files.exactKey },
        { hosts: ['*.apps.example.test'], cert: files.wildCert, key: files.wildKey },
      ],
    }),
  })
  const served = async (servername: string): Promise<string> => {
    const socket = await handshake(portOf(gw.url), pki, { servername, anyName: true })
    const cn = socket.getPeerX509Certificate()!.subject
    socket.destroy()
    return cn
  }
  t.match(await served('api.example.test'), /CN=api\.example\.test/)
  t.match(await served('shop.apps.example.test'), /CN=wild\.example\.test/)
  t.match(await served('localhost'), /CN=localhost/, 'the default')
  t.match(await served('apps.example.test'), /CN=localhost/, 'a wildcard does not cover its apex')
  const response = await tlsGet(`${gw.url}/headers`, pki, { servername: 'api.example.test' })
  t.equal(response.status, 200, 'a request over the SNI certificate')
})

t.test('TLS 1.0/1.1, CBC ciphers and RSA key exchange are refused; TLS 1.2 with an AEAD cipher is accepted; minVersion TLSv1.3 refuses 1.2', async (t) => {
  const gw = await gatewayWith({ tls: tlsSection(pki) })
  const port = portOf(gw.url)
  await t.rejects(handshake(port, pki, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' }), 'TLS 1.1')
  await t.rejects(handshake(port, pki, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA' }), 'CBC')
  await t.rejects(handshake(port, pki, { maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256:AES256-GCM-SHA384' }), 'RSA key exchange')
  const tls12 = await handshake(port, pki, { maxVersion: 'TLSv1.2' })
  t.equal(tls12.getProtocol(), 'TLSv1.2')
  t.match(tls12.getCipher().name, /^ECDHE-RSA-(AES\d+-GCM|CHACHA20)/)
  t.equal(tls12.alpnProtocol, false, 'no ALPN asked, none chosen')
  tls12.destroy()
  const metrics = await metricsText(gw)
  t.ok(failure(metrics, 'protocol') >= 1, 'an old version counts as protocol')
  t.ok(failure(metrics, 'no-shared-cipher') >= 2)
  const strict = await gatewayWith({ tls: tlsSection(pki, { minVersion: 'TLSv1.3' }) })
  await t.rejects(handshake(portOf(strict.url), pki, { maxVersion: 'TLSv1.2' }))
  t.equal((await handshake(portOf(strict.url), pki)).getProtocol(), 'TLSv1.3')
})

t.test('ALPN: http/1.1 is offered', async (t) => {
  const gw = await gatewayWith({ tls: tlsSection(pki) })
  const { connect } = await import('node:tls')
  const socket = await new Promise<import('node:tls').TLSSocket>((resolve, reject) => {
    const s = connect({ port: portOf(gw.url), host: '127.0.0.1', ca: pki.ca.cert, servername: 'localhost', ALPNProtocols: ['h2', 'http/1.1'] }, () => resolve(s))
    s.once('error', reject)
  })
  t.equal(socket.alpnProtocol, 'http/1.1')
  socket.destroy()
})

t.test('plain HTTP to the TLS port gets a clear 400; the cleartext listener beside it serves the same routes', async (t) => {
  const gw = await gatewayWith({ tls: tlsSection(pki), plainAddress: '127.0.0.1:0' })
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = connectTcp(portOf(gw.url), '127.0.0.1', () => socket.write('GET /headers HTTP/1.1\r\nHost: localhost\r\n\r\n'))
    let text = ''
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()))
    socket.on('close', () => resolve(text))
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/)
  t.match(answer, /x-waypost-reason: http-request-on-tls-port/)
  t.match(answer, /use https:\/\//)
  t.equal(failure(await metricsText(gw), 'http-request'), 1)
  const plain = gw.gateway.address('plain')
  t.match(plain, /^127\.0\.0\.1:\d+$/)
  const response = await request(`http://${plain}/headers`)
  t.equal(response.statusCode, 200)
  t.equal(((await response.body.json()) as Echo).headers['x-forwarded-proto'], 'http', 'the cleartext listener says http')
  t.equal((await tlsGet(`${gw.url}/headers`, pki)).status, 200, 'TLS still serves')
})

t.test('renegotiation is refused and the gateway keeps serving', async (t) => {
  const gw = await gatewayWith({ tls: tlsSection(pki) })
  const socket = await handshake(portOf(gw.url), pki, { maxVersion: 'TLSv1.2' })
  const result = await new Promise<Error | null>((resolve) => {
    socket.on('error', (error) => resolve(error))
    const started = socket.renegotiate({}, (error) => resolve(error ?? null))
    if (!started) resolve(new Error('not started'))
  })
  t.match(String(result), /no renegotiation/, "OpenSSL refuses it (SSL_OP_NO_RENEGOTIATION), not a renegotiation limit")
  socket.destroy()
  t.equal((await tlsGet(`${gw.url}/headers`, pki)).status, 200)
})

t.test('the handshake flood is bounded: past maxHandshakes a connection is closed at once; stalled ones time out', async (t) => {
  const gw = await gatewayWith({ tls: tlsSection(pki, { maxHandshakes: 5, handshakeTimeout: '1s' }) })
  const port = portOf(gw.url)
  // Connections that never send a ClientHello: each holds a handshake slot until the timeout.
  const stalled = Array.from({ length: 20 }, () => connectTcp(port, '127.0.0.1'))
  const closed = stalled.map((socket) => new Promise<number>((resolve) => {
    const opened = Date.now()
    socket.on('error', () => undefined)
    socket.on('close', () => resolve(Date.now() - opened))
  }))
  await new Promise((resolve) => setTimeout(resolve, 300))
  const tls = (gw.gateway as unknown as { tls: { handshakesInProgress: number } }).tls
  t.equal(tls.handshakesInProgress, 5, 'at most maxHandshakes in progress')
  const times = await Promise.all(closed)
  t.equal(times.filter((ms) => ms < 800).length, 15, 'the 15 beyond the bound closed at once')
  t.equal(times.filter((ms) => ms >= 800).length, 5, 'the 5 within it were cut at the handshake timeout')
  const metrics = await metricsText(gw)
  t.equal(failure(metrics, 'overloaded'), 15)
  t.equal(failure(metrics, 'timeout'), 5)
  t.equal((await tlsGet(`${gw.url}/headers`, pki)).status, 200, 'and it serves once the flood is gone')
})

t.test('a resumed session keeps its client identity; a change of client CA ends resumption', async (t) => {
  const { connect } = await import('node:tls')
  const { writeFileSync } = await import('node:fs')
  const { join } = await import('node:path')
  const caFile = join(pki.dir, 'resume-ca.crt')
  writeFileSync(caFile, pki.ca.cert)
  const gw = await gatewayWith({ tls: tlsSection(pki, { clientAuth: 'require', clientCa: caFile }) })
  const get = (session?: Buffer): Promise<{ reused: boolean; body: string; session: Buffer | undefined }> =>
    new Promise((resolve, reject) => {
      let ticket: Buffer | undefined
      const socket = connect({ port: portOf(gw.url), host: '127.0.0.1', ca: pki.ca.cert, servername: 'localhost', session, cert: pki.client.cert, key: pki.client.key }, () =>
        socket.write('GET /headers HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'),
      )
      socket.on('session', (value: Buffer) => (ticket = value))
      let body = ''
      socket.on('data', (chunk: Buffer) => (body += chunk.toString()))
      socket.on('end', () => resolve({ reused: socket.isSessionReused(), body, session: ticket }))
      socket.on('error', reject)
    })
  const first = await get()
  const resumed = await get(first.session)
  t.ok(resumed.reused, 'resumed from the ticket')
  t.match(resumed.body, /"x-forwarded-client-cert":"By=[^"]*Hash=/, 'with the identity of the certificate the session was made with')
  writeFileSync(caFile, pki.ca.cert + pki.otherCa.cert)
  // The bundle is watched: once the new one is applied, the old ticket no longer resumes.
  const deadline = Date.now() + 5000
  let reused = true
  while (reused && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    reused = (await get(first.session)).reused
  }
  t.notOk(reused, 'after the CA bundle changed, the old ticket starts a full handshake')
})
