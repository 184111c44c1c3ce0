// Retries end to end: what is retried, what never is, bodies replayed intact, Retry-After, the
// budget that stops a retry storm, and every attempt visible in headers, access lines and metrics.
import t from 'tap'
import { createHash } from 'node:crypto'
import { connect, createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, startGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

const RETRY = { attempts: 3, backoff: { base: '5ms', max: '20ms' } }

interface SequenceAnswer {
  index: number
  status: number
  bodyLength: number
  bodySha256: string
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Requests the stub saw for one path since the last reset. */
function seen(path: string): number {
  return stub.stats.byPath.get(path) ?? 0
}

t.test('a GET is retried on 503 until it succeeds; every attempt is visible', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { retry: RETRY } }))
  t.teardown(() => gw.close())
  const response = await request(`${gw.url}/sequence/get-1?codes=503,502,200`)
  const body = (await response.body.json()) as SequenceAnswer
  t.equal(response.statusCode, 200)
  t.equal(body.index, 2, 'the third attempt answered')
  t.equal(response.headers['x-waypost-attempts'], '3')
  t.equal(seen('/sequence/get-1'), 3)
  const line = gw.accessLines().find((entry) => entry.path === '/sequence/get-1')
  t.match(line, { status: 200, attempts: 3, tries: '503,502,200' }, 'the access line lists each attempt')
  const metrics = await metricsText(gw)
  t.match(metrics, /waypost_upstream_attempts_total\{route="all",outcome="5xx"\} 2/)
  t.match(metrics, /waypost_upstream_attempts_total\{route="all",outcome="2xx"\} 1/)
  t.match(metrics, /waypost_retries_total\{route="all",cause="503"\} 1/)
  // Attempts are counted in plain numbers and added when scraped: a second scrape adds nothing.
  const again = await metricsText(gw)
  t.match(again, /waypost_upstream_attempts_total\{route="all",outcome="5xx"\} 2/)
  t.match(again, /waypost_upstream_attempts_total\{route="all",outcome="2xx"\} 1/)
})

t.test('a POST with an Idempotency-Key is retried, its body replayed intact', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { retry: RETRY } }))
  t.teardown(() => gw.close())
  const payload = Buffer.from('{"order":42,"items":["a","b"]}')
  const response = await request(`${gw.url}/sequence/post-2?codes=503,200`, {
    method: 'POST',
    body: payload,
    headers: { 'idempotency-key': 'k-42', 'content-type': 'application/json' },
  })
  const body = (await response.body.json()) as SequenceAnswer
  t.equal(response.statusCode, 200)
  t.equal(response.headers['x-waypost-attempts'], '2')
  t.equal(body.bodyLength, payload.length, 'the second attempt carried the whole body')
  t.equal(body.bodySha256, sha256(payload))
})

t.test('a chunked body is replayed; one over bodyLimit streams once, unharmed, without retry', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { retry: { attempts: 3, nonIdempotent: true, bodyLimit: '64KiB', backoff: { base: '5ms', max: '20ms' } } } }))
  t.teardown(() => gw.close())
  const small = Buffer.alloc(40_000, 'a')
  const chunked = await request(`${gw.url}/sequence/chunked-1?codes=503,200`, { method: 'POST', body: Readable.from([small.subarray(0, 20_000), small.subarray(20_000)]) })
  const replayed = (await chunked.body.json()) as SequenceAnswer
  t.equal(chunked.statusCode, 200)
  t.equal(replayed.bodySha256, sha256(small), 'the chunked body arrived whole on the retry')

  const big = Buffer.alloc(1024 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff
  const parts = [big.subarray(0, 30_000), big.subarray(30_000, 100_000), big.subarray(100_000)]
  const streamed = await request(`${gw.url}/sequence/chunked-2?codes=503,200`, { method: 'POST', body: Readable.from(parts) })
  const once = (await streamed.body.json()) as SequenceAnswer
  t.equal(streamed.statusCode, 503, 'not retried: the body was too big to keep')
  t.equal(once.bodyLength, big.length, 'the bytes read before the limit were put back in front of the rest')
  t.equal(once.bodySha256, sha256(big))
  t.equal(seen('/sequence/chunked-2'), 1)

  const declared = await request(`${gw.url}/sequence/chunked-3?codes=503,200`, { method: 'PUT', body: big })
  const declaredAnswer = (await declared.body.json()) as SequenceAnswer
  t.equal(declared.statusCode, 503, 'a content-length over the limit is not even buffered')
  t.equal(declaredAnswer.bodySha256, sha256(big))
})

t.test('connect failures are retried, then answered 502 with every attempt listed', async (t) => {
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const port = (closed.address() as AddressInfo).port
  await new Promise((resolve) => closed.close(resolve))
  const gw = await startGateway(catchAllConfig(`http://127.0.0.1:${port}`, { policies: { retry: RETRY } }))
  t.teardown(() => gw.close())
  const response = await request(`${gw.url}/x`)
  await response.body.dump()
  t.equal(response.statusCode, 502)
  t.equal(response.headers['x-waypost-reason'], 'connect-refused route=all upstream=app')
  const line = gw.accessLines().find((entry) => entry.path === '/x')
  t.match(line, { attempts: 3, tries: 'connect-refused,connect-refused,connect-refused', reason: 'connect-refused' })
})

t.test('a per-try timeout is retried inside the request deadline', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { timeout: { request: '3s', perTry: '150ms' }, retry: RETRY } }))
  t.teardown(() => gw.close())
  const started = performance.now()
  const response = await request(`${gw.url}/fault/slow-headers?ms=1000`)
  await response.body.dump()
  const elapsed = performance.now() - started
  t.equal(response.statusCode, 504)
  t.equal(response.headers['x-waypost-reason'], 'attempt-timeout route=all upstream=app')
  t.equal(response.headers['x-waypost-attempts'], '3')
  t.ok(elapsed >= 450 && elapsed < 1000, `three attempts of 150 ms took ${elapsed.toFixed(0)} ms`)
})

t.test('a route without retry makes one attempt and adds no header', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url))
  t.teardown(() => gw.close())
  const response = await request(`${gw.url}/sequence/none-1?codes=503,200`)
  await response.body.dump()
  t.equal(response.statusCode, 503)
  t.equal(response.headers['x-waypost-attempts'], undefined)
})

/** Sends a request with `Expect: 100-continue`, the body only after the 100, and returns everything received. */
async function expectContinue(url: string, head: string, body: string): Promise<string> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  let received = ''
  socket.on('data', (chunk: Buffer) => {
    const first = !received.includes('100 Continue')
    received += chunk.toString()
    if (first && received.includes('100 Continue')) socket.write(body)
  })
  socket.write(head)
  await new Promise((resolve) => socket.once('close', resolve))
  return received
}

t.test('Expect: 100-continue: one 100 Continue, whether the body is kept for replay or streamed once', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { retry: { attempts: 2, bodyLimit: '4B', backoff: { base: '1ms', max: '1ms' } } } }))
  t.teardown(() => gw.close())
  const kept = await expectContinue(gw.url, 'PUT /sequence/continue-1?codes=503,200 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n', 'abc')
  t.equal(kept.split('100 Continue').length - 1, 1, 'one 100 Continue')
  t.match(kept, /HTTP\/1\.1 200 OK[\s\S]*x-waypost-attempts: 2[\s\S]*"bodyLength":3/i, 'replayed after the 503')
  const streamed = await expectContinue(gw.url, 'PUT /sequence/continue-2?codes=503,200 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n', '5\r\nhello\r\n0\r\n\r\n')
  t.equal(streamed.split('100 Continue').length - 1, 1, 'one 100 Continue when the body turned out too big to keep')
  t.match(streamed, /HTTP\/1\.1 503[\s\S]*x-waypost-attempts: 1[\s\S]*"bodyLength":5/i)
})

t.test('with several endpoints a retry goes to another one', async (t) => {
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const deadPort = (closed.address() as AddressInfo).port
  await new Promise((resolve) => closed.close(resolve))
  const gw = await startGateway(
    catchAllConfig({ endpoints: [{ url: `http://127.0.0.1:${deadPort}` }, { url: stub.url }], balancer: 'least-request' }, {
      policies: { retry: { attempts: 3, backoff: { base: '1ms', max: '2ms' } } },
    }),
  )
  t.teardown(() => gw.close())
  const attempts: string[] = []
  for (let i = 0; i < 20; i++) {
    const response = await request(`${gw.url}/status/200?i=${i}`)
    await response.body.dump()
    t.equal(response.statusCode, 200)
    attempts.push(response.headers['x-waypost-attempts'] as string)
  }
  t.ok(attempts.every((count) => count === '1' || count === '2'), `never the dead endpoint twice: attempts ${attempts.join(',')}`)
  const retried = gw.accessLines().filter((line) => line.tries === 'connect-refused,200')
  t.ok(retried.length > 0, `some first attempts hit the dead endpoint and were retried on the live one (${retried.length})`)
})
