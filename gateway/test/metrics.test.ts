// GET /metrics end to end: a real gateway in front of the stub, traffic through every policy, and
// the scrape read as Prometheus reads it: promtool accepts it, a real Prometheus parses its
// OpenMetrics form, requests no route took are counted, series exist from the first config, the
// cache's results add up to its requests, and each upstream attempt's latency is there.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import YAML from 'yaml'
import { startStub } from '../../upstream-stub/src/stub.js'
import { commandInstalled as installed, freePort, freePorts, metricsText, promtoolCheck as check, sleep, startGateway } from './helpers.js'

const promtool = installed('promtool')
const prometheus = installed('prometheus')
const NO_PROMTOOL = 'promtool is not installed (Debian package prometheus: apt-get install prometheus)'

const stub = await startStub()
/** Nothing listens here: the upstream `down` refuses every connection. */
const closedPort = await freePort()
/** Every request path of the stub that the tests use; `writes` takes POST and PUT, `guarded` the rest. */
const STUB_PATHS = '^/(status|cacheable|anything|delay|fault)/'

const config = YAML.stringify({
  listen: { address: '127.0.0.1:0' },
  admin: { address: '127.0.0.1:0' },
  drain: { delay: '0s', timeout: '5s' },
  upstreams: {
    app: { url: stub.url, outlierDetection: { consecutive5xx: 1000 } },
    down: { url: `http://127.0.0.1:${closedPort}` },
  },
  routes: [
    {
      name: 'guarded',
      match: { path: { regex: STUB_PATHS } },
      upstream: 'app',
      policies: {
        timeout: { request: '2s', perTry: '300ms' },
        rateLimit: { rate: 1000, burst: 1000 },
        cache: { purge: true },
        // Only requests carrying x-fault from loopback are aborted.
        fault: { header: 'x-fault', from: ['127.0.0.1/32'], abort: { percent: 100, status: 503 } },
        concurrency: { max: 50, queue: 10 },
        adaptiveConcurrency: { initialLimit: 50 },
        breaker: { failureRatio: 0.9, window: '10s', minRequests: 100, openFor: '5s', halfOpenProbes: 1 },
        retry: { attempts: 2 },
      },
    },
    { name: 'writes', match: { path: { regex: STUB_PATHS }, methods: ['POST', 'PUT'] }, upstream: 'app' },
    { name: 'broken', match: { path: { prefix: '/broken/' } }, upstream: 'down', policies: { retry: { attempts: 2 } } },
  ],
})
const gw = await startGateway(config)
t.teardown(async () => {
  await gw.close()
  await stub.close()
})

/** The value of one series (`name{labels}` exactly as printed), undefined when absent. */
function series(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.slice(name.length + 1))
}

/** The sum of every series of a family whose labels include all of `labels`. */
function sum(text: string, family: string, labels: Record<string, string> = {}): number {
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${family}{`) && !line.startsWith(`${family} `)) continue
    if (Object.entries(labels).every(([name, value]) => line.includes(`${name}="${value}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return total
}

async function send(path: string, options: { method?: 'GET' | 'HEAD' | 'POST' | 'DELETE'; headers?: Record<string, string> } = {}): Promise<number> {
  const response = await request(`${gw.url}${path}`, { method: options.method ?? 'GET', headers: options.headers })
  await response.body.dump()
  return response.statusCode
}

/** Writes raw bytes on a new connection and returns what came back before the gateway closed it. */
function raw(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(gw.url).port), '127.0.0.1')
    let answer = ''
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')))
    socket.on('error', reject)
    socket.on('close', () => resolve(answer))
    socket.write(bytes)
  })
}


t.test('every series a route, a policy and an upstream can have exists from the first config, at 0', async (t) => {
  // Before any request at all.
  const text = await metricsText(gw)
  for (const statusClass of ['1xx', '2xx', '3xx', '4xx', '5xx']) {
    t.equal(series(text, `waypost_requests_total{route="guarded",method="GET",status_class="${statusClass}"}`), 0, `guarded GET ${statusClass}`)
    t.equal(series(text, `waypost_requests_total{route="broken",method="GET",status_class="${statusClass}"}`), 0, `broken GET ${statusClass}`)
    // A route that matches methods has their series instead of GET's.
    t.equal(series(text, `waypost_requests_total{route="writes",method="POST",status_class="${statusClass}"}`), 0, `writes POST ${statusClass}`)
    t.equal(series(text, `waypost_requests_total{route="writes",method="PUT",status_class="${statusClass}"}`), 0, `writes PUT ${statusClass}`)
    t.equal(series(text, `waypost_requests_total{route="-",method="GET",status_class="${statusClass}"}`), 0, `unrouted GET ${statusClass}`)
  }
  t.equal(series(text, 'waypost_requests_total{route="writes",method="GET",status_class="2xx"}'), undefined, 'no GET series on a POST/PUT route')
  for (const route of ['guarded', 'writes', 'broken', '-']) {
    t.equal(series(text, `waypost_request_duration_seconds_count{route="${route}"}`), 0, `duration histogram of ${route}`)
    t.equal(series(text, `waypost_requests_in_flight{route="${route}"}`), 0, `in flight on ${route}`)
  }
  // The local answers each route's policies can make; before routing, the refusals.
  const guardedReasons = ['timeout', 'attempt-timeout', 'rate-limited', 'cache-only-if-cached', 'cache-purged', 'cache-not-found', 'purge-refused', 'fault-abort', 'concurrency-limit', 'concurrency-queue-timeout', 'adaptive-concurrency-limit', 'breaker-open']
  for (const reason of guardedReasons) t.equal(series(text, `waypost_local_responses_total{route="guarded",reason="${reason}"}`), 0, `guarded ${reason}`)
  for (const reason of ['no-route', 'invalid-request-target', 'invalid-host', 'malformed-request', 'headers-too-large', 'http-version-not-supported', 'transfer-encoding-on-http-1.0', 'unsupported-transfer-encoding']) {
    t.equal(series(text, `waypost_local_responses_total{route="-",reason="${reason}"}`), 0, `unrouted ${reason}`)
  }
  for (const result of ['hit', 'stale-while-revalidate', 'stale-if-error', 'max-stale', 'revalidated', 'miss', 'bypass']) {
    t.equal(series(text, `waypost_cache_requests_total{route="guarded",result="${result}"}`), 0, `cache ${result}`)
  }
  t.equal(series(text, 'waypost_cache_requests_total{route="writes",result="miss"}'), undefined, 'no cache series on a route without a cache')
  t.equal(series(text, 'waypost_config_reload_total{result="failure"}'), 0, 'reload failures, so that increase() sees the first')
  t.equal(series(text, 'waypost_rate_limit_total{route="guarded",result="allowed"}'), 0)
  t.equal(series(text, 'waypost_rate_limit_total{route="guarded",result="limited"}'), 0)
  t.equal(series(text, 'waypost_faults_injected_total{route="guarded",kind="abort"}'), 0)
  t.equal(series(text, 'waypost_breaker_rejections_total{route="guarded",upstream="app"}'), 0)
  t.equal(series(text, 'waypost_retry_budget_exhausted_total{route="broken"}'), 0)
  t.equal(series(text, 'waypost_upstream_attempts_total{route="broken",outcome="5xx"}'), 0)
  t.equal(series(text, 'waypost_upstream_ejections_total{upstream="app"}'), 0)
  t.equal(series(text, 'waypost_upstream_panic_total{upstream="down"}'), 0)
  for (const to of ['open', 'half-open', 'closed']) t.equal(series(text, `waypost_breaker_transitions_total{route="guarded",upstream="app",to="${to}"}`), 0, `breaker transitions to ${to}`)
  t.equal(series(text, 'waypost_cache_entries{route="guarded"}'), 0)
  t.equal(series(text, 'waypost_cache_stored_bytes{route="guarded"}'), 0)
  t.equal(series(text, `waypost_upstream_endpoint_in_flight{upstream="app",endpoint="${new URL(stub.url).origin}"}`), 0)
  t.equal(series(text, 'waypost_config_last_reload_successful'), 1)
  t.match(text, /^waypost_config_info\{version="1",hash="[0-9a-f]{16}",source="startup"\} 1$/m, 'the plan in force, as an info metric')
})

t.test('promtool check metrics accepts a scrape taken after traffic through every policy', { skip: promtool ? false : NO_PROMTOOL }, async (t) => {
  t.equal(await send('/cacheable/lint?cc=max-age=60'), 200)
  t.equal(await send('/cacheable/lint?cc=max-age=60'), 200, 'a hit')
  t.equal(await send('/status/503'), 503, 'retried, then the 503')
  t.equal(await send('/status/200', { headers: { 'x-fault': '1' } }), 503, 'a fault abort')
  t.equal(await send('/anything/lint', { method: 'POST' }), 200)
  t.equal(await send('/broken/lint'), 502, 'connection refused, twice')
  t.equal(await send('/nowhere'), 404)
  const text = await metricsText(gw)
  t.match(text, /waypost_adaptive_concurrency_limit\{route="guarded"\}/, 'the scrape has every policy\'s series')
  t.match(text, /waypost_breaker_state\{route="guarded",upstream="app"\} 0/)
  const { code, output } = await check(text)
  t.equal(output, '', 'promtool prints nothing')
  t.equal(code, 0)
  t.notMatch(text, /^nodejs_active_(handles|requests|resources)_total/m, 'prom-client\'s gauges named *_total are gone')
  t.match(text, /^nodejs_active_handles\{type="[^"]+"\} \d+/m, 'their per-type gauges stay')
})

t.test('requests no route took, or refused before routing, are counted under route="-"', async (t) => {
  const before = await metricsText(gw)
  t.equal(await send('/nowhere'), 404)
  t.equal(await send('/nowhere', { method: 'HEAD' }), 404)
  t.match(await raw('GET /anything/%zz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n'), /^HTTP\/1\.1 400 .*x-waypost-reason: invalid-request-target/s)
  t.match(await raw('GET /status/200 HTTP/1.1\r\nhost: a/b\r\nconnection: close\r\n\r\n'), /^HTTP\/1\.1 400 .*x-waypost-reason: invalid-host/s)
  t.match(await raw('POST /anything/x HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n'), /^HTTP\/1\.1 400 .*x-waypost-reason: transfer-encoding-on-http-1.0/s)
  t.match(await raw('NOT A REQUEST\r\n\r\n'), /^HTTP\/1\.1 400 .*x-waypost-reason: malformed-request/s)
  t.match(await raw('GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n'), /^HTTP\/1\.1 404 .*x-waypost-reason: no-route/s, 'an upgrade to no route')
  const after = await metricsText(gw)
  const delta = (name: string): number => (series(after, name) ?? 0) - (series(before, name) ?? 0)
  t.equal(delta('waypost_requests_total{route="-",method="GET",status_class="4xx"}'), 4, '404 ×2 (one an upgrade), bad target, bad host')
  t.equal(delta('waypost_requests_total{route="-",method="HEAD",status_class="4xx"}'), 1)
  t.equal(delta('waypost_requests_total{route="-",method="POST",status_class="4xx"}'), 1, 'Transfer-Encoding on HTTP/1.0')
  t.equal(delta('waypost_requests_total{route="-",method="OTHER",status_class="4xx"}'), 1, 'the malformed request: no method is known')
  t.equal(delta('waypost_local_responses_total{route="-",reason="no-route"}'), 3)
  t.equal(delta('waypost_local_responses_total{route="-",reason="invalid-request-target"}'), 1)
  t.equal(delta('waypost_local_responses_total{route="-",reason="invalid-host"}'), 1)
  t.equal(delta('waypost_local_responses_total{route="-",reason="transfer-encoding-on-http-1.0"}'), 1)
  t.equal(delta('waypost_local_responses_total{route="-",reason="malformed-request"}'), 1)
  t.equal(delta('waypost_request_duration_seconds_count{route="-"}'), 6, 'every refusal but the malformed one, whose start is unknown')
  t.equal(series(after, 'waypost_requests_in_flight{route="-"}'), 0)
})

t.test('the cache\'s results add up to the GET and HEAD requests of its route, stale ones by why', async (t) => {
  const before = await metricsText(gw)
  const result = async (path: string, expected: number, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' | 'DELETE' = 'GET') => t.equal(await send(path, { method, headers }), expected, `${method} ${path}`)
  // A hit.
  await result('/cacheable/sum-hit?cc=max-age=60', 200)
  await result('/cacheable/sum-hit?cc=max-age=60', 200)
  // Stale at once, served while refreshed in the background.
  await result('/cacheable/sum-swr?cc=max-age=0,stale-while-revalidate=60', 200)
  await sleep(20)
  await result('/cacheable/sum-swr?cc=max-age=0,stale-while-revalidate=60', 200)
  // Stale, and the upstream answers 503 (twice: retry): the stale copy instead.
  await result('/cacheable/sum-sie?cc=max-age=0,stale-if-error=60&codes=200,503', 200)
  await sleep(20)
  await result('/cacheable/sum-sie?cc=max-age=0,stale-if-error=60&codes=200,503', 200)
  // Stale, accepted by the client.
  await result('/cacheable/sum-maxstale?cc=max-age=0&etag=%22m%22', 200)
  await sleep(20)
  await result('/cacheable/sum-maxstale?cc=max-age=0&etag=%22m%22', 200, { 'cache-control': 'max-stale=60' })
  // Stale, refreshed by a 304.
  await result('/cacheable/sum-reval?cc=max-age=0&etag=%22r%22', 200)
  await sleep(20)
  await result('/cacheable/sum-reval?cc=max-age=0&etag=%22r%22', 200)
  // Misses that end without an upstream answer: resets (retried once), per-try timeouts, only-if-cached.
  await result('/fault/reset-before-headers', 502)
  await result('/fault/hang', 504)
  await result('/cacheable/sum-only', 504, { 'cache-control': 'only-if-cached' })
  // A HEAD miss, and a DELETE that bypasses.
  await result('/cacheable/sum-head?cc=max-age=60', 200, {}, 'HEAD')
  await result('/anything/sum-delete', 200, {}, 'DELETE')
  const after = await metricsText(gw)
  const delta = (labels: Record<string, string>, family = 'waypost_cache_requests_total'): number => sum(after, family, labels) - sum(before, family, labels)
  const results = Object.fromEntries(['hit', 'stale-while-revalidate', 'stale-if-error', 'max-stale', 'revalidated', 'miss', 'bypass'].map((name) => [name, delta({ route: 'guarded', result: name })]))
  t.same(results, { 'hit': 1, 'stale-while-revalidate': 1, 'stale-if-error': 1, 'max-stale': 1, 'revalidated': 1, 'miss': 9, 'bypass': 1 })
  const requests = delta({ route: 'guarded' }, 'waypost_requests_total')
  t.equal(requests, 15)
  t.equal(delta({ route: 'guarded' }), requests, 'one result per request: they add up')
})

t.test('each upstream attempt\'s latency, by upstream and outcome', async (t) => {
  const before = await metricsText(gw)
  t.equal(await send('/status/503', { method: 'POST' }), 503, 'one attempt (writes has no retry)')
  t.equal(await send('/delay/0.3', { method: 'POST' }), 200)
  t.equal(await send('/broken/x'), 502, 'two refused attempts')
  const after = await metricsText(gw)
  const delta = (name: string): number => (series(after, name) ?? 0) - (series(before, name) ?? 0)
  const family = 'waypost_upstream_attempt_duration_seconds'
  t.equal(delta(`${family}_count{upstream="app",outcome="5xx"}`), 1)
  t.equal(delta(`${family}_count{upstream="app",outcome="2xx"}`), 1)
  t.equal(delta(`${family}_bucket{le="0.25",upstream="app",outcome="2xx"}`), 0, 'the 300 ms attempt is above 0.25 s')
  t.equal(delta(`${family}_bucket{le="0.5",upstream="app",outcome="2xx"}`), 1)
  const slow = delta(`${family}_sum{upstream="app",outcome="2xx"}`)
  t.ok(slow >= 0.3 && slow < 0.5, `the sum grew by the attempt's time (${slow} s)`)
  t.equal(delta(`${family}_count{upstream="down",outcome="failed"}`), 2)
  t.equal(series(after, `${family}_count{upstream="down",outcome="2xx"}`), undefined, 'an outcome\'s series comes with its first attempt')
})

t.test('per-endpoint attempt series for a short static list only: none for DNS endpoints or beyond the cap', async (t) => {
  const refusing = await freePorts(2)
  const capped = Array.from({ length: 17 }, (_, i) => ({ url: `http://127.0.0.${i + 2}:${closedPort}` }))
  const small = await startGateway(
    YAML.stringify({
      listen: { address: '127.0.0.1:0' },
      admin: { address: '127.0.0.1:0' },
      drain: { delay: '0s', timeout: '5s' },
      upstreams: {
        pair: { endpoints: [{ url: stub.url }, { url: `http://127.0.0.1:${refusing[0]}`, priority: 1 }] },
        named: { dns: { name: 'localhost', port: Number(new URL(stub.url).port), family: 4 } },
        many: { endpoints: capped },
      },
      routes: [
        { name: 'pair', match: { path: { prefix: '/pair/' } }, upstream: 'pair', rewrite: { pathPrefix: '/status/' } },
        { name: 'named', match: { path: { prefix: '/named/' } }, upstream: 'named', rewrite: { pathPrefix: '/status/' } },
        { name: 'many', match: { path: { prefix: '/many/' } }, upstream: 'many' },
      ],
    }),
  )
  t.teardown(() => small.close())
  const get = async (path: string) => (await request(`${small.url}${path}`)).body.dump()
  await get('/pair/200')
  await get('/pair/503')
  await get('/named/200')
  await get('/many/x')
  const text = await metricsText(small)
  const family = 'waypost_upstream_endpoint_attempt_duration_seconds'
  const origin = new URL(stub.url).origin
  t.equal(series(text, `${family}_count{upstream="pair",endpoint="${origin}",outcome="2xx"}`), 1)
  t.equal(series(text, `${family}_count{upstream="pair",endpoint="${origin}",outcome="5xx"}`), 1)
  t.equal(sum(text, `${family}_count`, { upstream: 'named' }), 0, 'no endpoint series for DNS endpoints')
  t.equal(sum(text, 'waypost_upstream_attempt_duration_seconds_count', { upstream: 'named' }), 1, 'the upstream\'s series has the attempt')
  t.equal(sum(text, `${family}_count`, { upstream: 'many' }), 0, 'none beyond 16 endpoints')
  t.equal(sum(text, 'waypost_upstream_attempt_duration_seconds_count', { upstream: 'many', outcome: 'failed' }), 1)
  t.equal(series(text, `waypost_upstream_endpoint_in_flight{upstream="pair",endpoint="http://127.0.0.1:${refusing[0]}"}`), 0, 'in flight per endpoint, from the live groups')
})

t.test('the config in force is an info metric; a rejected reload keeps it and says so', async (t) => {
  const own = await startGateway(YAML.stringify({ listen: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, drain: { delay: '0s' }, upstreams: { app: { url: stub.url } }, routes: [{ name: 'a', upstream: 'app' }] }))
  t.teardown(() => own.close())
  writeFileSync(own.configFile, YAML.stringify({ listen: { address: '127.0.0.1:0' }, admin: { address: '127.0.0.1:0' }, drain: { delay: '0s' }, upstreams: { app: { url: stub.url } }, routes: [{ name: 'b', upstream: 'app' }] }))
  const applied = await own.gateway.reload('admin')
  t.ok(applied.ok)
  const hash = applied.ok ? applied.hash : ''
  let text = await metricsText(own)
  t.equal(series(text, `waypost_config_info{version="2",hash="${hash}",source="admin"}`), 1)
  t.equal(text.match(/^waypost_config_info\{/gm)?.length, 1, 'only the plan in force')
  t.equal(series(text, 'waypost_config_last_reload_successful'), 1)
  writeFileSync(own.configFile, 'routes: [')
  t.notOk((await own.gateway.reload('file')).ok)
  text = await metricsText(own)
  t.equal(series(text, 'waypost_config_last_reload_successful'), 0)
  t.equal(series(text, `waypost_config_info{version="2",hash="${hash}",source="admin"}`), 1, 'the plan in force is still version 2')
  t.equal(series(text, 'waypost_config_reload_total{result="failure"}'), 1)
})

t.test('the Node runtime: event-loop lag, GC and heap from prom-client\'s defaults', async (t) => {
  const text = await metricsText(gw)
  for (const family of ['nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_heap_space_size_used_bytes', 'process_cpu_seconds_total', 'process_resident_memory_bytes']) {
    t.match(text, new RegExp(`^${family}(\\{[^}]*\\})? [0-9.e+-]+$`, 'm'), family)
  }
  t.match(text, /^# TYPE nodejs_gc_duration_seconds histogram$/m, 'GC pauses, by kind')
})

t.test('waypost_build_info says the version and the Node.js it runs on', async (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  t.equal(series(await metricsText(gw), `waypost_build_info{version="${version}",node_version="${process.version}"}`), 1)
})

t.test('OpenMetrics when the scraper asks for it, the text format otherwise', async (t) => {
  const scrape = async (accept?: string) => {
    const response = await request(`${gw.adminUrl}/metrics`, { headers: accept === undefined ? {} : { accept } })
    return { type: response.headers['content-type'], vary: response.headers.vary, text: await response.body.text() }
  }
  const prometheusAccept = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
  const open = await scrape(prometheusAccept)
  t.equal(open.type, 'application/openmetrics-text; version=1.0.0; charset=utf-8')
  t.equal(open.vary, 'accept')
  t.match(open.text, /# TYPE waypost_requests counter\nwaypost_requests_total\{/, 'a counter family is named without _total, its samples with it')
  t.match(open.text, /\n# EOF\n$/)
  t.notMatch(open.text, /\n\n/, 'no blank lines')
  for (const accept of [undefined, '*/*', 'text/plain', 'text/plain;version=0.0.4,application/openmetrics-text;q=0.5', 'application/openmetrics-text;version=0.0.1']) {
    const text = await scrape(accept)
    t.equal(text.type, 'text/plain; version=0.0.4; charset=utf-8', `Accept: ${accept}`)
    // prom-client renames counters in place for OpenMetrics: a text scrape after one must not see that.
    t.match(text.text, /# TYPE waypost_requests_total counter\nwaypost_requests_total\{/)
  }
  if (promtool) t.equal((await check((await scrape()).text)).output, '', 'promtool still accepts the text scrape after an OpenMetrics one')
})

t.test('a real Prometheus scrapes the OpenMetrics form without an error', { skip: prometheus ? false : 'prometheus is not installed (Debian package prometheus)' }, async (t) => {
  // promtool check metrics reads only the text format; Prometheus's own scraper asks for
  // OpenMetrics first and parses it strictly (a parse error marks the target down with lastError).
  const dir = mkdtempSync(join(tmpdir(), 'waypost-prometheus-'))
  const [port] = await freePorts(1)
  writeFileSync(
    join(dir, 'prometheus.yml'),
    YAML.stringify({ global: { scrape_interval: '500ms', scrape_timeout: '500ms' }, scrape_configs: [{ job_name: 'waypost', static_configs: [{ targets: [new URL(gw.adminUrl).host] }] }] }),
  )
  const child = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  t.teardown(async () => {
    child.kill('SIGKILL')
    await exited
    rmSync(dir, { recursive: true, force: true })
  })
  const api = async (path: string): Promise<unknown> => {
    const response = await request(`http://127.0.0.1:${port}${path}`)
    return ((await response.body.json()) as { data: unknown }).data
  }
  type Target = { health: string; lastError: string; lastScrape: string }
  let target: Target | undefined
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(250)) {
    try {
      target = ((await api('/api/v1/targets')) as { activeTargets: Target[] }).activeTargets[0]
    } catch {
      continue // not listening yet
    }
    if (target !== undefined && target.health !== 'unknown') break
  }
  t.equal(target?.lastError, '', 'the scrape parsed')
  t.equal(target?.health, 'up')
  // Metadata is named as the format names families: OpenMetrics names a counter without _total.
  const metadata = (await api('/api/v1/metadata?metric=waypost_requests')) as Record<string, Array<{ type: string }>>
  t.equal(metadata.waypost_requests?.[0]?.type, 'counter', 'Prometheus read the OpenMetrics form')
})
