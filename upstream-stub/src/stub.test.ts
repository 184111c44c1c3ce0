// The upstream stub over real loopback sockets: every endpoint, every fault, WebSocket echo and the CLI.
// Each test is time-bounded; everything a test starts is closed in its teardown.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import http from 'node:http'
import net, { type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { Agent, Client, request, type Dispatcher } from 'undici'
import WebSocket from 'ws'
import { startStub, type Stub } from './stub.js'

const TEST_TIMEOUT = { timeout: 15_000 }
/** The CLI tests start a child that compiles TypeScript on the fly: slow on a busy machine. */
const CLI_TIMEOUT = { timeout: 60_000 }
const agent = new Agent({ connections: 32, headersTimeout: 10_000, bodyTimeout: 10_000 })
const stub = await startStub()
t.teardown(async () => {
  await stub.close()
  await agent.destroy()
})

type Teardown = { teardown(fn: () => unknown): void }
type RequestOptions = Omit<Dispatcher.RequestOptions, 'origin' | 'path' | 'method'> & { method?: Dispatcher.HttpMethod; dispatcher?: Dispatcher }

/** A stub of the test's own, for assertions on stats or on closing. */
async function ownStub(t: Teardown, options: Parameters<typeof startStub>[0] = {}): Promise<Stub> {
  const own = await startStub(options)
  t.teardown(() => own.close())
  return own
}

function call(path: string, options: RequestOptions = {}, base: Stub = stub): Promise<Dispatcher.ResponseData> {
  return request(base.url + path, { dispatcher: agent, ...options })
}

async function text(path: string, options: RequestOptions = {}, base: Stub = stub): Promise<{ status: number; headers: Dispatcher.ResponseData['headers']; body: string }> {
  const res = await call(path, options, base)
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() }
}

async function json<T = Record<string, unknown>>(path: string, options: RequestOptions = {}, base: Stub = stub): Promise<{ status: number; headers: Dispatcher.ResponseData['headers']; body: T }> {
  const res = await text(path, options, base)
  return { ...res, body: JSON.parse(res.body) as T }
}

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex')
}

/** True when `data` is the stub's 0..255 pattern starting at `offset`. */
function isPattern(data: Buffer, offset = 0): boolean {
  return data.every((byte, i) => byte === ((offset + i) & 0xff))
}

/** Reads a body until it ends or fails; returns what arrived and the failure, if any. */
async function drain(body: Readable): Promise<{ bytes: Buffer; error?: unknown }> {
  const chunks: Buffer[] = []
  try {
    for await (const chunk of body) chunks.push(chunk as Buffer)
    return { bytes: Buffer.concat(chunks) }
  } catch (error) {
    return { bytes: Buffer.concat(chunks), error }
  }
}

/** Sends raw bytes on a fresh connection and collects everything until the server closes it. */
async function raw(base: Stub, payload: string): Promise<string> {
  const socket = net.connect(base.port, base.host)
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.end(payload)
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  await once(socket, 'close')
  return Buffer.concat(chunks).toString('latin1')
}

function elapsedSince(start: number): number {
  return performance.now() - start
}

t.test('listens on an ephemeral loopback port by default', TEST_TIMEOUT, async (t) => {
  t.equal(stub.host, '127.0.0.1')
  t.ok(stub.port > 0)
  t.equal(stub.url, `http://127.0.0.1:${stub.port}`)
  t.ok(stub.server.listening)
})

t.test('x-stub-conn identifies the connection and x-request-id is echoed', TEST_TIMEOUT, async (t) => {
  const client = new Client(stub.url)
  t.teardown(() => client.destroy())
  const first = await client.request({ method: 'GET', path: '/status/200', headers: { 'x-request-id': 'req-42' } })
  await first.body.dump()
  const second = await client.request({ method: 'GET', path: '/status/200' })
  await second.body.dump()
  t.equal(first.headers['x-request-id'], 'req-42')
  t.equal(second.headers['x-request-id'], undefined, 'absent when the request has none')
  t.match(first.headers['x-stub-conn'], /^\d+$/)
  t.equal(second.headers['x-stub-conn'], first.headers['x-stub-conn'], 'keep-alive reuses the connection')
  const fresh = new Client(stub.url)
  t.teardown(() => fresh.destroy())
  const other = await text('/status/200', { dispatcher: fresh })
  t.not(other.headers['x-stub-conn'], first.headers['x-stub-conn'], 'a new connection gets a new number')
})

t.test('keepAliveTimeoutMs closes idle connections', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t, { keepAliveTimeoutMs: 100 })
  const client = new Client(own.url)
  t.teardown(() => client.destroy())
  const first = await client.request({ method: 'GET', path: '/status/204' })
  await first.body.dump()
  await new Promise((resolve) => setTimeout(resolve, 400))
  const second = await client.request({ method: 'GET', path: '/status/204' })
  await second.body.dump()
  t.not(second.headers['x-stub-conn'], first.headers['x-stub-conn'])
  t.equal(own.stats.connections, 2)
})

t.test('/status/:code answers with that code and no body', TEST_TIMEOUT, async (t) => {
  for (const code of [200, 201, 204, 404, 418, 500, 503, 599]) {
    const res = await text(`/status/${code}`, { method: code === 201 ? 'POST' : 'GET' })
    t.equal(res.status, code)
    t.equal(res.body, '')
    t.equal(res.headers.location, undefined)
  }
  for (const code of [301, 302, 307, 308]) {
    const res = await text(`/status/${code}`)
    t.equal(res.status, code)
    t.equal(res.headers.location, '/redirected')
  }
})

t.test('/status/:code rejects 1xx, out-of-range and non-numeric codes', TEST_TIMEOUT, async (t) => {
  for (const code of ['100', '199', '600', '99', 'abc', '2e2', '200.5', '-200']) {
    const res = await json<{ error: string }>(`/status/${code}`)
    t.equal(res.status, 400, code)
    t.match(res.body.error, /"code"/, `${code}: the message names the parameter`)
  }
})

t.test('/delay/:seconds waits, then answers like /anything', TEST_TIMEOUT, async (t) => {
  const started = performance.now()
  const res = await json<{ method: string; path: string; bodyLength: number }>('/delay/0.2?x=1', { method: 'POST', body: 'abc' })
  t.ok(elapsedSince(started) >= 190, 'waited')
  t.equal(res.status, 200)
  t.equal(res.body.method, 'POST')
  t.equal(res.body.path, '/delay/0.2')
  t.equal(res.body.bodyLength, 3)
  for (const bad of ['61', '-1', 'soon']) {
    const answer = await json<{ error: string }>(`/delay/${bad}`)
    t.equal(answer.status, 400, bad)
    t.match(answer.body.error, /"seconds"/)
  }
})

t.test('/delay stops waiting when the client goes away', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t)
  await t.rejects(call('/delay/30', { signal: AbortSignal.timeout(100) }, own))
  await waitFor(() => own.stats.inFlight === 0, 'the aborted request to leave')
  t.equal(own.stats.maxInFlight, 1)
})

t.test('/bytes/:n streams the 0..255 pattern with a content-length', TEST_TIMEOUT, async (t) => {
  const small = await call('/bytes/1000')
  t.equal(small.headers['content-length'], '1000')
  t.equal(small.headers['content-type'], 'application/octet-stream')
  const bytes = Buffer.from(await small.body.arrayBuffer())
  t.equal(bytes.length, 1000)
  t.ok(isPattern(bytes))

  const empty = await text('/bytes/0')
  t.equal(empty.status, 200)
  t.equal(empty.body, '')

  // Large enough to need many chunks and several waits for 'drain'; compared by hash to stay cheap.
  const size = 24 * 1024 * 1024 + 7
  const large = await call(`/bytes/${size}`)
  t.equal(large.headers['content-length'], String(size))
  const hash = createHash('sha256')
  let received = 0
  for await (const chunk of large.body as AsyncIterable<Buffer>) {
    hash.update(chunk)
    received += chunk.length
  }
  t.equal(received, size)
  const block = Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => i & 0xff))
  const expected = createHash('sha256')
  for (let at = 0; at < size; at += block.length) expected.update(block.subarray(0, Math.min(block.length, size - at)))
  t.equal(hash.digest('hex'), expected.digest('hex'), 'every byte follows the pattern')
})

t.test('/bytes/:n?chunked=1 uses chunked framing', TEST_TIMEOUT, async (t) => {
  const res = await call('/bytes/200000?chunked=1')
  t.equal(res.headers['content-length'], undefined)
  t.equal(res.headers['transfer-encoding'], 'chunked')
  const bytes = Buffer.from(await res.body.arrayBuffer())
  t.equal(bytes.length, 200000)
  t.ok(isPattern(bytes))
})

t.test('/bytes/:n honours backpressure and stops when the client leaves', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t)
  let serverSocket: Socket | undefined
  own.server.once('connection', (socket: Socket) => (serverSocket = socket))
  const controller = new AbortController()
  const res = await call('/bytes/1073741824', { signal: controller.signal }, own)
  t.equal(res.headers['content-length'], '1073741824')
  // The client reads nothing; a stub that ignored backpressure would queue the whole GiB here.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.ok(serverSocket !== undefined && serverSocket.bytesWritten < 64 * 1024 * 1024, `bounded: ${serverSocket?.bytesWritten} bytes written or queued`)
  controller.abort()
  await drain(res.body)
  await waitFor(() => own.stats.inFlight === 0, 'the stream to stop')
})

t.test('/bytes/:n rejects bad sizes', TEST_TIMEOUT, async (t) => {
  for (const bad of ['-1', '1.5', 'many', String(2 * 1024 ** 3 + 1)]) {
    const res = await json<{ error: string }>(`/bytes/${bad}`)
    t.equal(res.status, 400, bad)
    t.match(res.body.error, /"n"/)
  }
})

t.test('/stream/:n sends n JSON lines, chunked', TEST_TIMEOUT, async (t) => {
  const res = await text('/stream/3?a=b')
  t.equal(res.status, 200)
  t.equal(res.headers['transfer-encoding'], 'chunked')
  const lines = res.body.trimEnd().split('\n').map((line) => JSON.parse(line) as { id: number; url: string; args: Record<string, string> })
  t.same(
    lines.map((line) => line.id),
    [0, 1, 2],
  )
  t.equal(lines[0]?.url, '/stream/3?a=b')
  t.same(lines[0]?.args, { a: 'b' })
  t.equal((await text('/stream/0')).body, '')
  t.equal((await text('/stream/x')).status, 400)
})

t.test('/drip sends numbytes stars over duration after delay, with code', TEST_TIMEOUT, async (t) => {
  const started = performance.now()
  const res = await call('/drip?numbytes=5&duration=0.25&delay=0.1&code=201')
  const headersAfter = elapsedSince(started)
  const body = await res.body.text()
  const total = elapsedSince(started)
  t.equal(res.statusCode, 201)
  t.equal(res.headers['content-length'], '5')
  t.equal(body, '*****')
  t.ok(headersAfter >= 90, `headers after the delay (${headersAfter} ms)`)
  // The last of 5 bytes is due 4/5 of the duration after the first.
  t.ok(total - headersAfter >= 180, `bytes spread over the duration (${total - headersAfter} ms)`)

  const burst = await text('/drip?numbytes=100000&duration=0&delay=0')
  t.equal(burst.body, '*'.repeat(100000))
  for (const [query, name] of [
    ['numbytes=-1', 'numbytes'],
    ['duration=x', 'duration'],
    ['delay=61', 'delay'],
    ['code=99', 'code'],
  ]) {
    const bad = await json<{ error: string }>(`/drip?${query}`)
    t.equal(bad.status, 400, query)
    t.match(bad.body.error, `"${name}"`)
  }
})

t.test('/headers shows merged and raw request headers', TEST_TIMEOUT, async (t) => {
  const res = await json<{ headers: Record<string, string>; rawHeaders: string[] }>('/headers', { headers: { 'X-Dup': ['a', 'b'], 'x-single': '1' } })
  t.equal(res.body.headers['x-dup'], 'a, b')
  t.equal(res.body.headers['x-single'], '1')
  const raw = res.body.rawHeaders
  const dupValues = raw.flatMap((value, i) => (i % 2 === 0 && value.toLowerCase() === 'x-dup' ? [raw[i + 1]] : []))
  t.same(dupValues, ['a', 'b'], 'duplicates arrive separately')
})

t.test('/headers shows hop-by-hop headers exactly as sent', TEST_TIMEOUT, async (t) => {
  const answer = await raw(stub, 'GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\n\r\n')
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string>; rawHeaders: string[] }
  t.equal(body.headers.connection, 'close, X-Hop')
  t.equal(body.headers['x-hop'], '1')
  t.equal(body.headers['keep-alive'], 'timeout=9')
  t.equal(body.headers.te, 'trailers')
  t.same(body.rawHeaders.slice(0, 4), ['Host', 'x', 'Connection', 'close, X-Hop'])
})

interface Anything {
  method: string
  url: string
  path: string
  query: Record<string, string | string[]>
  headers: Record<string, string>
  httpVersion: string
  bodyLength: number
  bodySha256: string
  body: string | null
  trailers: Record<string, string>
}

t.test('/anything describes the request', TEST_TIMEOUT, async (t) => {
  const res = await json<Anything>('/anything/a/b?x=1&x=2&y=%20z', { method: 'PUT', body: 'hello', headers: { 'content-type': 'text/plain' } })
  t.equal(res.status, 200)
  t.match(res.body, {
    method: 'PUT',
    url: '/anything/a/b?x=1&x=2&y=%20z',
    path: '/anything/a/b',
    query: { x: ['1', '2'], y: ' z' },
    httpVersion: '1.1',
    bodyLength: 5,
    bodySha256: sha256('hello'),
    body: 'hello',
    trailers: {},
  })
  t.equal(res.body.headers['content-type'], 'text/plain')

  const bare = await json<Anything>('/anything')
  t.match(bare.body, { method: 'GET', path: '/anything', bodyLength: 0, body: '', bodySha256: sha256('') })
  t.equal((await text('/anythingelse')).status, 404, 'only /anything and /anything/...')
})

t.test('/anything hashes large bodies without echoing them', TEST_TIMEOUT, async (t) => {
  const body = Buffer.alloc(5 * 1024 * 1024 + 1, 'x')
  const res = await json<Anything>('/anything', { method: 'POST', body })
  t.equal(res.body.bodyLength, body.length)
  t.equal(res.body.bodySha256, sha256(body))
  t.equal(res.body.body, null)
  const edge = Buffer.alloc(64 * 1024, 'y')
  t.equal((await json<Anything>('/anything', { method: 'POST', body: edge })).body.body, edge.toString(), '64 KiB is still echoed')
})

t.test('/anything reports request trailers and the HTTP version', TEST_TIMEOUT, async (t) => {
  const answer = await raw(stub, 'POST /anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 900150983cd24fb0\r\n\r\n')
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Anything
  t.equal(body.body, 'abc')
  t.same(body.trailers, { 'x-sum': '900150983cd24fb0' })
  const old = await raw(stub, 'GET /anything HTTP/1.0\r\nHost: x\r\n\r\n')
  t.match(old, /^HTTP\/1\.1 200/)
  t.equal((JSON.parse(old.slice(old.indexOf('\r\n\r\n') + 4)) as Anything).httpVersion, '1.0')
})

t.test('/echo streams the request body back', TEST_TIMEOUT, async (t) => {
  const small = await text('/echo', { method: 'POST', body: 'ping', headers: { 'content-type': 'text/x-test' } })
  t.equal(small.status, 200)
  t.equal(small.body, 'ping')
  t.equal(small.headers['content-type'], 'text/x-test')
  const empty = await text('/echo')
  t.equal(empty.headers['content-type'], 'application/octet-stream')
  t.equal(empty.body, '')

  // 32 MiB generated on the fly and consumed as it comes back: neither side holds it all.
  const chunk = Buffer.alloc(64 * 1024, 'e')
  const count = 512
  const source = Readable.from(
    (function* () {
      for (let i = 0; i < count; i++) yield chunk
    })(),
  )
  const res = await call('/echo', { method: 'POST', body: source })
  const hash = createHash('sha256')
  let received = 0
  for await (const part of res.body as AsyncIterable<Buffer>) {
    hash.update(part)
    received += part.length
  }
  t.equal(received, chunk.length * count)
  const expected = createHash('sha256')
  for (let i = 0; i < count; i++) expected.update(chunk)
  t.equal(hash.digest('hex'), expected.digest('hex'))
})

t.test('/trailers sends a checksum trailer', TEST_TIMEOUT, async (t) => {
  const res = await call('/trailers')
  t.equal(res.headers.trailer, 'x-checksum')
  t.equal(res.headers['transfer-encoding'], 'chunked')
  const body = await res.body.text()
  t.ok(body.length > 0)
  t.equal(res.trailers['x-checksum'], sha256(body))
})

t.test('/cache/:seconds sets validators and answers 304 to a matching If-None-Match', TEST_TIMEOUT, async (t) => {
  const first = await json<{ counter: number; maxAge: number }>('/cache/60')
  t.equal(first.status, 200)
  t.equal(first.headers['cache-control'], 'public, max-age=60')
  const etag = String(first.headers.etag)
  const lastModified = String(first.headers['last-modified'])
  t.ok(etag.length > 0)
  t.ok(!Number.isNaN(Date.parse(lastModified)))
  t.equal(first.body.maxAge, 60)

  const revalidated = await text('/cache/60', { headers: { 'if-none-match': etag } })
  t.equal(revalidated.status, 304)
  t.equal(revalidated.body, '')
  t.equal(revalidated.headers.etag, etag)
  t.equal(revalidated.headers['cache-control'], 'public, max-age=60')
  t.equal((await text('/cache/60', { headers: { 'if-none-match': `"other", ${etag.replace(/^W\//, '')}` } })).status, 304, 'weak comparison, lists')
  t.equal((await text('/cache/60', { headers: { 'if-none-match': '*' } })).status, 304)
  t.equal((await text('/cache/60', { headers: { 'if-modified-since': lastModified } })).status, 304)
  t.equal((await text('/cache/60', { headers: { 'if-none-match': '"other"', 'if-modified-since': lastModified } })).status, 200, 'If-None-Match wins')

  const again = await json<{ counter: number }>('/cache/60', { headers: { 'if-none-match': '"stale"' } })
  t.equal(again.status, 200)
  t.ok(again.body.counter > first.body.counter, 'the counter counts full answers')
  t.not((await text('/cache/10')).headers.etag, etag, 'each max-age is its own resource')
  t.equal((await text('/cache/forever')).status, 400)
})

t.test('/cacheable/:key scripts caching headers, a status sequence and 304s per key', TEST_TIMEOUT, async (t) => {
  const first = await json<{ key: string; generation: number; varied: string | null }>('/cacheable/k1?cc=public,max-age=5&etag=%22e1%22&vary=X-Lang&tag=a%20b&codes=200,503', { headers: { 'x-lang': 'fr' } })
  t.equal(first.status, 200)
  t.match(first.headers, { 'cache-control': 'public,max-age=5', etag: '"e1"', vary: 'X-Lang', 'surrogate-key': 'a b', 'x-generation': '0' })
  t.same(first.body, { key: 'k1', generation: 0, status: 200, varied: 'fr' })
  const notModified = await text('/cacheable/k1?etag=%22e1%22', { headers: { 'if-none-match': '"e1"' } })
  t.equal(notModified.status, 304)
  t.equal(notModified.headers['x-generation'], '1', 'a 304 advances the key too')
  t.equal((await text('/cacheable/k1?codes=200,503,503')).status, 503, 'the third request gets the third code')
  const big = await call('/cacheable/k2?bytes=70000')
  t.equal(big.headers['content-length'], '70000')
  t.equal((await big.body.arrayBuffer()).byteLength, 70000)
  t.equal((await text('/cacheable/k3')).headers['cache-control'], 'max-age=60', 'default Cache-Control')
  t.equal((await text('/cacheable/k4?bytes=x')).status, 400)
})

t.test('/cacheable/:key sends scripted header lines and interim responses', TEST_TIMEOUT, async (t) => {
  const lines = await text(`/cacheable/k5?header=${encodeURIComponent('Age: 0')}&header=${encodeURIComponent('age: 7200')}&header=${encodeURIComponent('Expires: 0')}`)
  t.same(lines.headers.age, ['0', '7200'], 'a name given twice goes on two lines')
  t.equal(lines.headers.expires, '0')
  t.equal((await text('/cacheable/k5?header=no-colon')).status, 400)
  t.match((await text(`/cacheable/k5?header=${encodeURIComponent('bad name: x')}`)).body, /invalid parameter \\"header\\"/)

  // node:http's client reports each 1xx it reads as an 'information' event.
  const interim: Array<{ statusCode: number; headers: Record<string, unknown> }> = []
  const status = await new Promise<number>((resolve, reject) => {
    const path = `/cacheable/k6?processing=1&hint=${encodeURIComponent('</a.css>; rel=preload; as=style')}&hint=${encodeURIComponent('</b.js>; rel=preload; as=script')}`
    const req = http.get(stub.url + path, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('information', (info) => interim.push({ statusCode: info.statusCode, headers: info.headers }))
    req.on('error', reject)
  })
  t.equal(status, 200)
  t.match(interim, [{ statusCode: 102 }, { statusCode: 103, headers: { link: '</a.css>; rel=preload; as=style' } }, { statusCode: 103, headers: { link: '</b.js>; rel=preload; as=script' } }])
  t.equal((await text(`/cacheable/k6?hint=${encodeURIComponent('not a link')}`)).status, 400)
})

t.test('/fault/reset-before-headers drops the connection without an answer', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t)
  await t.rejects(call('/fault/reset-before-headers', {}, own))
  await t.rejects(call('/fault/reset-before-headers?rst=1', {}, own), 'with a TCP reset too')
  await waitFor(() => own.stats.inFlight === 0, 'in-flight to settle')
  t.equal(own.stats.byPath.get('/fault/reset-before-headers'), 2)
})

t.test('/fault/reset-mid-body sends headers and `after` bytes, then drops the connection', TEST_TIMEOUT, async (t) => {
  for (const [query, sent] of [
    ['', 1024],
    ['?after=0', 0],
    ['?after=100000', 100000],
  ] as const) {
    const res = await call(`/fault/reset-mid-body${query}`)
    t.equal(res.statusCode, 200)
    t.ok(Number(res.headers['content-length']) > sent, 'promises more than it sends')
    const { bytes, error } = await drain(res.body)
    t.ok(error !== undefined, `${query}: the body fails`)
    t.equal(bytes.length, sent, `${query}: ${sent} bytes arrive first`)
    t.ok(isPattern(bytes))
  }
  // A reset may discard what the client kernel has not delivered yet, headers included: either way it fails.
  const reset = await call('/fault/reset-mid-body?after=10&rst=1').then(
    (res) => drain(res.body),
    (error: unknown) => ({ error }),
  )
  t.ok(reset.error !== undefined, 'rst=1 fails too')
  t.equal((await text('/fault/reset-mid-body?after=x')).status, 400)
})

t.test('/fault/hang never answers but lets the client leave', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t)
  const started = performance.now()
  await t.rejects(call('/fault/hang', { signal: AbortSignal.timeout(200) }, own))
  t.ok(elapsedSince(started) >= 190)
  t.equal(own.stats.maxInFlight, 1)
  await waitFor(() => own.stats.inFlight === 0, 'the hung request to be released')
})

t.test('close() ends hung requests and resolves quickly', TEST_TIMEOUT, async (t) => {
  const own = await startStub()
  const pending = call('/fault/hang', {}, own)
  pending.catch(() => {})
  await waitFor(() => own.stats.inFlight === 1, 'the request to arrive')
  const started = performance.now()
  await own.close()
  t.ok(elapsedSince(started) < 1000, 'closed promptly')
  await t.rejects(pending)
  t.notOk(own.server.listening)
  await own.close()
  t.pass('close() is idempotent')
})

t.test('/fault/slow-headers delays the headers', TEST_TIMEOUT, async (t) => {
  const started = performance.now()
  const res = await json<{ ok: boolean }>('/fault/slow-headers?ms=200')
  t.ok(elapsedSince(started) >= 190)
  t.equal(res.status, 200)
  t.equal(res.body.ok, true)
  // undici checks headersTimeout on a coarse (~1 s) timer, hence the generous wait on the stub side.
  const impatient = new Client(stub.url, { headersTimeout: 100 })
  t.teardown(() => impatient.destroy())
  await t.rejects(impatient.request({ method: 'GET', path: '/fault/slow-headers?ms=5000' }), { code: 'UND_ERR_HEADERS_TIMEOUT' })
  t.equal((await text('/fault/slow-headers?ms=600000')).status, 400)
})

t.test('/fault/close-after-response closes the connection after answering', TEST_TIMEOUT, async (t) => {
  const client = new Client(stub.url)
  t.teardown(() => client.destroy())
  const first = await client.request({ method: 'GET', path: '/fault/close-after-response' })
  await first.body.dump()
  t.equal(first.statusCode, 200)
  t.equal(first.headers.connection, 'close')
  const second = await client.request({ method: 'GET', path: '/status/200' })
  await second.body.dump()
  t.not(second.headers['x-stub-conn'], first.headers['x-stub-conn'], 'the next request needs a new connection')
})

t.test('/sequence/:key plays the codes in order, then repeats the last', TEST_TIMEOUT, async (t) => {
  const path = '/sequence/seq-a?codes=503,502,200&retryAfter=3'
  const answers = []
  for (let i = 0; i < 4; i++) answers.push(await json<{ key: string; index: number; status: number }>(path))
  t.same(
    answers.map((a) => a.status),
    [503, 502, 200, 200],
  )
  t.has(
    answers.map((a) => a.body),
    [
      { key: 'seq-a', index: 0, status: 503, bodyLength: 0 },
      { key: 'seq-a', index: 1, status: 502 },
      { key: 'seq-a', index: 2, status: 200 },
      { key: 'seq-a', index: 3, status: 200 },
    ],
  )
  t.same(
    answers.map((a) => a.headers['retry-after']),
    ['3', '3', undefined, undefined],
    'retry-after only on failures',
  )
  t.equal((await json('/sequence/seq-b?codes=500')).status, 500, 'keys are independent')

  const reset = await json('/sequence/seq-a', { method: 'DELETE' })
  t.same(reset.body, { key: 'seq-a', reset: true })
  t.equal((await json(path)).status, 503, 'starts over after DELETE')
  t.equal((await json('/sequence/seq-b?codes=500,200')).status, 200, 'other keys kept')
  await json('/sequence', { method: 'DELETE' })
  t.equal((await json('/sequence/seq-b?codes=500,200')).status, 500, 'DELETE /sequence resets every key')
  t.equal((await json('/sequence/seq-c')).status, 200, 'codes default to 200')
})

t.test('/sequence/:key rejects bad codes without advancing', TEST_TIMEOUT, async (t) => {
  for (const [query, name] of [
    ['codes=503,abc', 'codes'],
    ['codes=100', 'codes'],
    ['codes=', 'codes'],
    ['codes=503&retryAfter=soon', 'retryAfter'],
  ]) {
    const res = await json<{ error: string }>(`/sequence/seq-bad?${query}`)
    t.equal(res.status, 400, query)
    t.match(res.body.error, `"${name}"`)
  }
  t.equal((await text('/sequence/seq-bad?codes=204,200')).body, '', '204 has no body')
  t.equal((await json<{ index: number }>('/sequence/seq-bad?codes=204,200')).body.index, 1, 'only valid requests advanced the key')
})

t.test('/flaky fails and slows down with the given probabilities', TEST_TIMEOUT, async (t) => {
  const always = await json<{ error: string; status: number }>('/flaky?fail=1&status=500')
  t.equal(always.status, 500)
  t.same(always.body, { error: 'flaky failure', status: 500 })
  const never = await json('/flaky?fail=0&slow=0')
  t.equal(never.status, 200)
  t.same(never.body, { ok: true, slow: false })
  const started = performance.now()
  const slow = await json('/flaky?fail=0&slow=1&slowMs=150')
  t.ok(elapsedSince(started) >= 140)
  t.same(slow.body, { ok: true, slow: true })
  t.equal(never.headers['cache-control'], undefined, 'no freshness unless asked for')
  const fresh = await json('/flaky?fail=0&slow=0&maxAge=30')
  t.equal(fresh.headers['cache-control'], 'max-age=30')
  const failedFresh = await json('/flaky?fail=1&maxAge=30')
  t.equal(failedFresh.headers['cache-control'], undefined, 'a failure is never made cacheable')
  for (const [query, name] of [
    ['fail=1.5', 'fail'],
    ['status=700', 'status'],
    ['slow=-0.1', 'slow'],
    ['slowMs=x', 'slowMs'],
    ['maxAge=-1', 'maxAge'],
  ]) {
    const res = await json<{ error: string }>(`/flaky?${query}`)
    t.equal(res.status, 400, query)
    t.match(res.body.error, `"${name}"`)
  }
})

t.test('/flaky with a seed is reproducible', TEST_TIMEOUT, async (t) => {
  const run = async (base: Stub, seed: string): Promise<number[]> => {
    const statuses = []
    for (let i = 0; i < 40; i++) statuses.push((await text(`/flaky?fail=0.5&slow=0&seed=${seed}`, {}, base)).status)
    return statuses
  }
  const a = await run(await ownStub(t), 'waypost')
  const b = await run(await ownStub(t), 'waypost')
  t.same(a, b, 'same seed, same sequence')
  t.ok(a.includes(503) && a.includes(200), 'and it does mix outcomes')
  t.notSame(await run(await ownStub(t), 'other'), a, 'another seed, another sequence')
})

t.test('/concurrency-latency grows with the number of requests in flight', TEST_TIMEOUT, async (t) => {
  const started = performance.now()
  const single = await json<{ inFlight: number; delayMs: number }>('/concurrency-latency?baseMs=100&perInFlightMs=0')
  t.ok(elapsedSince(started) >= 95)
  t.same(single.body, { inFlight: 1, delayMs: 100 })

  const own = await ownStub(t)
  const answers = await Promise.all(Array.from({ length: 6 }, () => json<{ inFlight: number; delayMs: number }>('/concurrency-latency?baseMs=0&perInFlightMs=40', {}, own)))
  for (const answer of answers) t.equal(answer.body.delayMs, 40 * answer.body.inFlight)
  t.ok(Math.max(...answers.map((a) => a.body.inFlight)) > 1, 'later arrivals wait longer')
  t.equal(own.stats.maxInFlight >= 2, true)
  t.equal((await text('/concurrency-latency?baseMs=-1')).status, 400)
})

t.test('stats count requests, paths, connections and in-flight; /__stats is not counted', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t)
  await text('/status/200', {}, own)
  await text('/status/200?x=1', {}, own)
  await text('/anything/x', {}, own)
  await text('/nowhere', {}, own)
  const expected = { requests: 4, inFlight: 0, byPath: { '/status/200': 2, '/anything/x': 1, '/nowhere': 1 } }
  const stats = await json<Record<string, unknown>>('/__stats', {}, own)
  t.match(stats.body, { ...expected, maxInFlight: 1 })
  t.ok((stats.body.connections as number) >= 1)
  t.match((await json('/__stats', {}, own)).body, expected, 'reading stats did not change them')
  t.equal(own.stats.requests, 4)
  t.equal(own.stats.byPath.get('/status/200'), 2)

  const reset = await json('/__stats', { method: 'DELETE' }, own)
  t.same(reset.body, { requests: 0, inFlight: 0, maxInFlight: 0, byPath: {}, connections: 0 })
  await text('/status/200', {}, own)
  t.equal(own.stats.requests, 1)
  own.resetStats()
  t.same([own.stats.requests, own.stats.byPath.size, own.stats.connections], [0, 0, 0])

  const hung = call('/fault/hang', { signal: AbortSignal.timeout(300) }, own)
  hung.catch(() => {})
  await waitFor(() => own.stats.inFlight === 1, 'the hang to be in flight')
  t.match((await json('/__stats', {}, own)).body, { inFlight: 1, maxInFlight: 1 })
  own.resetStats()
  t.equal(own.stats.maxInFlight, 1, 'reset keeps the live in-flight gauge')
  await t.rejects(hung)
  await waitFor(() => own.stats.inFlight === 0, 'the hang to end')
})

t.test('unknown paths get a JSON 404', TEST_TIMEOUT, async (t) => {
  for (const path of ['/nope', '/status', '/status/', '/fault/unknown']) {
    const res = await json(path)
    t.equal(res.status, 404, path)
    t.same(res.body, { error: 'not found', path })
  }
})

t.test('an unparseable request target gets a 400, not a crash', TEST_TIMEOUT, async (t) => {
  const answer = await raw(stub, 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 400 /)
  t.match(answer, /invalid request target/)
  t.equal((await text('/status/200')).status, 200, 'still serving')
})

function openSocket(url: string, options?: WebSocket.ClientOptions): Promise<{ ws: WebSocket; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options)
    let headers: Record<string, string | string[] | undefined> = {}
    ws.once('upgrade', (res) => (headers = res.headers))
    ws.once('open', () => resolve({ ws, headers }))
    ws.once('error', reject)
  })
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data, isBinary) => resolve({ data: data as Buffer, isBinary })))
}

t.test('the development issuer: discovery, JWKS, tokens with merged claims, introspection of its own tokens', TEST_TIMEOUT, async (t) => {
  const discovery = JSON.parse((await text('/.well-known/openid-configuration')).body) as Record<string, string>
  t.equal(discovery.issuer, stub.url)
  t.equal(discovery.jwks_uri, `${stub.url}/.well-known/jwks.json`)
  const keySet = await text('/.well-known/jwks.json')
  t.match(keySet.headers['cache-control'], /max-age=300/)
  const { keys } = JSON.parse(keySet.body) as { keys: Array<Record<string, string>> }
  t.same(keys.map((key) => key.alg), ['RS256', 'ES256'])
  t.ok(keys.every((key) => key.d === undefined), 'public keys only')

  const minted = await text('/dev/token', { method: 'POST', body: JSON.stringify({ sub: 'alice', roles: ['admin'] }), headers: { 'content-type': 'application/json' } })
  t.equal(minted.status, 200)
  const answer = JSON.parse(minted.body) as { access_token: string; token_type: string; expires_in: number }
  t.equal(answer.token_type, 'Bearer')
  t.equal(answer.expires_in, 300)
  const { jwtVerify, createLocalJWKSet, decodeProtectedHeader } = await import('jose')
  const { payload } = await jwtVerify(answer.access_token, createLocalJWKSet({ keys }), { issuer: stub.url, audience: 'waypost-dev' })
  t.match(payload, { sub: 'alice', roles: ['admin'], iss: stub.url, aud: 'waypost-dev' })
  t.equal(payload.exp! - payload.iat!, 300)
  const es = JSON.parse((await text('/dev/token?alg=ES256', { method: 'POST' })).body) as { access_token: string }
  t.equal(decodeProtectedHeader(es.access_token).alg, 'ES256', '?alg=ES256, and an empty body takes the defaults')
  const noExp = JSON.parse((await text('/dev/token', { method: 'POST', body: '{"exp": null}' })).body) as { access_token: string; expires_in?: number }
  t.equal(noExp.expires_in, undefined, 'a claim set to null is left out')
  t.equal((await text('/dev/token', { method: 'POST', body: '[1]' })).status, 400)
  t.equal((await text('/dev/token', { method: 'POST', body: '{oops' })).status, 400)
  t.equal((await text('/dev/token?alg=HS256', { method: 'POST' })).status, 400)

  const introspect = async (token: string) => JSON.parse((await text('/dev/introspect', { method: 'POST', body: new URLSearchParams({ token }).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } })).body) as Record<string, unknown>
  t.match(await introspect(answer.access_token), { active: true, sub: 'alice', roles: ['admin'] })
  t.same(await introspect('not-a-token'), { active: false })
  const expired = JSON.parse((await text('/dev/token', { method: 'POST', body: JSON.stringify({ exp: Math.floor(Date.now() / 1000) - 10 }) })).body) as { access_token: string }
  t.same(await introspect(expired.access_token), { active: false }, 'expired')
  const other = await ownStub(t)
  const foreign = JSON.parse((await text('/dev/token', { method: 'POST' }, other)).body) as { access_token: string }
  t.same(await introspect(foreign.access_token), { active: false }, 'another stub\'s token (other keys) is not active')
})

t.test('WebSocket on /ws echoes text and binary messages', TEST_TIMEOUT, async (t) => {
  const own = await ownStub(t)
  const wsUrl = own.url.replace(/^http/, 'ws')
  const { ws, headers } = await openSocket(`${wsUrl}/ws`, { headers: { 'x-request-id': 'ws-1' } })
  t.teardown(() => ws.terminate())
  t.match(headers['x-stub-conn'], /^\d+$/)
  t.equal(headers['x-request-id'], 'ws-1')

  const textReply = nextMessage(ws)
  ws.send('hello')
  t.same(await textReply, { data: Buffer.from('hello'), isBinary: false })
  const binaryReply = nextMessage(ws)
  ws.send(Buffer.from([0, 1, 2, 255]))
  t.same(await binaryReply, { data: Buffer.from([0, 1, 2, 255]), isBinary: true })
  ws.close(1000, 'done')
  const [code] = (await once(ws, 'close')) as [number]
  t.equal(code, 1000)

  const room = await openSocket(`${wsUrl}/ws/room-1`)
  const roomReply = nextMessage(room.ws)
  room.ws.send('again')
  t.equal((await roomReply).data.toString(), 'again', 'any path under /ws')
  room.ws.close()
  await once(room.ws, 'close')
  t.equal(own.stats.byPath.get('/ws'), 1, 'upgrades are counted')
})

t.test('other upgrades are refused with a 400', TEST_TIMEOUT, async (t) => {
  const wsUrl = stub.url.replace(/^http/, 'ws')
  const ws = new WebSocket(`${wsUrl}/elsewhere`)
  ws.on('error', () => {})
  const [, res] = (await once(ws, 'unexpected-response')) as [unknown, { statusCode: number; headers: Record<string, string> }]
  t.equal(res.statusCode, 400)
  t.match(res.headers['x-stub-conn'], /^\d+$/)
  ws.terminate()

  const answer = await raw(stub, 'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 400 /, 'non-WebSocket protocols too')
})

t.test('close() terminates open WebSockets', TEST_TIMEOUT, async (t) => {
  const own = await startStub()
  const { ws } = await openSocket(`${own.url.replace(/^http/, 'ws')}/ws`)
  ws.on('error', () => {})
  const closed = once(ws, 'close')
  const started = performance.now()
  await own.close()
  await closed
  t.ok(elapsedSince(started) < 1000)
})

interface CliProcess {
  readonly output: { stdout: string; stderr: string }
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>
  kill(signal: NodeJS.Signals): void
}

/** cli.ts as a child process; process.execArgv carries tap's TypeScript loader, so the .ts source runs as is. */
function spawnCli(t: Teardown, args: string[], env: NodeJS.ProcessEnv = {}): CliProcess {
  const cli = fileURLToPath(new URL('./cli.ts', import.meta.url))
  const child = spawn(process.execPath, [...process.execArgv, cli, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const output = { stdout: '', stderr: '' }
  child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()))
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return { output, exited, kill: (signal) => child.kill(signal) }
}

t.test('the CLI prints its address, serves, and exits 0 on SIGTERM', CLI_TIMEOUT, async (t) => {
  const cli = spawnCli(t, ['--keep-alive-timeout', '1000'], { STUB_PORT: '0', STUB_HOST: '127.0.0.1' })
  let exitedEarly = false
  void cli.exited.then(() => (exitedEarly = true))
  await waitFor(() => cli.output.stdout.includes('\n') || exitedEarly, 'the listening line', 50_000)
  const match = /^upstream-stub listening on (http:\/\/127\.0\.0\.1:\d+)\n$/.exec(cli.output.stdout)
  if (match === null) return t.fail(`unexpected output: ${JSON.stringify(cli.output)}`)
  const res = await request(`${match[1]}/status/204`, { dispatcher: agent })
  await res.body.dump()
  t.equal(res.statusCode, 204)
  cli.kill('SIGTERM')
  t.same(await cli.exited, [0, null])
})

t.test('the CLI rejects a bad port with usage and exit code 2', CLI_TIMEOUT, async (t) => {
  const cli = spawnCli(t, ['--port', 'http'])
  t.same(await cli.exited, [2, null])
  t.match(cli.output.stderr, /invalid port/)
  t.match(cli.output.stderr, /usage: upstream-stub/)
})
