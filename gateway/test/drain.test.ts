// Graceful drain of a real gateway process on SIGTERM.
import t from 'tap'
import { Client, request } from 'undici'
import { connect } from 'node:net'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, sleep, spawnGateway, tempConfig } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

function drainConfig(delay: string, timeout: string): string {
  return catchAllConfig(stub.url, { drain: { delay, timeout } })
}

t.test('SIGTERM: not ready at once, serves through the delay, refuses new connections after, completes in-flight, exits 0', async (t) => {
  const gw = await spawnGateway(tempConfig(drainConfig('600ms', '10s')))
  t.teardown(() => gw.stop())
  const inFlight = [1, 2, 3].map(() => request(`${gw.url}/delay/1.5`))
  await sleep(100)
  const signalledAt = performance.now()
  gw.child.kill('SIGTERM')
  await sleep(50)
  const ready = await request(`${gw.adminUrl}/ready`)
  t.equal(ready.statusCode, 503, '/ready fails at once')
  t.match(await ready.body.text(), /draining/)

  const during = new Client(gw.url)
  const served = await during.request({ path: '/status/200', method: 'GET' })
  await served.body.dump()
  t.equal(served.statusCode, 200, 'new requests are still served during the drain delay')
  t.equal(served.headers.connection, 'close', 'responses during the drain ask the client to reconnect elsewhere')
  await during.close()

  await sleep(Math.max(0, 600 + 150 - (performance.now() - signalledAt)))
  await t.rejects(request(`${gw.url}/status/200`), { code: 'ECONNREFUSED' }, 'new connections are refused after the delay')

  for (const pending of inFlight) {
    const response = await pending
    t.equal(response.statusCode, 200, 'in-flight exchanges complete')
    await response.body.dump()
  }
  const exit = await gw.exited
  t.same(exit, { code: 0, signal: null }, 'exit 0')
  const elapsed = performance.now() - signalledAt
  t.ok(elapsed < 3000, `exited ${elapsed.toFixed(0)} ms after SIGTERM, once in-flight work was done`)
  t.ok(gw.lines.some((line) => line.msg === 'stopped' && line.drained === true))
})

t.test('drain.timeout bounds the wait for exchanges that never finish', async (t) => {
  const gw = await spawnGateway(tempConfig(drainConfig('0s', '500ms')))
  t.teardown(() => gw.stop())
  const hung = request(`${gw.url}/fault/hang`).catch((error: Error) => error)
  await sleep(100)
  const signalledAt = performance.now()
  gw.child.kill('SIGTERM')
  const exit = await gw.exited
  t.same(exit, { code: 0, signal: null })
  const elapsed = performance.now() - signalledAt
  t.ok(elapsed >= 450 && elapsed < 2500, `exited after ${elapsed.toFixed(0)} ms (timeout 500 ms)`)
  t.type(await hung, Error, 'the hung exchange was cut at the timeout')
})

t.test('a second signal exits at once', async (t) => {
  const gw = await spawnGateway(tempConfig(drainConfig('10s', '10s')))
  t.teardown(() => gw.stop())
  gw.child.kill('SIGTERM')
  await sleep(200)
  const signalledAt = performance.now()
  gw.child.kill('SIGINT')
  const exit = await gw.exited
  t.equal(exit.code, 1)
  t.ok(performance.now() - signalledAt < 1000)
})

t.test('idle keep-alive connections stay usable through the drain delay', async (t) => {
  // A load balancer keeps using its pooled connections until it sees /ready fail; closing them
  // during the delay would make it send a request into a socket we just closed.
  const gw = await spawnGateway(tempConfig(drainConfig('1s', '5s')))
  t.teardown(() => gw.stop())
  const socket = connect(Number(new URL(gw.url).port), '127.0.0.1')
  let received = ''
  let closedAt = 0
  socket.on('data', (chunk) => (received += chunk.toString()))
  socket.on('close', () => (closedAt = performance.now()))
  // Waits for a whole response head rather than a fixed time: a busy machine may take longer.
  const answered = async (): Promise<void> => {
    for (let waited = 0; !received.includes('\r\n\r\n') && waited < 3000; waited += 10) await sleep(10)
  }
  socket.write('GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n')
  await answered()
  t.match(received, /^HTTP\/1\.1 200/)
  const signalledAt = performance.now()
  gw.child.kill('SIGTERM')
  await sleep(100)
  const other = await request(`${gw.url}/status/200`) // another exchange ends while draining
  await other.body.dump()
  await sleep(300)
  t.equal(closedAt, 0, 'the idle connection was not closed during the delay')
  received = ''
  socket.write('GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n')
  await answered()
  t.match(received, /^HTTP\/1\.1 201/, 'and it still serves, asking the client to reconnect elsewhere')
  t.match(received, /connection: close/i)
  await gw.exited
  t.ok(closedAt > signalledAt)
})
