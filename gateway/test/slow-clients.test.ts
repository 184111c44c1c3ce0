// listen.clients end to end over raw sockets: slow uploaders and slow readers are cut off (408) and
// free their upstream socket, clients the gateway itself is waiting on are not, and the caps per
// address answer 429. `npm run loadtest:slow-clients` shows the effect on other clients under load.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, sleep, startGateway, type RunningGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

/** A raw client: whatever it has received so far, and whether the gateway has closed it. */
interface RawClient {
  readonly socket: Socket
  readonly received: () => string
  readonly closed: Promise<void>
}

async function rawClient(gw: RunningGateway, options: { read?: boolean; localAddress?: string } = {}): Promise<RawClient> {
  const { port } = new URL(gw.url)
  const socket = connect({ host: '127.0.0.1', port: Number(port), localAddress: options.localAddress })
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  const chunks: Buffer[] = []
  if (options.read !== false) socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  t.teardown(() => void socket.destroy())
  return { socket, received: () => Buffer.concat(chunks).toString('latin1'), closed }
}

function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  return Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`${what}: not within ${ms} ms`)))])
}

function accessLine(gw: RunningGateway, path: string): Record<string, unknown> | undefined {
  return gw.accessLines().find((line) => line.path === path)
}

t.test('an upload that stops is cut off after bodyIdleTimeout: 408 client-upload-too-slow, and the upstream request is aborted', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { listen: { clients: { bodyIdleTimeout: '1s', bodyMinRate: 0 } } }))
  t.teardown(() => gw.close())
  const client = await rawClient(gw)
  const started = performance.now()
  client.socket.write('POST /anything/stalled HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789')
  await sleep(300)
  t.equal(stub.stats.inFlight, 1, 'the body streams upstream: the upstream request is in flight')
  await within(4000, client.closed, 'the gateway closes the connection')
  const elapsed = performance.now() - started
  t.ok(elapsed >= 1000 && elapsed < 2500, `cut off ${elapsed.toFixed(0)} ms after the last byte (bodyIdleTimeout 1s)`)
  t.match(client.received(), /^HTTP\/1\.1 408 Request Timeout\r\n/)
  t.match(client.received(), /x-waypost-reason: client-upload-too-slow route=all upstream=app/)
  t.match(client.received(), /connection: close/)
  await sleep(50)
  t.equal(stub.stats.inFlight, 0, 'the upstream socket is free again')
  t.match(accessLine(gw, '/anything/stalled'), { status: 408, reason: 'client-upload-too-slow' })
})

t.test('an upload that trickles (never idle) is cut off by bodyMinRate', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { listen: { clients: { bodyIdleTimeout: '1s', bodyMinRate: '1KiB' } } }))
  t.teardown(() => gw.close())
  const client = await rawClient(gw)
  client.socket.write('POST /anything/trickle HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n')
  const trickle = setInterval(() => client.socket.write('x'), 100)
  t.teardown(() => clearInterval(trickle))
  const started = performance.now()
  await within(5000, client.closed, 'the gateway closes the connection')
  clearInterval(trickle)
  const elapsed = performance.now() - started
  // 1 s of grace plus 1 s per KiB moved: about 1.01 s at 10 bytes a second.
  t.ok(elapsed >= 1000 && elapsed < 2500, `cut off after ${elapsed.toFixed(0)} ms of 10 B/s`)
  t.match(client.received(), /^HTTP\/1\.1 408 /)
  t.match(accessLine(gw, '/anything/trickle'), { status: 408, reason: 'client-upload-too-slow' })
})

t.test('an upload the gateway is waiting on is not the client\'s fault: an upstream that does not read, a client waiting for 100 Continue', async (t) => {
  const gw = await startGateway(
    catchAllConfig(stub.url, {
      listen: { clients: { bodyIdleTimeout: '500ms', bodyMinRate: '1MiB' } },
      policies: { fault: { delay: { percent: 100, duration: '1500ms' } } },
    }),
  )
  t.teardown(() => gw.close())
  // /delay/2 does not read the body for 2 s: our side fills up, the client is not accountable.
  const big = Buffer.alloc(8 * 1024 * 1024, 7)
  const slowReader = await request(`${gw.url}/delay/2`, { method: 'POST', body: big })
  t.equal(slowReader.statusCode, 200)
  t.equal(((await slowReader.body.json()) as { bodyLength: number }).bodyLength, big.length, 'the whole body arrived')

  // Expect: 100-continue: the client sends nothing until the gateway asks (after the 1.5 s delay).
  const client = await rawClient(gw)
  client.socket.write('POST /anything/continue HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n')
  await within(4000, (async () => {
    while (!client.received().includes('100 Continue')) await sleep(20)
  })(), '100 Continue')
  client.socket.write('hello')
  await within(4000, (async () => {
    while (!/HTTP\/1\.1 200 OK[\s\S]*"bodyLength":5/.test(client.received())) await sleep(20)
  })(), 'the answer')
  t.pass('a client waiting 1.5 s for 100 Continue is not cut off (bodyIdleTimeout 500ms)')
})

t.test('a response the client does not read is cut off after bodyIdleTimeout, freeing the upstream; one read slowly from a slow upstream is not', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { listen: { clients: { bodyIdleTimeout: '1s', bodyMinRate: '1KiB' } } }))
  t.teardown(() => gw.close())
  const client = await rawClient(gw, { read: false })
  client.socket.write('GET /bytes/104857600 HTTP/1.1\r\nhost: x\r\n\r\n')
  await sleep(300)
  t.equal(stub.stats.inFlight, 1, 'the download holds the upstream request')
  const started = performance.now()
  // A client that reads nothing does not notice the close either: the gateway's side is what counts.
  await within(5000, (async () => {
    while (accessLine(gw, '/bytes/104857600') === undefined) await sleep(50)
  })(), 'the gateway cuts the download')
  t.ok(performance.now() - started < 3000, 'cut off within about a second of the client stopping')
  t.match(accessLine(gw, '/bytes/104857600'), { status: 408, reason: 'client-download-too-slow' })
  await sleep(50)
  t.equal(stub.stats.inFlight, 0, 'the upstream request was aborted')
  client.socket.resume()
  await within(5000, client.closed, 'the client, reading again, finds the connection closed')

  // The upstream is the slow one here (10 bytes over 2.5 s): the client reads all it is sent.
  const drip = await request(`${gw.url}/drip?numbytes=10&duration=2.5&delay=0`)
  t.equal(await drip.body.text(), '**********', 'a slow upstream is not the client\'s fault')
})

t.test('connectionsPerAddress: a connection over the cap gets 429 and is never proxied', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { listen: { clients: { connectionsPerAddress: 2 } } }))
  t.teardown(() => gw.close())
  const held = [await rawClient(gw), await rawClient(gw)]
  const before = stub.stats.requests
  const third = await rawClient(gw)
  third.socket.write('GET /anything/over HTTP/1.1\r\nhost: x\r\n\r\n')
  await within(3000, third.closed, 'the refused connection closes')
  t.match(third.received(), /^HTTP\/1\.1 429 Too Many Requests\r\n[\s\S]*x-waypost-reason: client-connection-limit/)
  t.equal(stub.stats.requests, before, 'its request never reached the upstream')
  t.match(await metricsText(gw), /waypost_local_responses_total\{route="-",reason="client-connection-limit"\} 1\n/, 'counted where requests no route took are')
  const other = await request(`${gw.url}/anything`)
  await other.body.dump()
  t.equal(other.statusCode, 429, 'the address is still at its cap')
  held[0]!.socket.destroy()
  await held[0]!.closed
  await sleep(50)
  const after = await request(`${gw.url}/anything`)
  await after.body.dump()
  t.equal(after.statusCode, 200, 'a closed connection frees a place')
  // Another loopback address has its own count.
  const elsewhere = await rawClient(gw, { localAddress: '127.0.0.2' })
  elsewhere.socket.write('GET /anything/elsewhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
  await within(3000, elsewhere.closed, 'the answer')
  t.match(elsewhere.received(), /^HTTP\/1\.1 200 OK/)
})

t.test('exchangesPerAddress: one client cannot hold more upstream requests than its share; forwarded clients count apart', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { listen: { clients: { exchangesPerAddress: 2 }, trustedProxies: ['127.0.0.2'] } }))
  t.teardown(() => gw.close())
  const leave = new AbortController()
  t.teardown(() => leave.abort())
  for (let i = 0; i < 2; i++) void request(`${gw.url}/fault/hang`, { signal: leave.signal }).catch(() => undefined)
  await sleep(200)
  const refused = await request(`${gw.url}/anything/third`)
  t.equal(refused.statusCode, 429)
  t.equal(refused.headers['x-waypost-reason'], 'client-exchange-limit route=all upstream=app')
  await refused.body.dump()
  t.equal(stub.stats.inFlight, 2)
  // Through a trusted proxy, the forwarded client is what counts.
  for (const client of ['10.0.0.1', '10.0.0.2']) {
    const proxied = await rawClient(gw, { localAddress: '127.0.0.2' })
    proxied.socket.write(`GET /anything/fwd HTTP/1.1\r\nhost: x\r\nx-forwarded-for: ${client}\r\nconnection: close\r\n\r\n`)
    await within(3000, proxied.closed, 'the answer')
    t.match(proxied.received(), /^HTTP\/1\.1 200 OK/, `${client} has its own count`)
  }
  leave.abort()
  await sleep(100)
  const freed = await request(`${gw.url}/anything/after`)
  await freed.body.dump()
  t.equal(freed.statusCode, 200, 'ended exchanges give their places back')
})
