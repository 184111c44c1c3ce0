// The buffer policy: its logic through the layer harness (what reaches `next`), and its point over
// real sockets: a slow upload holds no upstream socket and no concurrency slot until it is whole.
import t from 'tap'
import { connect } from 'node:net'
import { request } from 'undici'
import { runLayer, scriptedUpstream } from '../../../test/layer-harness.js'
import { catchAllConfig, sleep, startGateway } from '../../../test/helpers.js'
import { startStub } from '../../../../upstream-stub/src/stub.js'
import { buffer } from './buffer.js'

t.test('a body up to the limit reaches the next layer whole; a bigger one, or none, goes on as it came', async (t) => {
  const next = scriptedUpstream(200)
  const layer = runLayer(buffer, { request: '8B' }, { next })
  await layer.call({ method: 'POST', body: 'payload' })
  t.equal(next.calls[0]!.request.body?.toString(), 'payload', 'read whole')
  await layer.call({ method: 'POST', body: 'a payload over the limit' })
  t.equal(next.calls[1]!.request.body, undefined, 'streams: nothing kept')
  await layer.call({ method: 'GET' })
  t.equal(next.calls[2]!.request.body, undefined)
  const defaults = runLayer(buffer, {}, { next: scriptedUpstream(200) })
  t.equal((await defaults.call({ method: 'PUT', body: 'x'.repeat(1024 * 1024) })).status, 200, '1MiB fits the default')
})

t.test('over real sockets: a slow upload takes no upstream socket and no slot until it is whole', async (t) => {
  const stub = await startStub()
  t.teardown(() => stub.close())
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { buffer: { request: '64KiB' }, concurrency: { max: 1 } } }))
  t.teardown(() => gw.close())
  const { port } = new URL(gw.url)
  const uploader = connect({ host: '127.0.0.1', port: Number(port) })
  t.teardown(() => void uploader.destroy())
  const received: Buffer[] = []
  uploader.on('data', (chunk: Buffer) => received.push(chunk))
  await new Promise((resolve) => uploader.once('connect', resolve))
  uploader.write('POST /anything/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello')
  await sleep(300)
  t.equal(stub.stats.inFlight, 0, 'half a body: nothing sent upstream yet')
  const other = await request(`${gw.url}/anything/other`)
  await other.body.dump()
  t.equal(other.statusCode, 200, 'the route\'s one concurrency slot is free for others meanwhile')
  uploader.write('world')
  while (!Buffer.concat(received).toString().includes('"bodyLength":10')) await sleep(20)
  t.match(Buffer.concat(received).toString(), /"body":"helloworld"/, 'the whole body arrived upstream')

  // Over the limit: it streams, as without the policy.
  const big = connect({ host: '127.0.0.1', port: Number(port) })
  t.teardown(() => void big.destroy())
  await new Promise((resolve) => big.once('connect', resolve))
  big.write(`POST /anything/big HTTP/1.1\r\nhost: x\r\ncontent-length: ${128 * 1024}\r\n\r\npart`)
  await sleep(300)
  t.equal(stub.stats.inFlight, 1, 'a body over the limit streams upstream at once')
})

t.test('a request the rate limit refuses never has its body read: no 100 Continue', async (t) => {
  const stub = await startStub()
  t.teardown(() => stub.close())
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { rateLimit: { rate: 1, burst: 1 }, buffer: {} } }))
  t.teardown(() => gw.close())
  const first = await request(`${gw.url}/anything`, { method: 'POST', body: 'x' })
  await first.body.dump()
  const { port } = new URL(gw.url)
  const client = connect({ host: '127.0.0.1', port: Number(port) })
  t.teardown(() => void client.destroy())
  let text = ''
  client.on('data', (chunk: Buffer) => (text += chunk.toString()))
  client.write('POST /anything HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n')
  while (!text.includes('\r\n\r\n')) await sleep(20)
  t.match(text, /^HTTP\/1\.1 429 /, 'refused without asking for the body')
  t.notMatch(text, /100 Continue/)
})
