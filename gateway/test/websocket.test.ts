// WebSocket (Upgrade) proxying through the gateway to the stub's echo server.
import t from 'tap'
import { WebSocket } from 'ws'
import { connect } from 'node:net'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, startGateway } from './helpers.js'

const stub = await startStub()
const gw = await startGateway(catchAllConfig(stub.url, { prefix: '/ws' }))
t.teardown(async () => {
  await gw.close()
  await stub.close()
})

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url)
    socket.once('open', () => resolve(socket))
    socket.once('error', reject)
  })
}

t.test('text and binary messages echo through the gateway', async (t) => {
  const socket = await open(`${gw.url.replace('http', 'ws')}/ws`)
  const replies: Array<{ data: Buffer; binary: boolean }> = []
  const done = new Promise<void>((resolve) => {
    socket.on('message', (data: Buffer, binary: boolean) => {
      replies.push({ data, binary })
      if (replies.length === 3) resolve()
    })
  })
  socket.send('hello')
  socket.send(Buffer.from([1, 2, 3]))
  socket.send('x'.repeat(200_000))
  await done
  t.equal(replies[0]!.data.toString(), 'hello')
  t.equal(replies[0]!.binary, false)
  t.same([...replies[1]!.data], [1, 2, 3])
  t.equal(replies[1]!.binary, true)
  t.equal(replies[2]!.data.length, 200_000)
  socket.close()
  await new Promise((resolve) => socket.once('close', resolve))
})

t.test('an upgrade no route matches gets 404 with a reason', async (t) => {
  await t.rejects(open(`${gw.url.replace('http', 'ws')}/elsewhere`), /404/)
})

t.test('an upgrade the upstream refuses gets 502', async (t) => {
  const other = await startGateway(catchAllConfig(stub.url))
  t.teardown(() => other.close())
  const raw = await new Promise<string>((resolve) => {
    const socket = connect(Number(new URL(other.url).port), '127.0.0.1')
    let received = ''
    socket.on('data', (chunk) => (received += chunk.toString()))
    socket.on('close', () => resolve(received))
    socket.write('GET /not-ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  })
  t.match(raw, /^HTTP\/1\.1 502 Bad Gateway/)
  t.match(raw, /x-waypost-reason: upgrade-refused route=all upstream=app/)
})

t.test('handshakes go through the route\'s policies: the rate limit and the concurrency limit apply, a slot is held while the socket is open', async (t) => {
  const limited = await startGateway(catchAllConfig(stub.url, { prefix: '/ws', policies: { rateLimit: { rate: 0.01, burst: 3, key: 'route' } } }))
  t.teardown(() => limited.close())
  const url = `${limited.url.replace('http', 'ws')}/ws`
  const results = await Promise.allSettled(Array.from({ length: 6 }, () => open(url)))
  const opened = results.filter((result) => result.status === 'fulfilled')
  t.equal(opened.length, 3, 'the burst of 3 handshakes is let through; parallel ones beyond it are refused (they all reached the upstream before)')
  t.match(results.find((result) => result.status === 'rejected'), { reason: /429/ })
  for (const result of opened) (result as PromiseFulfilledResult<WebSocket>).value.close()
  t.match(limited.accessLines().find((line) => line.status === 429), { upgrade: 'websocket', reason: 'rate-limited' })

  const capped = await startGateway(catchAllConfig(stub.url, { prefix: '/ws', policies: { concurrency: { max: 1 } } }))
  t.teardown(() => capped.close())
  const cappedUrl = `${capped.url.replace('http', 'ws')}/ws`
  const first = await open(cappedUrl)
  await t.rejects(open(cappedUrl), /503/, 'a second connection while the first is open finds no slot')
  first.close()
  await new Promise((resolve) => first.once('close', resolve))
  await new Promise((resolve) => setTimeout(resolve, 50))
  const again = await open(cappedUrl)
  t.pass('the slot came back when the first connection closed')
  again.close()
})
