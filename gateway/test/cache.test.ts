// The response cache end to end: real gateways in front of the real stub, over loopback sockets.
// Each test uses its own stub keys, so counts on the stub tell upstream requests from hits.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { createServer, get as httpGet } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, sleep, startGateway, type RunningGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())
// Each test has its own gateway and stub keys, and most wait out a max-age: run them side by side.
t.jobs = 4

const CACHE = { cache: { maxObjectSize: '64KiB' } }

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

async function get(gw: RunningGateway, path: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' | 'POST' | 'PURGE' = 'GET'): Promise<Answer> {
  const response = await request(`${gw.url}${path}`, { method: method as 'GET', headers })
  return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
}

function generation(answer: Answer): number {
  return (JSON.parse(answer.body) as { generation: number }).generation
}

/** Requests the stub saw for one path (no query) since it started. */
function seen(path: string): number {
  return stub.stats.byPath.get(path) ?? 0
}

async function cachingGateway(t: { teardown(fn: () => unknown): void }, policies: Record<string, unknown> = CACHE, route?: Record<string, unknown>): Promise<RunningGateway> {
  const gw = await startGateway(catchAllConfig(stub.url, { policies, route, accessLog: false }))
  t.teardown(() => gw.close())
  return gw
}

t.test('a second GET is a hit with an Age; the upstream is asked once', async (t) => {
  const gw = await cachingGateway(t)
  const first = await get(gw, '/cacheable/hit-1?cc=max-age=60')
  t.equal(first.status, 200)
  t.match(first.headers['cache-status'], /^waypost; fwd=uri-miss; stored$/)
  await sleep(1100)
  const second = await get(gw, '/cacheable/hit-1?cc=max-age=60')
  t.equal(second.status, 200)
  t.match(second.headers['cache-status'], /^waypost; hit; ttl=5\d$/)
  t.ok(Number(second.headers.age) >= 1, `age ${String(second.headers.age)} counts the time stored`)
  t.equal(second.body, first.body)
  t.equal(second.headers.via, '1.1 waypost', 'a hit is mapped like an upstream response')
  t.equal(seen('/cacheable/hit-1'), 1)
  const metrics = await metricsText(gw)
  t.match(metrics, /waypost_cache_requests_total\{route="all",result="hit"\} 1/)
  t.match(metrics, /waypost_cache_requests_total\{route="all",result="miss"\} 1/)
  t.match(metrics, /waypost_cache_stored_bytes\{route="all"\} [1-9]\d*/)
})

t.test('max-age expires: the entry goes stale and the upstream is asked again', async (t) => {
  const gw = await cachingGateway(t)
  // max-age=3, not 1: the upstream's Date has whole seconds, so an answer can be up to 1 s old the
  // moment it is stored; 2 s of margin left for the second request on a busy machine.
  await get(gw, '/cacheable/expiry-1?cc=max-age=3')
  t.match((await get(gw, '/cacheable/expiry-1?cc=max-age=3')).headers['cache-status'], /hit/)
  await sleep(4100)
  const after = await get(gw, '/cacheable/expiry-1?cc=max-age=3')
  t.match(after.headers['cache-status'], /fwd=stale; stored/)
  t.equal(generation(after), 1)
  t.equal(seen('/cacheable/expiry-1'), 2)
})

t.test('no-store and private responses are never stored', async (t) => {
  const gw = await cachingGateway(t)
  for (const cc of ['no-store', 'private, max-age=60']) {
    const path = `/cacheable/never-${cc.split(',')[0]}`
    await get(gw, `${path}?cc=${encodeURIComponent(cc)}`)
    const second = await get(gw, `${path}?cc=${encodeURIComponent(cc)}`)
    t.equal(generation(second), 1, `${cc}: the second request went upstream`)
    t.equal(second.headers['cache-status'], 'waypost; fwd=uri-miss')
  }
})

t.test('answers to requests with Authorization are stored only when allowed', async (t) => {
  const gw = await cachingGateway(t)
  const auth = { authorization: 'Bearer secret' }
  await get(gw, '/cacheable/auth-1?cc=max-age=60', auth)
  t.equal(generation(await get(gw, '/cacheable/auth-1?cc=max-age=60', auth)), 1, 'max-age alone does not allow it')
  await get(gw, '/cacheable/auth-2?cc=public,max-age=60', auth)
  t.equal(generation(await get(gw, '/cacheable/auth-2?cc=public,max-age=60', auth)), 0, '`public` allows it (RFC 9111 §3.5)')

  const optedIn = await cachingGateway(t, { cache: { allowAuthorized: true } })
  await get(optedIn, '/cacheable/auth-3?cc=max-age=60', auth)
  t.equal(generation(await get(optedIn, '/cacheable/auth-3?cc=max-age=60', auth)), 0, 'the route opted in')
})

t.test('Vary keeps variants apart; Vary: * never matches', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/vary-1?vary=X-Variant'
  const a = await get(gw, path, { 'x-variant': 'a' })
  const b = await get(gw, path, { 'x-variant': 'b' })
  const a2 = await get(gw, path, { 'x-variant': 'a' })
  const b2 = await get(gw, path, { 'x-variant': 'b' })
  t.match(JSON.parse(a.body), { varied: 'a' })
  t.match(JSON.parse(b.body), { varied: 'b' })
  t.equal(a2.body, a.body)
  t.equal(b2.body, b.body)
  t.match(b.headers['cache-status'], /fwd=vary-miss; stored/)
  t.equal(seen('/cacheable/vary-1'), 2)

  await get(gw, '/cacheable/vary-2?vary=*')
  await get(gw, '/cacheable/vary-2?vary=*')
  t.equal(seen('/cacheable/vary-2'), 2)
})

t.test('50 concurrent misses for one URI make one upstream request', async (t) => {
  const gw = await cachingGateway(t)
  const answers = await Promise.all(Array.from({ length: 50 }, () => get(gw, '/cacheable/stampede-1?cc=max-age=60&delayMs=300')))
  t.equal(seen('/cacheable/stampede-1'), 1)
  t.ok(answers.every((answer) => answer.status === 200 && generation(answer) === 0))
  t.equal(answers.filter((answer) => /collapsed/.test(String(answer.headers['cache-status']))).length, 49)
})

t.test('stale-while-revalidate answers stale at once and refreshes once in the background', async (t) => {
  const gw = await cachingGateway(t)
  // The upstream's 500 ms count towards the stored answer's age (RFC 9111 §4.2.3): max-age=2 leaves room.
  const path = '/cacheable/swr-1?cc=max-age=2,stale-while-revalidate=30&delayMs=500'
  await get(gw, path)
  await sleep(2600)
  const started = performance.now()
  const stale = await Promise.all([get(gw, path), get(gw, path), get(gw, path)])
  t.ok(performance.now() - started < 450, 'no client waited for the slow upstream')
  for (const answer of stale) {
    t.equal(generation(answer), 0)
    t.match(answer.headers['cache-status'], /^waypost; hit; ttl=-\d+; detail=stale-while-revalidate$/, 'a hit for this client, stale by ttl')
  }
  await sleep(1000)
  const fresh = await get(gw, path)
  t.equal(generation(fresh), 1, 'the background request stored the new answer')
  t.match(fresh.headers['cache-status'], /hit/)
  t.equal(seen('/cacheable/swr-1'), 2, 'one request to fill, one to refresh')
})

t.test('stale-if-error answers stale when the upstream fails with 5xx or is down', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/sie-1?cc=max-age=1,stale-if-error=60&codes=200,503'
  await get(gw, path)
  await sleep(1600)
  const answer = await get(gw, path)
  t.equal(answer.status, 200)
  t.equal(generation(answer), 0)
  t.equal(answer.headers['cache-status'], 'waypost; fwd=stale; fwd-status=503; detail=stale-if-error')

  const own = await startStub()
  t.teardown(() => own.close())
  const down = await startGateway(catchAllConfig(own.url, { policies: { cache: { staleIfError: '60s' } }, accessLog: false }))
  t.teardown(() => down.close())
  await get(down, '/cacheable/sie-2?cc=max-age=1')
  await own.close()
  await sleep(1600)
  const whileDown = await get(down, '/cacheable/sie-2?cc=max-age=1')
  t.equal(whileDown.status, 200, 'the route default covers a refused connection')
  t.equal(generation(whileDown), 0)
  t.match(whileDown.headers['cache-status'], /fwd=stale; detail=stale-if-error/)
})

t.test('a stale entry with an ETag is revalidated: 304 upstream, 200 with refreshed headers to the client', async (t) => {
  const gw = await cachingGateway(t)
  // The 304 extends freshness to 60 s, so "fresh again" does not depend on how busy the machine is.
  const path = '/cacheable/etag-1?cc=max-age=1&etag=%22v1%22&cc304=max-age%3D60'
  const first = await get(gw, path)
  t.equal(first.headers['x-generation'], '0')
  await sleep(1600)
  const revalidated = await get(gw, path)
  t.equal(revalidated.status, 200)
  t.equal(revalidated.body, first.body, 'the stored body')
  t.equal(revalidated.headers['x-generation'], '1', 'headers from the 304')
  t.equal(revalidated.headers['cache-status'], 'waypost; fwd=stale; fwd-status=304')
  const hit = await get(gw, path)
  t.match(hit.headers['cache-status'], /hit/, 'fresh again after the 304')
  t.equal(hit.headers['x-generation'], '1')
  t.equal(seen('/cacheable/etag-1'), 2)

  const conditional = await get(gw, path, { 'if-none-match': '"v1"' })
  t.equal(conditional.status, 304, "the client's own conditional is answered from the store")
})

t.test('a body over maxObjectSize streams through whole and is not stored', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { cache: { maxObjectSize: '64KiB', defaultTtl: '60s' } }, accessLog: false }))
  t.teardown(() => gw.close())
  for (const path of ['/cacheable/big-1?bytes=300000', '/bytes/300000?chunked=1']) {
    for (let i = 0; i < 2; i++) {
      const response = await request(`${gw.url}${path}`)
      const body = Buffer.from(await response.body.arrayBuffer())
      t.equal(body.length, 300000, `${path}: whole`)
      t.equal(body[299_999], 299_999 & 0xff)
    }
    t.equal(seen(path.split('?')[0]!), 2, `${path}: both requests went upstream`)
  }
  const small = '/bytes/1000?chunked=1'
  await get(gw, small)
  await get(gw, small)
  t.equal(seen('/bytes/1000'), 1, 'a small chunked body is stored (defaultTtl, no explicit expiry)')
})

t.test('purge by key, prefix and tag (admin API), and the PURGE method when the route allows it', async (t) => {
  const gw = await cachingGateway(t, { cache: { purge: true } })
  const paths = ['/cacheable/purge-a?tag=t1%20t2', '/cacheable/purge-b?tag=t2', '/cacheable/purge-c']
  const fill = async (): Promise<void> => void (await Promise.all(paths.map((path) => get(gw, path))))
  const purge = async (selector: unknown): Promise<{ status: number; body: { purged?: number; error?: string } }> => {
    const response = await request(`${gw.adminUrl}/cache/purge`, { method: 'POST', body: JSON.stringify(selector) })
    return { status: response.statusCode, body: (await response.body.json()) as { purged?: number } }
  }
  const upstreamCounts = (): number[] => paths.map((path) => seen(path.split('?')[0]!))
  await fill()
  t.same((await purge({ key: '/cacheable/purge-a?tag=t1%20t2' })).body, { ok: true, purged: 1 })
  await fill()
  t.same(upstreamCounts(), [2, 1, 1], 'by key: only that one was fetched again')
  t.same((await purge({ tag: 't2' })).body, { ok: true, purged: 2 })
  await fill()
  t.same(upstreamCounts(), [3, 2, 1], 'by tag')
  t.same((await purge({ prefix: '/cacheable/purge-' })).body, { ok: true, purged: 3 })
  await fill()
  t.same(upstreamCounts(), [4, 3, 2], 'by prefix')
  t.equal((await purge({ nothing: 1 })).status, 400)
  t.equal((await purge({ key: 'a', tag: 'b' })).status, 400)
  // Bodies that are not a selector at all: each refused with why, the cache untouched.
  const raw = async (body: string): Promise<{ status: number; error: unknown }> => {
    const response = await request(`${gw.adminUrl}/cache/purge`, { method: 'POST', body })
    return { status: response.statusCode, error: ((await response.body.json()) as { error?: unknown }).error }
  }
  t.same(await raw(''), { status: 400, error: 'expected a JSON object such as {"key": "/path"}, {"prefix": "/api/"} or {"tag": "product-42"}' }, 'empty')
  t.same(await raw('{"key": '), { status: 400, error: 'invalid JSON' }, 'malformed')
  t.same(await raw(JSON.stringify({ key: 'x'.repeat(20_000) })), { status: 413, error: 'body too large' }, 'oversized')
  t.equal((await request(`${gw.adminUrl}/cache/purge`)).statusCode, 405, 'GET is not a purge')
  await fill()
  t.same(upstreamCounts(), [4, 3, 2], 'nothing was purged by them')

  const purged = await get(gw, '/cacheable/purge-c', {}, 'PURGE')
  t.equal(purged.status, 200)
  t.equal((await get(gw, '/cacheable/purge-c', {}, 'PURGE')).status, 404, 'nothing left to purge')
  await get(gw, '/cacheable/purge-c')
  t.equal(seen('/cacheable/purge-c'), 3)

  const closed = await cachingGateway(t)
  await get(closed, '/cacheable/purge-d')
  await get(closed, '/cacheable/purge-d', {}, 'PURGE')
  await get(closed, '/cacheable/purge-d')
  t.equal(seen('/cacheable/purge-d'), 3, 'without `purge: true` PURGE goes upstream like any unsafe method, and its 200 invalidates (§4.4)')
})

t.test('a successful POST invalidates the stored GET of the same URI', async (t) => {
  const gw = await cachingGateway(t)
  await get(gw, '/cacheable/post-1')
  t.match((await get(gw, '/cacheable/post-1')).headers['cache-status'], /hit/)
  const post = await get(gw, '/cacheable/post-1', {}, 'POST')
  t.equal(post.status, 200)
  const after = await get(gw, '/cacheable/post-1')
  t.match(after.headers['cache-status'], /uri-miss/)
  t.equal(seen('/cacheable/post-1'), 3)
})

t.test('HEAD is answered from a stored GET', async (t) => {
  const gw = await cachingGateway(t)
  const full = await get(gw, '/cacheable/head-1')
  const head = await get(gw, '/cacheable/head-1', {}, 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.body, '')
  t.equal(head.headers['content-length'], String(Buffer.byteLength(full.body)))
  t.match(head.headers['cache-status'], /hit/)
  t.equal(seen('/cacheable/head-1'), 1)
})

t.test('request directives: no-cache revalidates, only-if-cached answers 504 on a miss, max-stale accepts stale', async (t) => {
  const gw = await cachingGateway(t)
  await get(gw, '/cacheable/req-1?cc=max-age=1')
  const noCache = await get(gw, '/cacheable/req-1?cc=max-age=1', { 'cache-control': 'no-cache' })
  t.match(noCache.headers['cache-status'], /fwd=request/)
  t.equal((await get(gw, '/cacheable/req-2', { 'cache-control': 'only-if-cached' })).status, 504)
  await sleep(1600)
  const stale = await get(gw, '/cacheable/req-1?cc=max-age=1', { 'cache-control': 'max-stale=60' })
  t.match(stale.headers['cache-status'], /detail=max-stale/)
  t.equal(seen('/cacheable/req-1'), 2)
})

t.test('stored entries survive a reload that leaves the cache config unchanged', async (t) => {
  const gw = await cachingGateway(t)
  await get(gw, '/cacheable/reload-1')
  writeFileSync(gw.configFile, catchAllConfig(stub.url, { policies: { ...CACHE, timeout: { request: '9s' } }, accessLog: false }))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  t.match((await get(gw, '/cacheable/reload-1')).headers['cache-status'], /hit/, 'kept')
  writeFileSync(gw.configFile, catchAllConfig(stub.url, { policies: { cache: { maxObjectSize: '32KiB' } }, accessLog: false }))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  t.match((await get(gw, '/cacheable/reload-1')).headers['cache-status'], /uri-miss/, 'a changed cache config starts empty')
  t.equal(seen('/cacheable/reload-1'), 2)
})

t.test('layer order: the rate limit sits before the cache, so a hit costs a token', async (t) => {
  const gw = await cachingGateway(t, { ...CACHE, rateLimit: { rate: 0.1, burst: 4, key: 'route' }, breaker: { minRequests: 2, failureRatio: 0.5, openFor: '30s' } })
  const path = '/cacheable/order-1?cc=max-age=60'
  t.match((await get(gw, path)).headers['cache-status'], /fwd=uri-miss; stored/)
  for (let i = 0; i < 2; i++) t.equal((await get(gw, '/status/503')).status, 503)
  const open = await get(gw, '/status/200')
  t.equal(open.status, 503, 'the breaker is open: an uncached request is refused')
  t.match(open.headers['x-waypost-reason'], /^breaker-open /)
  // That was the 4th token of the burst: the hit below is the 5th request, over the limit.
  const limited = await get(gw, path)
  t.equal(limited.status, 429, 'the rate limit sits before the cache: a hit costs a token too')
  t.equal(limited.headers['cache-status'], undefined)
  t.equal(seen('/cacheable/order-1'), 1)
})

t.test('an open breaker does not stop hits', async (t) => {
  const gw = await cachingGateway(t, { ...CACHE, breaker: { minRequests: 2, failureRatio: 0.5, openFor: '30s' } })
  const path = '/cacheable/order-2?cc=max-age=60'
  await get(gw, path)
  for (let i = 0; i < 2; i++) await get(gw, '/status/503')
  t.equal((await get(gw, '/status/200')).status, 503, 'the breaker is open')
  const hit = await get(gw, path)
  t.equal(hit.status, 200, 'the cache sits outside the breaker: a hit is served while it is open')
  t.match(hit.headers['cache-status'], /^waypost; hit/)
  t.equal(seen('/cacheable/order-2'), 1)
})

t.test('Surrogate-Control: directives for us win over Cache-Control and are not forwarded', async (t) => {
  const gw = await cachingGateway(t)
  const capability = await get(gw, '/cacheable/sc-0?vary=surrogate-capability')
  t.equal((JSON.parse(capability.body) as { varied: string }).varied, 'waypost="Surrogate/1.0"', 'the origin is told our device token')

  const fresh = '/cacheable/sc-1?cc=no-store&sc=max-age%3D60'
  const first = await get(gw, fresh)
  t.equal(first.headers['surrogate-control'], undefined, 'our directives are stripped')
  t.equal(first.headers['cache-control'], 'no-store', 'Cache-Control goes on for the caches after us')
  t.match((await get(gw, fresh)).headers['cache-status'], /^waypost; hit/)
  t.equal(seen('/cacheable/sc-1'), 1)

  const noStore = '/cacheable/sc-2?cc=max-age%3D60&sc=no-store%3Bwaypost'
  await get(gw, noStore)
  await get(gw, noStore)
  t.equal(seen('/cacheable/sc-2'), 2, 'no-store targeted at us: never stored')

  const theirs = '/cacheable/sc-3?cc=no-store&sc=max-age%3D60%3Bcdn'
  const forwarded = await get(gw, theirs)
  t.equal(forwarded.headers['surrogate-control'], 'max-age=60;cdn', "another device's directives pass through")
  await get(gw, theirs)
  t.equal(seen('/cacheable/sc-3'), 2, 'and Cache-Control decides for us')
})

t.test('the access log says what the cache did', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: CACHE }))
  t.teardown(() => gw.close())
  const path = '/cacheable/logged-1?cc=max-age=60'
  await get(gw, path)
  await get(gw, path)
  await get(gw, path, {}, 'POST')
  await get(gw, '/status/200', {}, 'POST')
  const results = gw.accessLines().map((line) => [line.method, line.path, line.cache])
  // The access log leaves the query string out.
  t.same(results, [
    ['GET', '/cacheable/logged-1', 'miss'],
    ['GET', '/cacheable/logged-1', 'hit'],
    ['POST', '/cacheable/logged-1', 'bypass'],
    ['POST', '/status/200', 'bypass'],
  ])
})

/** Raw HTTP/1.1, for what undici will not send (Connection-nominated headers, absolute-form targets); ends with Connection: close. */
function raw(gw: RunningGateway, head: string): Promise<string> {
  const { hostname, port } = new URL(gw.url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    let text = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => (text += chunk))
    socket.on('end', () => resolve(text))
    socket.on('error', reject)
    socket.write(head)
  })
}

t.test('Vary is matched on what went upstream: a header the client nominates in Connection cannot poison a variant', async (t) => {
  const gw = await cachingGateway(t)
  const host = new URL(gw.url).host
  const path = '/cacheable/v-poison?vary=accept-language'
  const poisoned = await raw(gw, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAccept-Language: fr\r\nConnection: close, accept-language\r\n\r\n`)
  t.match(poisoned, /"varied":null/, 'the upstream never saw Accept-Language')
  const french = await get(gw, path, { 'accept-language': 'fr' })
  t.notMatch(french.headers['cache-status'], /hit/, 'so that answer is not the French variant')
  t.equal((JSON.parse(french.body) as { varied: string }).varied, 'fr')
  t.match((await get(gw, path)).headers['cache-status'], /^waypost; hit/, 'it is the variant without the header')
  t.equal(seen('/cacheable/v-poison'), 2)
})

t.test("the key is the client's own target, also in absolute form on a rewriting route", async (t) => {
  const gw = await cachingGateway(t, CACHE, { rewrite: { pathPrefix: '/cacheable/' } })
  const host = new URL(gw.url).host
  const absolute = await raw(gw, `GET http://${host}/abs-1?cc=max-age%3D60 HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
  t.match(absolute, /^HTTP\/1\.1 200 /)
  t.match(absolute, /"key":"abs-1"/)
  const again = await get(gw, '/abs-1?cc=max-age%3D60')
  t.match(again.headers['cache-status'], /^waypost; hit/, 'origin form, same target: a hit')
  const collision = await get(gw, '/cacheable/abs-1?cc=max-age%3D60')
  t.notMatch(collision.headers['cache-status'], /hit/, 'a target spelled like the rewritten path is another resource')
  t.notMatch(collision.body, /"key":"abs-1"/)
})

t.test('a 304 that makes the entry private or per-user takes it out of the cache', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/r304-1?cc=max-age%3D0&etag=%22v1%22&cc304=private,max-age%3D60&cookie304=session%3Dalice'
  t.match((await get(gw, path)).headers['cache-status'], /stored/)
  const revalidated = await get(gw, path)
  t.match(revalidated.headers['cache-status'], /fwd-status=304/, 'this client gets its answer')
  const next = await get(gw, path)
  t.match(next.headers['cache-status'], /fwd=uri-miss/, 'the next client does not get it from the cache')
  t.equal(next.headers['set-cookie'], undefined, "and never sees the other client's cookie")
  t.equal(seen('/cacheable/r304-1'), 3)
})

t.test('requests cannot evict entries: no-store, Authorization and HEAD leave the stored GET alone', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/evict-1?cc=max-age%3D60'
  await get(gw, path)
  await get(gw, path, { 'cache-control': 'no-cache, no-store' })
  await get(gw, path, { 'cache-control': 'no-cache', authorization: 'Bearer x' })
  t.match((await get(gw, path)).headers['cache-status'], /^waypost; hit/)
  // max-age 2: Date has whole seconds, so a stored answer may start up to 1 s old.
  const swr = '/cacheable/evict-2?cc=max-age%3D2,stale-while-revalidate%3D60'
  await get(gw, swr)
  await sleep(2100)
  t.match((await get(gw, swr, {}, 'HEAD')).headers['cache-status'], /stale-while-revalidate/)
  // Until the background refresh is stored, HEADs get the stale entry (and start no second refresh).
  for (let waited = 0; waited < 5000; waited += 50) {
    if (/^waypost; hit/.test(String((await get(gw, swr, {}, 'HEAD')).headers['cache-status']))) break
    await sleep(50)
  }
  const after = await get(gw, swr)
  t.match(after.headers['cache-status'], /^waypost; hit/, 'the HEAD refreshed the entry with a GET in the background')
  t.ok(generation(after) >= 1, 'with the refreshed answer')
})

t.test('waiters are let go as soon as the leader answer turns out too big to keep, whatever its client reads', async (t) => {
  // Chunked, so its size is known only once it passes maxObjectSize; storable thanks to defaultTtl.
  const gw = await cachingGateway(t, { cache: { maxObjectSize: '64KiB', defaultTtl: '60s' } })
  const size = 8 * 1024 * 1024 // far more than the sockets between here and the stub can buffer
  const url = `${gw.url}/bytes/${size}?chunked=1`
  const leader = await request(url)
  t.equal(leader.statusCode, 200)
  const started = performance.now()
  const waiter = await request(url, { headersTimeout: 3000, bodyTimeout: 3000 })
  let bytes = 0
  for await (const chunk of waiter.body) bytes += (chunk as Buffer).length
  t.equal(bytes, size, 'the waiter got the whole body from the upstream')
  t.ok(performance.now() - started < 2500, 'without waiting for the leader, whose client has not read a byte')
  await leader.body.dump()
})

t.test('a 304 that adds headers replaces the entry, and the stored bytes count them', async (t) => {
  const gw = await cachingGateway(t)
  const storedBytes = async (): Promise<number> => {
    const metrics = await metricsText(gw)
    return Number(/waypost_cache_stored_bytes\{route="all"\} (\d+)/.exec(metrics)![1])
  }
  const longer = `max-age=60, stale-if-error=600, ${'x'.repeat(400)}`
  const path = `/cacheable/r304-size?cc=max-age%3D0&etag=%22v1%22&cc304=${encodeURIComponent(longer)}`
  await get(gw, path)
  const before = await storedBytes()
  t.match((await get(gw, path)).headers['cache-status'], /fwd-status=304/)
  t.ok((await storedBytes()) >= before + 400, 'the longer Cache-Control is counted')
  const hit = await get(gw, path)
  t.match(hit.headers['cache-status'], /^waypost; hit/, 'the refreshed entry is fresh and served')
  t.equal(hit.headers['cache-control'], longer)
})

t.test('copies being made share a budget of maxSize: one over it streams through unstored', async (t) => {
  // An upstream that sends 40 KiB of each body, then (while holding) waits to be told to finish.
  const finishers = new Map<string, () => void>()
  let holding = true
  const upstream = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'application/octet-stream' }) // chunked: size unknown up front
    response.write(Buffer.alloc(40 * 1024, 0x61))
    if (holding) finishers.set(request.url!, () => response.end('end'))
    else response.end('end')
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => upstream.close())
  const gw = await startGateway(catchAllConfig(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, { policies: { cache: { maxSize: '100KiB', maxObjectSize: '64KiB', defaultTtl: '60s' } }, accessLog: false }))
  t.teardown(() => gw.close())

  // Three misses at once, each holding a 40 KiB copy: the third would take the copies past 100 KiB.
  const bodies = []
  for (const path of ['/held/1', '/held/2', '/held/3']) {
    const response = await request(`${gw.url}${path}`)
    const chunks: Buffer[] = []
    let received = 0
    const iterator = response.body[Symbol.asyncIterator]()
    while (received < 40 * 1024) {
      const { value } = (await iterator.next()) as { value: Buffer }
      chunks.push(value)
      received += value.length
    }
    bodies.push({ path, iterator, chunks })
  }
  // Finished in order, so that without the budget storing the third would evict the first.
  for (const { path, iterator, chunks } of bodies) {
    finishers.get(path)!()
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) chunks.push(next.value as Buffer)
    t.equal(Buffer.concat(chunks).length, 40 * 1024 + 3, `${path}: whole to its client`)
  }

  holding = false
  t.match((await get(gw, '/held/1')).headers['cache-status'], /^waypost; hit/, 'the first copy was stored')
  t.match((await get(gw, '/held/2')).headers['cache-status'], /^waypost; hit/, 'the second copy was stored')
  t.match((await get(gw, '/held/3')).headers['cache-status'], /fwd=uri-miss/, 'the third was not: it went over the budget')
})

/** `header=Name: value` parameters for the stub's /cacheable. */
function headerParams(...lines: string[]): string {
  return lines.map((line) => `header=${encodeURIComponent(line)}`).join('&')
}

t.test('Age (RFC 9111 §5.1): an invalid value is ignored, and of several the first counts', async (t) => {
  const gw = await cachingGateway(t)
  // Each stored with max-age=3600: an Age taken for 7200 makes it stale at once, an ignored one leaves it fresh.
  const cases: Array<[string, string[], boolean]> = [
    ['age-abc', ['Age: abc'], true],
    ['age-negative', ['Age: -7200'], true],
    ['age-float', ['Age: 7200.0'], true],
    ['age-parameter', ['Age: 7200;foo=bar'], true],
    ['age-list-0-old', ['Age: 0, 7200'], true],
    ['age-lines-0-old', ['Age: 0', 'Age: 7200'], true],
    ['age-list-old-0', ['Age: 7200, 0'], false],
    ['age-lines-old-0', ['Age: 7200', 'Age: 0'], false],
  ]
  for (const [key, lines, fresh] of cases) {
    const path = `/cacheable/${key}?cc=max-age=3600&${headerParams(...lines)}`
    await get(gw, path)
    const second = await get(gw, path)
    if (fresh) {
      t.match(second.headers['cache-status'], /^waypost; hit/, `${lines.join(' / ')}: fresh`)
      t.ok(Number(second.headers.age) < 5, `${lines.join(' / ')}: the hit's Age is ours (${String(second.headers.age)})`)
    } else t.equal(generation(second), 1, `${lines.join(' / ')}: 7200 s old, stale at once`)
  }
})

t.test('Expires, Date and If-Modified-Since are read as HTTP-dates only (RFC 9110 §5.6.7)', async (t) => {
  const gw = await cachingGateway(t)
  // No Cache-Control: Expires alone decides. A valid one far ahead keeps it; any other format is already expired.
  const expiresCases: Array<[string, boolean]> = [
    ['Thu, 18 Aug 2050 02:01:18 GMT', true],
    ['Thursday, 18-Aug-50 02:01:18 GMT', true],
    ['Thu Aug 18 02:01:18 2050', true],
    ['Thu, 18 Aug 2050 02:01:18 UTC', false],
    ['Thu 18 Aug 2050 02:01:18 GMT', false],
    ['Thu, 18  Aug  2050 02:01:18 GMT', false],
    ['Thu, 18-Aug-2050 02:01:18 GMT', false],
    ['Thu, 18 Aug 2050 2:01:18 GMT', false],
  ]
  for (const [index, [expires, valid]] of expiresCases.entries()) {
    const path = `/cacheable/expires-${index}?cc=&${headerParams(`Expires: ${expires}`)}`
    await get(gw, path)
    const second = await get(gw, path)
    if (valid) t.match(second.headers['cache-status'], /^waypost; hit/, `Expires: ${expires} is a date in 2050`)
    else t.equal(generation(second), 1, `Expires: ${expires} is invalid: already expired, not stored`)
  }

  // A Date in another format is no date at all: no apparent age from it.
  const dated = `/cacheable/date-utc?cc=max-age=60&${headerParams('Date: Mon, 01 Jan 2001 00:00:00 UTC')}`
  await get(gw, dated)
  t.match((await get(gw, dated)).headers['cache-status'], /^waypost; hit/, 'a Date with UTC is ignored, not read as 2001')

  // If-Modified-Since in another format is ignored: the full answer, not a 304.
  const modified = `/cacheable/ims-1?cc=max-age=60&lastModified=${encodeURIComponent('Mon, 01 Jan 2001 00:00:00 GMT')}`
  await get(gw, modified)
  t.equal((await get(gw, modified, { 'if-modified-since': 'Thu, 18 Aug 2050 02:01:18 GMT' })).status, 304)
  t.equal((await get(gw, modified, { 'if-modified-since': 'Thu, 18 Aug 2050 02:01:18 UTC' })).status, 200, 'UTC is not GMT')
  t.equal((await get(gw, modified, { 'if-modified-since': '2050-08-18T02:01:18Z' })).status, 200)
})

t.test('CDN-Cache-Control (RFC 9213) decides for this cache over Cache-Control and Expires, and stops here', async (t) => {
  const gw = await cachingGateway(t)
  const cdn = (value: string): string => headerParams(`CDN-Cache-Control: ${value}`)

  const fresh = `/cacheable/cdn-1?cc=no-store&${cdn('max-age=600')}`
  const first = await get(gw, fresh)
  t.equal(first.headers['cdn-cache-control'], undefined, 'it is for us: not forwarded')
  t.equal(first.headers['cache-control'], 'no-store', 'Cache-Control goes on for the caches after us')
  const hit = await get(gw, fresh)
  t.match(hit.headers['cache-status'], /^waypost; hit; ttl=59\d$/, 'stored for its max-age, not refused for no-store')
  t.equal(hit.headers['cdn-cache-control'], undefined, 'nor on a hit')
  t.equal(seen('/cacheable/cdn-1'), 1)

  const noStore = `/cacheable/cdn-2?cc=max-age=600&${cdn('no-store')}`
  await get(gw, noStore)
  await get(gw, noStore)
  t.equal(seen('/cacheable/cdn-2'), 2, 'no-store in it: never stored, whatever Cache-Control says')

  // No max-age in it and nothing to revalidate with: Expires would have kept it, but is ignored.
  const expires = `/cacheable/cdn-3?cc=&${cdn('must-revalidate')}&${headerParams('Expires: Thu, 18 Aug 2050 02:01:18 GMT')}`
  await get(gw, expires)
  await get(gw, expires)
  t.equal(seen('/cacheable/cdn-3'), 2, 'Expires is ignored when it decides')

  const invalid = `/cacheable/cdn-4?cc=max-age=600&${cdn('Max-Age=5, no-store')}`
  const kept = await get(gw, invalid)
  t.equal(kept.headers['cdn-cache-control'], undefined, 'still ours by name: not forwarded')
  t.match((await get(gw, invalid)).headers['cache-status'], /^waypost; hit/, 'invalid (an upper-case key): ignored, Cache-Control decides')

  const surrogate = `/cacheable/cdn-5?cc=no-store&sc=no-store&${cdn('max-age=600')}`
  await get(gw, surrogate)
  t.match((await get(gw, surrogate)).headers['cache-status'], /^waypost; hit/, 'over Surrogate-Control too')
})

t.test('targetedHeader names another field: CDN-Cache-Control passes through and changes nothing here', async (t) => {
  const gw = await cachingGateway(t, { cache: { targetedHeader: 'Waypost-Cache-Control' } })
  const path = `/cacheable/cdn-own-1?cc=no-store&${headerParams('CDN-Cache-Control: max-age=600')}`
  const first = await get(gw, path)
  t.equal(first.headers['cdn-cache-control'], 'max-age=600', 'for the CDN in front of us')
  await get(gw, path)
  t.equal(seen('/cacheable/cdn-own-1'), 2, 'Cache-Control decides: no-store')

  const own = `/cacheable/cdn-own-2?cc=no-store&${headerParams('Waypost-Cache-Control: max-age=600', 'CDN-Cache-Control: no-store')}`
  const answer = await get(gw, own)
  t.equal(answer.headers['waypost-cache-control'], undefined, 'our own field stops here')
  t.equal(answer.headers['cdn-cache-control'], 'no-store')
  t.match((await get(gw, own)).headers['cache-status'], /^waypost; hit/)
  t.equal(seen('/cacheable/cdn-own-2'), 1)
})

interface InterimAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  interim: Array<{ statusCode: number; headers: Record<string, string | string[] | undefined> }>
}

/** A GET with node:http's client, which reports each 1xx it reads as an 'information' event. */
function getWithInterim(gw: RunningGateway, path: string): Promise<InterimAnswer> {
  return new Promise((resolve, reject) => {
    const interim: InterimAnswer['interim'] = []
    const req = httpGet(gw.url + path, { agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, interim }))
      res.on('error', reject)
    })
    req.on('information', (info) => interim.push({ statusCode: info.statusCode, headers: info.headers }))
    req.on('error', reject)
  })
}

/** The raw bytes of one HTTP/1.0 exchange (the gateway closes the connection after it). */
function rawHttp10(gw: RunningGateway, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(gw.url)
    const socket = connect(Number(port), hostname, () => socket.write(`GET ${path} HTTP/1.0\r\nHost: ${hostname}\r\n\r\n`))
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.on('error', reject)
  })
}

t.test('interim responses (102, 103 Early Hints) reach the client and are never stored', async (t) => {
  const hints = `processing=1&hint=${encodeURIComponent('</a.css>; rel=preload; as=style')}&hint=${encodeURIComponent('</b.js>; rel=preload; as=script')}`
  for (const [name, policies] of [['with the cache', CACHE], ['without it', {}]] as const) {
    const gw = await cachingGateway(t, policies)
    const path = `/cacheable/interim-${name === 'without it' ? 'plain' : 'cached'}?cc=max-age=600&${hints}`
    const first = await getWithInterim(gw, path)
    t.equal(first.status, 200, name)
    t.match(first.interim, [{ statusCode: 102 }, { statusCode: 103, headers: { link: '</a.css>; rel=preload; as=style', via: '1.1 waypost' } }, { statusCode: 103, headers: { link: '</b.js>; rel=preload; as=script' } }], `${name}: each 1xx, in order`)
    t.equal(first.interim.length, 3)
    t.equal(first.headers.link, undefined, `${name}: the hints stay in the 103s`)
    t.ok(!(await rawHttp10(gw, path)).includes(' 103 '), `${name}: never to an HTTP/1.0 client (RFC 9110 §15.2)`)
  }
  const gw = await cachingGateway(t)
  const path = `/cacheable/interim-stored?cc=max-age=600&${hints}`
  t.equal((await getWithInterim(gw, path)).interim.length, 3)
  const hit = await getWithInterim(gw, path)
  t.match(hit.headers['cache-status'], /^waypost; hit/)
  t.same(hit.interim, [], 'a hit has none: they were not stored')
  t.equal(hit.headers.link, undefined, 'nor merged into the stored response')
})

t.test('Vary: Accept-Language matches requests that differ only in case, spacing or weight order', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/vary-lang-1?vary=Accept-Language'
  const first = await get(gw, path, { 'accept-language': 'en-US, fr;q=0.5' })
  const same = await get(gw, path, { 'accept-language': 'FR ; q=0.50,en-us' })
  t.match(same.headers['cache-status'], /^waypost; hit/, 'the same preferences, written otherwise')
  t.equal(same.body, first.body)
  const other = await get(gw, path, { 'accept-language': 'fr, en-US;q=0.5' })
  t.match(other.headers['cache-status'], /fwd=vary-miss/, 'other preferences: another variant')
  t.equal(seen('/cacheable/vary-lang-1'), 2)
})

t.test('If-Modified-Since against a stored response without Last-Modified compares its Date (RFC 9110 §13.1.3)', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/ims-date-1?cc=max-age=600'
  const stored = await get(gw, path)
  const date = String(stored.headers.date)
  t.equal(stored.headers['last-modified'], undefined)
  t.equal((await get(gw, path, { 'if-modified-since': date })).status, 304, 'Date is not later than the IMS date: 304')
  t.equal((await get(gw, path, { 'if-modified-since': new Date(Date.parse(date) + 60_000).toUTCString() })).status, 304)
  t.equal((await get(gw, path, { 'if-modified-since': new Date(Date.parse(date) - 60_000).toUTCString() })).status, 200, 'an earlier IMS date: the full answer')
  t.equal(seen('/cacheable/ims-date-1'), 1)
})

t.test('range requests are answered from a complete stored response: 206, 416, If-Range (RFC 9110 §14)', async (t) => {
  const gw = await cachingGateway(t)
  const path = '/cacheable/range-1?bytes=1000&etag=%22r1%22&cc=max-age=600'
  const pattern = (start: number, end: number): Buffer => Buffer.from(Array.from({ length: end - start + 1 }, (_, i) => (start + i) % 256))
  const fetchBytes = async (headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET'): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> => {
    const response = await request(`${gw.url}${path}`, { method, headers })
    return { status: response.statusCode, headers: response.headers, body: Buffer.from(await response.body.arrayBuffer()) }
  }
  t.equal((await fetchBytes({})).body.length, 1000, 'stored whole')

  const first = await fetchBytes({ range: 'bytes=0-9' })
  t.equal(first.status, 206)
  t.equal(first.headers['content-range'], 'bytes 0-9/1000')
  t.equal(first.headers['content-length'], '10')
  t.same(first.body, pattern(0, 9))
  t.match(first.headers['cache-status'], /^waypost; hit/)

  const suffix = await fetchBytes({ range: 'bytes=-5' })
  t.equal(suffix.headers['content-range'], 'bytes 995-999/1000')
  t.same(suffix.body, pattern(995, 999))
  const open = await fetchBytes({ range: 'bytes=990-' })
  t.same(open.body, pattern(990, 999))

  const unsatisfiable = await fetchBytes({ range: 'bytes=2000-' })
  t.equal(unsatisfiable.status, 416)
  t.equal(unsatisfiable.headers['content-range'], 'bytes */1000')
  t.equal(unsatisfiable.body.length, 0)

  const several = await fetchBytes({ range: 'bytes=0-1,5-6' })
  t.equal(several.status, 200, 'several ranges: the whole response')
  t.equal(several.body.length, 1000)

  t.equal((await fetchBytes({ range: 'bytes=0-9', 'if-range': '"r1"' })).status, 206, 'If-Range with the stored ETag: the range')
  const changed = await fetchBytes({ range: 'bytes=0-9', 'if-range': '"r0"' })
  t.equal(changed.status, 200, 'If-Range with another ETag: the whole response')
  t.equal(changed.body.length, 1000)
  t.equal((await fetchBytes({ range: 'bytes=0-9', 'if-range': 'W/"r1"' })).status, 200, 'a weak tag never matches')

  const head = await fetchBytes({ range: 'bytes=0-9' }, 'HEAD')
  t.equal(head.status, 200, 'HEAD: Range is for GET only')
  t.equal(head.headers['content-length'], '1000')
  t.equal(seen('/cacheable/range-1'), 1, 'all from the one stored response')
})
