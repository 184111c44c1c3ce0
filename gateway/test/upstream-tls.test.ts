// TLS to upstreams, end to end over real sockets: an https upstream signed by a private CA, upstream
// mTLS, every way verification fails (502 upstream-tls with the cause in the access log), rotation of
// the client certificate under load, a broken rotation refused, health checks over TLS, and the
// config checks that refuse unusable files.
import t from 'tap'
import { createServer, type Server } from 'node:https'
import { createServer as createHttpServer } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { basename, dirname, join } from 'node:path'
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { request } from 'undici'
import { WebSocket, WebSocketServer } from 'ws'
import { catchAllConfig, metricsText, startGateway, type LogLine, type RunningGateway } from './helpers.js'
import { certDir, createCa, replaceFile, selfSigned, type Issued } from './tls-certs.js'
import { parseConfig, formatError } from '../src/config/load.js'

interface Connection {
  /** The client certificate's serial (upper-case hex), or null when none was presented. */
  readonly serial: string | null
  /** The SNI the client sent (false when none). */
  readonly servername: string | false | null
  readonly at: number
}

interface TlsUpstream {
  readonly port: number
  readonly connections: Connection[]
  /** Requests answered, with the user agent and the client certificate of their connection. */
  readonly requests: Array<{ userAgent: string; serial: string | null }>
  close(): Promise<void>
}

interface UpstreamOptions {
  /** The server's certificate and key. */
  readonly server: Issued
  /** CA of the client certificates it requires (mTLS); none asked for without it. */
  readonly clientCa?: string
  /** Answer every Nth request with Connection: close, so new connections keep being made. */
  readonly closeEvery?: number
  readonly maxVersion?: 'TLSv1.2'
}

/** An https app: it records each connection's client certificate and SNI, and echoes them. */
async function startTlsUpstream(options: UpstreamOptions): Promise<TlsUpstream> {
  const connections: Connection[] = []
  const requests: Array<{ userAgent: string; serial: string | null }> = []
  let served = 0
  const server: Server = createServer({
    cert: options.server.cert,
    key: options.server.key,
    ...(options.maxVersion === undefined ? {} : { maxVersion: options.maxVersion }),
    ...(options.clientCa === undefined ? {} : { ca: options.clientCa, requestCert: true, rejectUnauthorized: true }),
  })
  server.on('secureConnection', (socket: TLSSocket) => {
    const peer = socket.getPeerCertificate()
    connections.push({ serial: peer.serialNumber === undefined ? null : peer.serialNumber.toUpperCase(), servername: socket.servername, at: Date.now() })
  })
  // A refused handshake (no or wrong client certificate) is what some tests want: no noise.
  server.on('tlsClientError', () => undefined)
  server.on('request', (req, res) => {
    const socket = req.socket as TLSSocket
    const peer = socket.getPeerCertificate()
    const serial = peer.serialNumber === undefined ? null : peer.serialNumber.toUpperCase()
    requests.push({ userAgent: req.headers['user-agent'] ?? '', serial })
    req.resume()
    served++
    if (options.closeEvery !== undefined && served % options.closeEvery === 0) res.setHeader('connection', 'close')
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ serial, servername: socket.servername }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    requests,
    close: () => {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; reason: string | undefined; body: string }> {
  const response = await request(url, { headers })
  const reason = response.headers['x-waypost-reason']
  return { status: response.statusCode, reason: typeof reason === 'string' ? reason : undefined, body: await response.body.text() }
}

/** Polls until `check` holds; generous bounds, as the machine is shared. */
async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** The last access line (after the one request a test made). */
async function lastAccess(gw: RunningGateway): Promise<LogLine> {
  await new Promise((resolve) => setTimeout(resolve, 20))
  return gw.accessLines().at(-1)!
}

const ca = createCa()
const otherCa = createCa('Another CA')
const serverCert = ca.issue({ commonName: 'app.internal', dns: ['app.internal', 'localhost'], ips: ['127.0.0.1'] })
const clientCert = ca.issue({ commonName: 'waypost-client' })
const dir = certDir()
const files = {
  ca: join(dir, 'ca.crt'),
  otherCa: join(dir, 'other-ca.crt'),
  clientCert: join(dir, 'client.crt'),
  clientKey: join(dir, 'client.key'),
}
writeFileSync(files.ca, ca.cert)
writeFileSync(files.otherCa, otherCa.cert)
writeFileSync(files.clientCert, clientCert.cert)
writeFileSync(files.clientKey, clientCert.key)

const app = await startTlsUpstream({ server: serverCert })
t.teardown(() => app.close())

t.test('an https upstream signed by a private CA: verified against tls.ca, whatever Host the client sends', async (t) => {
  const gw = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${app.port}`, tls: { ca: files.ca } }))
  t.teardown(() => gw.close())
  const connectionsBefore = app.connections.length
  const first = await get(`${gw.url}/`)
  t.equal(first.status, 200)
  t.same(JSON.parse(first.body), { serial: null, servername: false }, 'an IP origin: no SNI, and the certificate names the IP')
  // undici takes the TLS server name from the Host header by default: the client's here, which the
  // upstream's certificate does not name, and a connection is closed whenever the next request's
  // name differs. The gateway pins the name per endpoint: one connection serves them all.
  for (const host of ['www.example.com', 'shop.example.net', 'www.example.com']) t.equal((await get(`${gw.url}/`, { host })).status, 200, `Host: ${host}`)
  t.equal(app.connections.length - connectionsBefore, 1, 'one keep-alive connection, whatever the Host')

  const named = await startGateway(catchAllConfig({ url: `https://localhost:${app.port}`, tls: { ca: files.ca } }))
  t.teardown(() => named.close())
  const byName = await get(`${named.url}/`, { host: 'www.example.com' })
  t.equal(byName.status, 200)
  t.equal(JSON.parse(byName.body).servername, 'localhost', 'the URL\'s host name goes in SNI, not the client\'s Host')

  const override = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${app.port}`, tls: { ca: files.ca, serverName: 'app.internal' } }))
  t.teardown(() => override.close())
  const bySetting = await get(`${override.url}/`)
  t.equal(bySetting.status, 200)
  t.equal(JSON.parse(bySetting.body).servername, 'app.internal', 'tls.serverName goes in SNI and is verified')
})

t.test('an upstream that cannot be verified fails with 502 upstream-tls, the cause in the access log', async (t) => {
  const expired = await startTlsUpstream({ server: ca.issue({ commonName: 'old', ips: ['127.0.0.1'], notBefore: new Date(Date.now() - 48 * 3_600_000), notAfter: new Date(Date.now() - 3_600_000) }) })
  const lone = await startTlsUpstream({ server: selfSigned({ commonName: 'lone', ips: ['127.0.0.1'] }) })
  const old = await startTlsUpstream({ server: serverCert, maxVersion: 'TLSv1.2' })
  const plain = createHttpServer((_req, res) => res.end('plain'))
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    await expired.close()
    await lone.close()
    await old.close()
    plain.closeAllConnections()
    plain.close()
  })
  const plainPort = (plain.address() as AddressInfo).port
  const cases: Array<{ name: string; upstream: Record<string, unknown>; code: RegExp }> = [
    { name: 'the system CAs (no tls.ca) do not know the private CA', upstream: { url: `https://127.0.0.1:${app.port}` }, code: /^UNABLE_TO_VERIFY_LEAF_SIGNATURE: / },
    { name: 'a CA that did not sign it', upstream: { url: `https://127.0.0.1:${app.port}`, tls: { ca: files.otherCa } }, code: /^UNABLE_TO_VERIFY_LEAF_SIGNATURE: / },
    { name: 'a server name the certificate does not have', upstream: { url: `https://127.0.0.1:${app.port}`, tls: { ca: files.ca, serverName: 'other.internal' } }, code: /^ERR_TLS_CERT_ALTNAME_INVALID: / },
    { name: 'an expired certificate', upstream: { url: `https://127.0.0.1:${expired.port}`, tls: { ca: files.ca } }, code: /^CERT_HAS_EXPIRED: / },
    { name: 'a self-signed certificate', upstream: { url: `https://127.0.0.1:${lone.port}`, tls: { ca: files.ca } }, code: /^DEPTH_ZERO_SELF_SIGNED_CERT: / },
    { name: 'an upstream without TLS 1.3 when minVersion asks for it', upstream: { url: `https://127.0.0.1:${old.port}`, tls: { ca: files.ca, minVersion: 'TLSv1.3' } }, code: /^ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: / },
    { name: 'plain HTTP on an https:// endpoint (never a silent plaintext fallback)', upstream: { url: `https://127.0.0.1:${plainPort}`, tls: { ca: files.ca } }, code: /^ERR_SSL_WRONG_VERSION_NUMBER: / },
  ]
  for (const { name, upstream, code } of cases) {
    const gw = await startGateway(catchAllConfig(upstream))
    const answer = await get(`${gw.url}/`)
    t.equal(answer.status, 502, name)
    t.match(answer.reason, /^upstream-tls route=all upstream=app$/, `${name}: x-waypost-reason`)
    const line = await lastAccess(gw)
    t.equal(line.reason, 'upstream-tls', `${name}: access log reason`)
    t.match(line.error, code, `${name}: the access log's error names the cause (${String(line.error)})`)
    await gw.close()
  }
})

t.test('verify: false accepts any certificate and is logged as a warning at load', async (t) => {
  const lone = await startTlsUpstream({ server: selfSigned({ commonName: 'lone' }) })
  t.teardown(() => lone.close())
  const gw = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${lone.port}`, tls: { verify: false } }))
  t.teardown(() => gw.close())
  t.equal((await get(`${gw.url}/`)).status, 200)
  const warning = gw.logs.find((line) => line.msg.startsWith('upstream TLS verification is off'))
  t.ok(warning, 'a warning names the upstream')
  t.equal(warning?.level, 40)
  t.equal(warning?.upstream, 'app')
})

t.test('upstream mTLS: the client certificate is presented; without it the upstream refuses and the answer is 502 upstream-tls', async (t) => {
  const strict = await startTlsUpstream({ server: serverCert, clientCa: ca.cert })
  t.teardown(() => strict.close())
  const gw = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${strict.port}`, tls: { ca: files.ca, clientCert: files.clientCert, clientKey: files.clientKey } }))
  t.teardown(() => gw.close())
  const answer = await get(`${gw.url}/`)
  t.equal(answer.status, 200)
  t.equal(JSON.parse(answer.body).serial, clientCert.serial, 'the upstream saw the configured client certificate')
  const metrics = await metricsText(gw)
  const notAfter = Date.parse(new X509Certificate(clientCert.cert).validTo) / 1000
  t.match(metrics, `waypost_tls_certificate_expiry_timestamp_seconds{listener="upstream:app",name="${files.clientCert}"} ${notAfter}`)

  const without = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${strict.port}`, tls: { ca: files.ca } }))
  t.teardown(() => without.close())
  const refused = await get(`${without.url}/`)
  t.equal(refused.status, 502)
  t.match(refused.reason, /^upstream-tls /)
  const line = await lastAccess(without)
  t.match(line.error, /^ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: /, `the cause: ${String(line.error)}`)

  const foreignCert = otherCa.issue({ commonName: 'stranger' })
  const foreignDir = certDir()
  writeFileSync(join(foreignDir, 'c.crt'), foreignCert.cert)
  writeFileSync(join(foreignDir, 'c.key'), foreignCert.key)
  const foreign = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${strict.port}`, tls: { ca: files.ca, clientCert: join(foreignDir, 'c.crt'), clientKey: join(foreignDir, 'c.key') } }))
  t.teardown(() => foreign.close())
  const unknown = await get(`${foreign.url}/`)
  t.equal(unknown.status, 502, 'a certificate from another CA is refused')
  // Node's https server checks a client certificate after the handshake and hangs up without an
  // alert, so all the gateway can see is the connection closing (an upstream that sends the alert,
  // like Envoy, gives upstream-tls and the alert's name).
  t.match(unknown.reason, /^upstream-reset /)
})

t.test('WebSocket upgrades to an https upstream: verified, with the client certificate; an unverifiable one is 502 upstream-tls', async (t) => {
  const server = createServer({ cert: serverCert.cert, key: serverCert.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (socket, req) => {
    const peer = (req.socket as TLSSocket).getPeerCertificate()
    socket.on('message', (data: Buffer) => socket.send(`${peer.serialNumber.toUpperCase()} ${data.toString()}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    wss.close()
    server.closeAllConnections()
    server.close()
  })
  const port = (server.address() as AddressInfo).port
  const gw = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${port}`, tls: { ca: files.ca, clientCert: files.clientCert, clientKey: files.clientKey } }))
  t.teardown(() => gw.close())
  const socket = new WebSocket(`${gw.url.replace('http', 'ws')}/`)
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
  const reply = new Promise<string>((resolve) => socket.once('message', (data: Buffer) => resolve(data.toString())))
  socket.send('hello')
  t.equal(await reply, `${clientCert.serial} hello`, 'the upstream saw the client certificate on the upgraded connection')
  socket.close()

  const unverified = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${port}`, tls: { ca: files.otherCa } }))
  t.teardown(() => unverified.close())
  const refused = new WebSocket(`${unverified.url.replace('http', 'ws')}/`)
  const status = await new Promise<number>((resolve) => refused.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0)).once('error', () => resolve(-1)))
  t.equal(status, 502)
  const line = await lastAccess(unverified)
  t.equal(line.reason, 'upstream-tls')
  // This upstream sends its CA after its certificate (a Node server with `ca` set does): a root the gateway does not trust.
  t.match(line.error, /^SELF_SIGNED_CERT_IN_CHAIN: /)
})

t.test('DNS endpoints are verified against dns.name, and sent it in SNI', async (t) => {
  const gw = await startGateway(catchAllConfig({ dns: { name: 'localhost', port: app.port, scheme: 'https', family: 4 }, tls: { ca: files.ca } }))
  t.teardown(() => gw.close())
  const answer = await get(`${gw.url}/`)
  t.equal(answer.status, 200)
  t.equal(JSON.parse(answer.body).servername, 'localhost', 'the endpoint is 127.0.0.1; the name checked is localhost')
})

/** Requests sent back to back by `workers` loops until `stop()`: every status and error counted. */
function steadyLoad(url: string, workers: number): { statuses: Map<number, number>; errors: string[]; sent(): number; stop(): Promise<void> } {
  const statuses = new Map<number, number>()
  const errors: string[] = []
  let running = true
  let sent = 0
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      try {
        const answer = await get(url)
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
        if (answer.status !== 200) errors.push(`${answer.status} ${answer.reason ?? ''}`)
      } catch (error) {
        errors.push((error as Error).message)
      }
      sent++
    }
  })
  return {
    statuses,
    errors,
    sent: () => sent,
    stop: async () => {
      running = false
      await Promise.all(loops)
    },
  }
}

interface TlsSnapshot {
  clientCert: { serial: string; notAfter: string } | null
  rotations: number
  refused: { file: string; reason: string } | null
}

async function tlsSnapshot(gw: RunningGateway): Promise<TlsSnapshot> {
  const body = (await (await request(`${gw.adminUrl}/upstreams`)).body.json()) as Record<string, { tls: TlsSnapshot }>
  return body.app!.tls
}

t.test('the client certificate rotates under load: no request fails, new connections present the new one; a broken one is refused', async (t) => {
  const rotation = certDir()
  const certFile = join(rotation, 'tls.crt')
  const keyFile = join(rotation, 'tls.key')
  const first = ca.issue({ commonName: 'client-1' })
  writeFileSync(certFile, first.cert)
  writeFileSync(keyFile, first.key)
  // Every 5th answer closes its connection, so the gateway keeps opening new ones.
  const strict = await startTlsUpstream({ server: serverCert, clientCa: ca.cert, closeEvery: 5 })
  t.teardown(() => strict.close())
  const gw = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${strict.port}`, tls: { ca: files.ca, clientCert: certFile, clientKey: keyFile } }, { accessLog: false }))
  t.teardown(() => gw.close())
  const load = steadyLoad(`${gw.url}/`, 4)
  t.teardown(() => load.stop())
  await waitFor('load is flowing', () => load.sent() >= 50)

  const second = ca.issue({ commonName: 'client-2', notAfter: new Date(Date.now() + 48 * 3_600_000) })
  // As a Secret volume or cert-manager does it: both files replaced, close together.
  replaceFile(certFile, second.cert)
  replaceFile(keyFile, second.key)
  await waitFor('the rotation is logged', () => gw.logs.some((line) => line.msg === 'upstream TLS files rotated: new connections use them'))
  const rotatedAt = Date.now()
  await waitFor('new connections present the new certificate', () => strict.connections.filter((connection) => connection.serial === second.serial && connection.at > rotatedAt + 200).length >= 5)
  const rotatedLine = gw.logs.find((line) => line.msg === 'upstream TLS files rotated: new connections use them')!
  t.equal(rotatedLine.serial, second.serial, 'the log names the new serial')
  t.match(await tlsSnapshot(gw), { clientCert: { serial: second.serial }, rotations: 1, refused: null })
  const notAfter = Date.parse(new X509Certificate(second.cert).validTo) / 1000
  t.match(await metricsText(gw), `waypost_tls_certificate_expiry_timestamp_seconds{listener="upstream:app",name="${certFile}"} ${notAfter}`, 'the expiry metric follows the rotation')

  // Broken rotations: each refused with the file and the reason; the pair in force stays.
  const stranger = ca.issue({ commonName: 'stranger' })
  const expired = ca.issue({ commonName: 'expired', notBefore: new Date(Date.now() - 48 * 3_600_000), notAfter: new Date(Date.now() - 3_600_000) })
  const broken: Array<{ what: string; write: () => void; file: string; reason: RegExp }> = [
    { what: 'a key that does not match', write: () => replaceFile(keyFile, stranger.key), file: keyFile, reason: /^the key does not match the certificate in / },
    { what: 'an expired certificate', write: () => (replaceFile(certFile, expired.cert), replaceFile(keyFile, expired.key)), file: certFile, reason: /^the certificate expired on / },
    { what: 'a certificate file that is not PEM', write: () => replaceFile(certFile, 'not a certificate\n'), file: certFile, reason: /^no PEM certificate in it/ },
    { what: 'a deleted key', write: () => rmSync(keyFile), file: keyFile, reason: /^cannot read it \(ENOENT\)/ },
  ]
  for (const { what, write, file, reason } of broken) {
    const refusalsBefore = gw.logs.filter((line) => line.msg.startsWith('upstream TLS files refused')).length
    write()
    await waitFor(`${what} is refused`, () => gw.logs.filter((line) => line.msg.startsWith('upstream TLS files refused')).length > refusalsBefore)
    const refusal = gw.logs.filter((line) => line.msg.startsWith('upstream TLS files refused')).at(-1)!
    t.equal(refusal.file, file, `${what}: the log names the file`)
    t.match(refusal.reason, reason, `${what}: and the reason (${String(refusal.reason)})`)
    t.equal(refusal.level, 50)
    t.match(await tlsSnapshot(gw), { clientCert: { serial: second.serial }, rotations: 1, refused: { file } }, `${what}: GET /upstreams shows it`)
    const refusedAt = Date.now()
    await waitFor(`${what}: new connections are still made`, () => strict.connections.filter((connection) => connection.at > refusedAt + 100).length >= 3)
    t.same(new Set(strict.connections.filter((connection) => connection.at > refusedAt + 100).map((connection) => connection.serial)), new Set([second.serial]), `${what}: new connections keep the certificate in force`)
  }
  await load.stop()
  t.same(load.errors, [], 'no request failed')
  t.same([...load.statuses.keys()], [200])
  t.ok(load.sent() > 100, `requests sent: ${load.sent()}`)
  t.ok(strict.connections.filter((connection) => connection.serial === first.serial).length > 0, 'the first certificate was used before')
})

t.test('a Kubernetes Secret volume: the ..data swap rotates the client certificate', async (t) => {
  // The layout the kubelet writes: files are links through `..data` to a timestamped folder, and an
  // update writes a new folder and renames a new `..data` link over the old one.
  const volume = certDir()
  const publish = (stamp: string, issued: Issued): void => {
    mkdirSync(join(volume, stamp))
    writeFileSync(join(volume, stamp, 'tls.crt'), issued.cert)
    writeFileSync(join(volume, stamp, 'tls.key'), issued.key)
    symlinkSync(stamp, join(volume, '..data_tmp'))
    renameSync(join(volume, '..data_tmp'), join(volume, '..data'))
  }
  const first = ca.issue({ commonName: 'secret-1' })
  publish('..2026_01_01_00_00_00.1', first)
  symlinkSync('..data/tls.crt', join(volume, 'tls.crt'))
  symlinkSync('..data/tls.key', join(volume, 'tls.key'))
  // Every answer closes its connection: each request shows the certificate in force.
  const strict = await startTlsUpstream({ server: serverCert, clientCa: ca.cert, closeEvery: 1 })
  t.teardown(() => strict.close())
  const gw = await startGateway(catchAllConfig({ url: `https://127.0.0.1:${strict.port}`, tls: { ca: files.ca, clientCert: join(volume, 'tls.crt'), clientKey: join(volume, 'tls.key') } }))
  t.teardown(() => gw.close())
  t.equal(JSON.parse((await get(`${gw.url}/`)).body).serial, first.serial)
  const second = ca.issue({ commonName: 'secret-2' })
  publish('..2026_01_02_00_00_00.2', second)
  await waitFor('the swap is seen', () => gw.logs.some((line) => line.msg === 'upstream TLS files rotated: new connections use them'))
  t.equal(JSON.parse((await get(`${gw.url}/`)).body).serial, second.serial, 'the next connection presents the new certificate')
})

t.test('health checks use the upstream TLS: the CA, the server name and the client certificate', async (t) => {
  const strict = await startTlsUpstream({ server: serverCert, clientCa: ca.cert })
  const foreign = await startTlsUpstream({ server: otherCa.issue({ commonName: 'foreign', ips: ['127.0.0.1'] }) })
  t.teardown(async () => {
    await strict.close()
    await foreign.close()
  })
  const good = `https://127.0.0.1:${strict.port}`
  const bad = `https://127.0.0.1:${foreign.port}`
  const gw = await startGateway(
    catchAllConfig({
      endpoints: [{ url: good }, { url: bad }],
      healthCheck: { path: '/health', interval: '100ms', timeout: '1s', unhealthyThreshold: 1, healthyThreshold: 1 },
      tls: { ca: files.ca, clientCert: files.clientCert, clientKey: files.clientKey },
    }),
  )
  t.teardown(() => gw.close())
  const unhealthy = (): LogLine | undefined => gw.logs.find((line) => line.msg === 'upstream endpoint unhealthy' && line.endpoint === bad)
  await waitFor('the unverifiable endpoint is unhealthy', () => unhealthy() !== undefined)
  t.match(unhealthy()!.check, /^upstream-tls UNABLE_TO_VERIFY_LEAF_SIGNATURE$/, 'the check names the TLS failure')
  await waitFor('the good endpoint was checked twice', () => strict.requests.filter((seen) => seen.userAgent === 'waypost-health-check').length >= 2)
  const checks = strict.requests.filter((seen) => seen.userAgent === 'waypost-health-check')
  t.same(new Set(checks.map((check) => check.serial)), new Set([clientCert.serial]), 'each check presented the client certificate')
  const body = (await (await request(`${gw.adminUrl}/upstreams`)).body.json()) as Record<string, { endpoints: Array<{ address: string; healthy: boolean }> }>
  t.same(body.app!.endpoints.map((endpoint) => [endpoint.address, endpoint.healthy]), [[good, true], [bad, false]])
  for (let i = 0; i < 5; i++) t.equal((await get(`${gw.url}/`)).status, 200, 'traffic goes to the verified endpoint only')
})

t.test('validation refuses TLS settings that cannot work, and leaves the files to the running gateway', async (t) => {
  const errorsOf = (upstream: Record<string, unknown>): string[] => {
    const result = parseConfig(catchAllConfig(upstream), 'w.yaml')
    return result.ok ? [] : result.errors.map((error) => formatError(error).replace(/^w\.yaml:\d+:\d+: /, ''))
  }
  const https = `https://127.0.0.1:${app.port}`
  t.same(errorsOf({ url: https, tls: { ca: files.ca, clientCert: files.clientCert, clientKey: files.clientKey } }), [])
  t.same(errorsOf({ url: https, tls: { ca: '/nowhere/ca.crt' } }), [], '`waypost validate` may run where the certificates are not (CI, a clean clone)')
  t.same(errorsOf({ url: 'http://127.0.0.1:3000', tls: { ca: files.ca } }), ['upstreams.app.tls: tls applies to https:// endpoints only, and this upstream has http://127.0.0.1:3000: use https:// (or drop tls)'])
  t.same(errorsOf({ endpoints: [{ url: https }, { url: 'http://127.0.0.1:3001' }], tls: {} }), ['upstreams.app.tls: tls applies to https:// endpoints only, and this upstream has http://127.0.0.1:3001: use https:// (or drop tls)'])
  t.same(errorsOf({ dns: { name: 'localhost', port: 1 }, tls: {} }), ['upstreams.app.tls: tls applies to https:// endpoints only, and this upstream has dns.scheme http: use https:// (or drop tls)'])
  t.same(errorsOf({ url: https, tls: { clientCert: files.clientCert } }), ['upstreams.app.tls.clientCert: clientCert and clientKey go together: set both or neither'])
  t.same(errorsOf({ url: https, tls: { clientKey: files.clientKey } }), ['upstreams.app.tls.clientKey: clientCert and clientKey go together: set both or neither'])
  t.same(errorsOf({ url: https, tls: { minVersion: 'TLSv1.1' } }), ['upstreams.app.tls.minVersion: expected TLSv1.2 or TLSv1.3'])
  t.same(errorsOf({ url: https, tls: { serverName: 'a/b' } }), ['upstreams.app.tls.serverName: expected a host name'])
  t.same(errorsOf({ url: https, tls: { verify: 'no' } }), ['upstreams.app.tls.verify: Expected boolean'])
})

t.test('the gateway does not start with TLS files it cannot use, and a reload to them is refused; relative paths are read from the policy file\'s folder', async (t) => {
  const expired = ca.issue({ commonName: 'expired', notBefore: new Date(Date.now() - 48 * 3_600_000), notAfter: new Date(Date.now() - 3_600_000) })
  const stranger = ca.issue({ commonName: 'stranger' })
  const bad = certDir()
  const write = (name: string, text: string): string => {
    writeFileSync(join(bad, name), text)
    return join(bad, name)
  }
  const expiredCert = write('expired.crt', expired.cert)
  const expiredKey = write('expired.key', expired.key)
  const strangerKey = write('stranger.key', stranger.key)
  const empty = write('empty.crt', '')
  const https = `https://127.0.0.1:${app.port}`
  const cases: Array<{ tls: Record<string, unknown>; message: string | RegExp }> = [
    { tls: { ca: join(bad, 'missing.crt') }, message: `upstreams.app.tls.ca: ${join(bad, 'missing.crt')}: cannot read it (ENOENT)` },
    { tls: { ca: empty }, message: `upstreams.app.tls.ca: ${empty}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)` },
    { tls: { clientCert: files.clientCert, clientKey: strangerKey }, message: `upstreams.app.tls.clientKey: ${strangerKey}: the key does not match the certificate in ${files.clientCert}` },
    { tls: { clientCert: expiredCert, clientKey: expiredKey }, message: new RegExp(`upstreams\\.app\\.tls\\.clientCert: ${expiredCert}: the certificate expired on `) },
    { tls: { clientCert: files.clientKey, clientKey: files.clientKey }, message: `upstreams.app.tls.clientCert: ${files.clientKey}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)` },
  ]
  for (const { tls, message } of cases) {
    const started = startGateway(catchAllConfig({ url: https, tls }))
    await t.rejects(started, { message: typeof message === 'string' ? new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : message }, `refused: ${String(message)}`)
  }

  // Relative to the policy file's folder, wherever the gateway runs from.
  const relative = `../${basename(dirname(files.ca))}`
  const gw = await startGateway(catchAllConfig({ url: https, tls: { ca: `${relative}/ca.crt` } }))
  t.teardown(() => gw.close())
  t.equal((await get(`${gw.url}/`)).status, 200, `ca: ${relative}/ca.crt`)

  // A reload to a file that cannot be used is refused; the upstream in force keeps serving.
  writeFileSync(gw.configFile, catchAllConfig({ url: https, tls: { ca: `${relative}/ca.crt`, clientCert: expiredCert, clientKey: expiredKey } }))
  const reload = await request(`${gw.adminUrl}/reload`, { method: 'POST' })
  const body = await reload.body.text()
  t.not(reload.statusCode, 200, 'the reload is refused')
  t.match(body, /upstreams\.app\.tls\.clientCert: .*expired\.crt: the certificate expired on /)
  t.equal((await get(`${gw.url}/`)).status, 200, 'the plan in force serves on')
})
