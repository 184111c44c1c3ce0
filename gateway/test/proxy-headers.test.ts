// HTTP/1.1 intermediary behaviour, end to end: a real gateway in front of the real stub.
import t from 'tap'
import { connect, type AddressInfo } from 'node:net'
import { createServer } from 'node:http'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, startGateway } from './helpers.js'

const stub = await startStub()
const gw = await startGateway(
  catchAllConfig(stub.url, {
    listen: { trustedProxies: ['10.0.0.0/8'] },
    extra: { routes: [{ name: 'rewritten', match: { path: { prefix: '/old' } }, upstream: 'app', rewrite: { pathPrefix: '/anything/new', host: 'internal.example' } }] },
  }),
)
t.teardown(async () => {
  await gw.close()
  await stub.close()
})

interface Echo {
  headers: Record<string, string>
  method: string
  url: string
  bodyLength: number
  body: string | null
}

async function echo(path: string, headers: Record<string, string> = {}, init: { method?: 'GET' | 'POST' | 'PUT'; body?: string } = {}) {
  const response = await request(`${gw.url}${path}`, { headers, method: init.method ?? 'GET', body: init.body })
  const body = (await response.body.json()) as Echo
  return { response, body }
}

t.test('hop-by-hop headers and headers named in Connection are not forwarded', async (t) => {
  // undici refuses to send hop-by-hop headers itself, so speak raw HTTP.
  const raw = await rawRequest(
    'GET /headers HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s3cret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nX-Kept: yes\r\nConnection: close\r\n\r\n',
  )
  t.match(raw, /^HTTP\/1\.1 200/)
  const json = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n/, '').split('\r\n')[0]!) as { headers: Record<string, string> }
  for (const name of ['x-secret', 'keep-alive', 'te', 'proxy-connection', 'proxy-authorization']) t.notOk(name in json.headers, `${name} is dropped`)
  t.equal(json.headers['x-kept'], 'yes')
  t.equal(json.headers.host, 'example.test', 'Host is kept')
})

t.test('X-Forwarded-* and Forwarded from an untrusted peer are replaced, not trusted', async (t) => {
  const { body } = await echo('/anything', { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil', forwarded: 'for=6.6.6.6', host: 'shop.test:8080' })
  t.equal(body.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(body.headers['x-forwarded-proto'], 'http')
  t.equal(body.headers['x-forwarded-host'], 'shop.test:8080')
  t.equal(body.headers.forwarded, 'for=127.0.0.1;proto=http;host="shop.test:8080"')
  t.equal(body.headers.via, '1.1 waypost')
})

t.test("Forwarded's host follows each request's Host (the last one's quoting is remembered, not reused for another)", async (t) => {
  const hosts: Array<[string, string]> = [
    ['a.test:8080', '"a.test:8080"'],
    ['a.test:8080', '"a.test:8080"'],
    ['plain.test', 'plain.test'],
    ['a.test:8080', '"a.test:8080"'],
  ]
  for (const [host, quoted] of hosts) {
    const { body } = await echo('/anything', { host })
    t.equal(body.headers.forwarded, `for=127.0.0.1;proto=http;host=${quoted}`, host)
  }
})

t.test('x-request-id is propagated when sane, generated otherwise, and returned', async (t) => {
  const kept = await echo('/anything', { 'x-request-id': 'abc-123' })
  t.equal(kept.body.headers['x-request-id'], 'abc-123')
  t.equal(kept.response.headers['x-request-id'], 'abc-123')
  const generated = await echo('/anything', { 'x-request-id': 'bad id with spaces' })
  t.match(generated.body.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  t.equal(generated.response.headers['x-request-id'], generated.body.headers['x-request-id'])
})

t.test('route rewrites of path prefix and Host', async (t) => {
  const { body } = await echo('/old/thing?q=1')
  t.equal(body.url, '/anything/new/thing?q=1')
  t.equal(body.headers.host, 'internal.example')
  t.equal(body.headers['x-forwarded-host'], gw.url.slice('http://'.length), 'the client\'s Host goes to X-Forwarded-Host')
})

t.test('request bodies: content-length and chunked', async (t) => {
  const sized = await echo('/anything', { 'content-type': 'text/plain' }, { method: 'POST', body: 'hello world' })
  t.equal(sized.body.bodyLength, 11)
  t.equal(sized.body.body, 'hello world')
  const chunked = await request(`${gw.url}/anything`, {
    method: 'PUT',
    // The second part comes later, so the gateway must stream it rather than see a finished body.
    body: Readable.from((async function* () {
      yield 'part one, '
      await new Promise((resolve) => setTimeout(resolve, 50))
      yield 'part two'
    })()),
  })
  const json = (await chunked.body.json()) as Echo
  t.equal(json.bodyLength, 18)
  t.equal(json.headers['transfer-encoding'], 'chunked', 'a body of unknown length is sent chunked')
})

t.test('HEAD, 204 and 304 carry no body', async (t) => {
  const head = await request(`${gw.url}/bytes/1000`, { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-length'], '1000')
  t.equal((await head.body.arrayBuffer()).byteLength, 0)
  const noContent = await request(`${gw.url}/status/204`)
  t.equal(noContent.statusCode, 204)
  t.equal((await noContent.body.arrayBuffer()).byteLength, 0)
  const first = await request(`${gw.url}/cache/60`)
  const etag = first.headers.etag as string
  await first.body.dump()
  const notModified = await request(`${gw.url}/cache/60`, { headers: { 'if-none-match': etag } })
  t.equal(notModified.statusCode, 304)
  t.equal((await notModified.body.arrayBuffer()).byteLength, 0)
})

t.test('response trailers pass through', async (t) => {
  const raw = await rawRequest('GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n')
  t.match(raw, /transfer-encoding: chunked/i)
  t.match(raw, /\r\n0\r\nx-checksum: [0-9a-f]{64}\r\n/i, 'the trailer follows the last chunk')
})

t.test('Expect: 100-continue is answered by the gateway before the body goes upstream', async (t) => {
  const socket = connect(Number(new URL(gw.url).port), '127.0.0.1')
  let received = ''
  socket.on('data', (chunk) => {
    received += chunk.toString()
    if (received.includes('100 Continue') && !received.includes('sent')) {
      received += '<sent>'
      socket.write('abc')
    }
  })
  socket.write('POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')
  await new Promise((resolve) => socket.once('close', resolve))
  t.match(received, /^HTTP\/1\.1 100 Continue\r\n\r\n<sent>HTTP\/1\.1 200 OK/)
  t.match(received, /"bodyLength":3/)
})

t.test('a refused request never asks for its body', async (t) => {
  const small = await startGateway(catchAllConfig(stub.url, { prefix: '/only-here' }))
  t.teardown(() => small.close())
  const raw = await rawRequest('POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n', small.url)
  t.match(raw, /^HTTP\/1\.1 404 Not Found/)
  t.notMatch(raw, /100 Continue/)
  t.match(raw, /x-waypost-reason: no-route route=- upstream=-/)
})

t.test('absolute-form request targets are routed on their path', async (t) => {
  const raw = await rawRequest('GET http://example.test/anything/abs?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n')
  t.match(raw, /^HTTP\/1\.1 200/)
  t.match(raw, /"url":"\/anything\/abs\?x=1"/)
})

t.test('an absolute-form target names the one authority: routing, the upstream Host, forwarding headers, the cache key and the log', async (t) => {
  // Cache poisoning by Host: `GET http://victim/...` with `Host: evil` must be the victim's request throughout.
  const hosts = await startGateway(
    catchAllConfig(stub.url, {
      prefix: '/none',
      extra: {
        routes: [
          { name: 'victim', match: { host: 'victim.example' }, upstream: 'app', policies: { cache: { maxObjectSize: '64KiB' } } },
          { name: 'evil', match: { host: 'evil.example' }, upstream: 'app', policies: { fault: { abort: { percent: 100, status: 418 } } } },
        ],
      },
    }),
  )
  t.teardown(() => hosts.close())
  const raw = await rawRequest('GET http://victim.example/anything/poison HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n', hosts.url)
  t.match(raw, /^HTTP\/1\.1 200/, 'routed by the target\'s authority, not the Host header (evil answers 418)')
  const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Echo
  t.equal(body.headers.host, 'victim.example', 'the upstream is asked for the victim\'s resource')
  t.equal(body.headers['x-forwarded-host'], 'victim.example')
  t.match(body.headers.forwarded, /host=victim\.example/)
  const line = hosts.accessLines().find((entry) => entry.path === '/anything/poison')
  t.match(line, { route: 'victim', host: 'victim.example' })
  // What is stored is the victim's own answer, under the victim's key.
  t.match(await rawRequest('GET http://victim.example/cacheable/poison-1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n', hosts.url), /^HTTP\/1\.1 200/)
  const again = await request(`${hosts.url}/cacheable/poison-1`, { headers: { host: 'victim.example' } })
  await again.body.dump()
  t.match(again.headers['cache-status'], /hit/, 'a victim client gets the stored victim answer')
  t.equal(stub.stats.byPath.get('/cacheable/poison-1'), 1)
})

t.test('paths are normalized before routing and sent as normalized: dot segments cannot escape a route and its policies', async (t) => {
  const guarded = await startGateway(
    catchAllConfig(stub.url, {
      prefix: '/anything/public',
      extra: { routes: [{ name: 'guarded', match: { path: { prefix: '/status' } }, upstream: 'app', policies: { fault: { abort: { percent: 100, status: 403 } } } }] },
    }),
  )
  t.teardown(() => guarded.close())
  for (const path of ['/anything/public/../../status/418', '/anything/public/%2e%2e/%2E%2E/status/418', '/anything/public/./..//../status/418']) {
    const raw = await rawRequest(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, guarded.url)
    t.match(raw, /^HTTP\/1\.1 403[\s\S]*x-waypost-reason: fault-abort route=guarded/, `${path}: the guarded route's policies apply`)
  }
  const sent = await rawRequest('GET /anything/public//a/./b/%7euser?q=%2e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', guarded.url)
  t.match(sent, /"url":"\/anything\/public\/a\/b\/~user\?q=%2e"/, 'the upstream gets the normalized path; the query is left alone')
  for (const path of ['/anything/public/../../..', '/anything/%zz']) {
    const refused = await rawRequest(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, guarded.url)
    t.match(refused, /^HTTP\/1\.1 400[\s\S]*x-waypost-reason: invalid-request-target/, `${path}: refused`)
  }
})

t.test('as strict as nginx where it refuses: odd framing, versions, hosts, TRACE; underscore headers dropped; an upstream cannot speak for the gateway', async (t) => {
  const strict = await startGateway(catchAllConfig(stub.url, { extra: { routes: [{ name: 'tracing', match: { path: { prefix: '/trace-ok' }, methods: ['TRACE'] }, upstream: 'app' }] } }))
  t.teardown(() => strict.close())
  const send = (head: string, body = ''): Promise<string> => rawRequest(`${head}\r\n\r\n${body}`, strict.url)
  const refusals: Array<[string, string, RegExp]> = [
    ['POST /anything HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close', '0\r\n\r\n', /^HTTP\/1\.1 501[\s\S]*unsupported-transfer-encoding/],
    ['POST /anything HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked', '0\r\n\r\n', /^HTTP\/1\.1 400[\s\S]*transfer-encoding-on-http-1\.0/],
    ['GET /anything HTTP/2.0\r\nHost: x\r\nConnection: close', '', /^HTTP\/1\.1 505[\s\S]*http-version-not-supported/],
    ['GET /anything HTTP/1.1\r\nHost: \r\nConnection: close', '', /^HTTP\/1\.1 400[\s\S]*invalid-host/],
    ['GET /anything HTTP/1.1\r\nHost: x/evil\r\nConnection: close', '', /^HTTP\/1\.1 400[\s\S]*invalid-host/],
    ['GET /anything HTTP/1.1\r\nHost: user@x\r\nConnection: close', '', /^HTTP\/1\.1 400[\s\S]*invalid-host/],
    ['TRACE /anything HTTP/1.1\r\nHost: x\r\nConnection: close', '', /^HTTP\/1\.1 405[\s\S]*method-not-allowed/],
  ]
  for (const [head, body, expected] of refusals) t.match(await send(head, body), expected, head.split('\r\n')[0])
  t.match(await send('TRACE /trace-ok HTTP/1.1\r\nHost: x\r\nConnection: close'), /^HTTP\/1\.1 404/, 'a route that lists TRACE lets it through (the stub has no such path)')
  t.match(await send('GET /anything HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close'), /^HTTP\/1\.1 200/, 'an IPv6 Host with a port is a host')
  // The last Host's verdict is remembered (nearly every request repeats it): it must follow each change.
  for (const host of ['x', 'x/evil', 'x/evil', 'x', 'x', 'user@x', 'x']) {
    t.match(await send(`GET /anything HTTP/1.1\r\nHost: ${host}\r\nConnection: close`), host === 'x' ? /^HTTP\/1\.1 200/ : /^HTTP\/1\.1 400[\s\S]*invalid-host/, `Host: ${host}, in a run of changing hosts`)
  }

  const echoed = await send('GET /anything HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Plain: kept\r\nConnection: close')
  t.notMatch(echoed, /x_forwarded_for/i, 'a header named with an underscore does not reach the upstream')
  t.match(echoed, /"x-plain":"kept"/)
  const forwarding = await startGateway(catchAllConfig(stub.url, { listen: { underscoreHeaders: 'forward' } }))
  t.teardown(() => forwarding.close())
  t.match(await rawRequest('GET /anything HTTP/1.1\r\nHost: x\r\nX_Custom: 1\r\nConnection: close\r\n\r\n', forwarding.url), /"x_custom":"1"/, 'unless the listener forwards them')

  const impostor = createServer((_request, response) => response.writeHead(503, { 'x-waypost-reason': 'breaker-open route=all upstream=app' }).end('no'))
  await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve))
  t.teardown(() => impostor.close())
  const behind = await startGateway(catchAllConfig(`http://127.0.0.1:${(impostor.address() as AddressInfo).port}`))
  t.teardown(() => behind.close())
  const answer = await request(`${behind.url}/x`)
  await answer.body.dump()
  t.equal(answer.statusCode, 503)
  t.equal(answer.headers['x-waypost-reason'], undefined, "the upstream's own x-waypost-reason is dropped")
})

t.test('upstream response hop-by-hop headers are dropped and Via is added', async (t) => {
  const response = await request(`${gw.url}/fault/close-after-response`)
  await response.body.dump()
  t.equal(response.statusCode, 200)
  t.equal(response.headers.via, '1.1 waypost')
  t.not(response.headers.connection, 'close', 'the upstream closing its socket does not close ours')
})

t.test('every exchange writes one access-log line', async (t) => {
  const before = gw.accessLines().length
  const response = await request(`${gw.url}/status/201`, { headers: { 'x-request-id': 'log-check' } })
  await response.body.dump()
  await new Promise((resolve) => setTimeout(resolve, 20))
  const lines = gw.accessLines()
  t.equal(lines.length, before + 1)
  t.match(lines.at(-1), { reqId: 'log-check', route: 'all', upstream: 'app', method: 'GET', path: '/status/201', status: 201, attempts: 1, remote: '127.0.0.1' })
  t.type(lines.at(-1)!.durationMs, 'number')
  t.type(lines.at(-1)!.upstreamMs, 'number')
})

t.test('trusted proxies: X-Forwarded-* and Forwarded are appended to', async (t) => {
  const trusting = await startGateway(catchAllConfig(stub.url, { listen: { trustedProxies: ['127.0.0.0/8', '::1'] } }))
  t.teardown(() => trusting.close())
  const response = await request(`${trusting.url}/anything`, { headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example', forwarded: 'for=203.0.113.9;proto=https', via: '1.1 edge' } })
  const body = (await response.body.json()) as Echo
  t.equal(body.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.equal(body.headers['x-forwarded-proto'], 'https')
  t.equal(body.headers['x-forwarded-host'], 'shop.example')
  t.match(body.headers.forwarded, /^for=203\.0\.113\.9;proto=https, for=127\.0\.0\.1;proto=http;host=/)
  t.equal(body.headers.via, '1.1 edge, 1.1 waypost')

  // A Connection header cannot nominate away the fields the gateway derives: the chain survives.
  // (raw: undici will not send such a Connection header)
  const raw = await rawRequest('GET /anything HTTP/1.1\r\nHost: x\r\nConnection: close, x-forwarded-for, forwarded, x-request-id, x-custom\r\nX-Forwarded-For: 203.0.113.9\r\nX-Request-Id: req-1\r\nX-Custom: gone\r\n\r\n', trusting.url)
  const nominated = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Echo
  t.equal(nominated.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1')
  t.equal(nominated.headers['x-request-id'], 'req-1')
  t.equal(nominated.headers['x-custom'], undefined, 'other nominated fields are still dropped')
})

function rawRequest(text: string, base = gw.url): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(base).port), '127.0.0.1')
    let received = ''
    socket.on('data', (chunk) => (received += chunk.toString()))
    socket.on('error', reject)
    socket.on('close', () => resolve(received))
    socket.write(text)
  })
}

t.test('a malformed request pipelined behind a valid one: the valid one is answered first, then the 400', async (t) => {
  const raw = await rawRequest('GET /delay/0.2 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/200 HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n')
  const statuses = [...raw.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((match) => match[1])
  t.same(statuses, ['200', '400'], 'in request order')
  t.match(raw, /x-waypost-reason: malformed-request/)
})
