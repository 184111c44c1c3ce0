// Rate limits end to end: burst and refill, per-client buckets (behind trusted proxies only),
// header keys, the 429 and its RateLimit fields, shadow mode.
import t from 'tap'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, startGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

async function status(url: string, headers: Record<string, string> = {}): Promise<number> {
  const response = await request(url, { headers })
  await response.body.dump()
  return response.statusCode
}

t.test('a burst is allowed, then 429 with Retry-After and the RateLimit fields', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { rateLimit: { rate: 0.5, burst: 3, key: 'route' } } }))
  t.teardown(() => gw.close())
  stub.resetStats()
  const remaining: string[] = []
  for (let i = 0; i < 3; i++) {
    const response = await request(`${gw.url}/status/200`)
    await response.body.dump()
    t.equal(response.statusCode, 200)
    t.equal(response.headers['ratelimit-policy'], '"all";q=3;w=6')
    remaining.push(response.headers.ratelimit as string)
  }
  t.match(remaining, [/^"all";r=2;t=\d+$/, /^"all";r=1;t=\d+$/, /^"all";r=0;t=6$/], 'RateLimit counts down')
  const refused = await request(`${gw.url}/status/200`)
  const body = await refused.body.text()
  t.equal(refused.statusCode, 429)
  t.equal(refused.headers['retry-after'], '2', 'a token comes back in 2 s at 0.5/s')
  t.equal(refused.headers['x-waypost-reason'], 'rate-limited route=all upstream=app')
  t.match(refused.headers.ratelimit, /^"all";r=0;t=6$/)
  t.match(body, /429 rate-limited/)
  t.equal(stub.stats.byPath.get('/status/200'), 3, 'the refused request never reached the upstream')
  t.match(gw.accessLines().at(-1), { status: 429, reason: 'rate-limited' })
  const metrics = await metricsText(gw)
  t.match(metrics, /waypost_rate_limit_total\{route="all",result="allowed"\} 3/)
  t.match(metrics, /waypost_rate_limit_total\{route="all",result="limited"\} 1/)
})

t.test('tokens refill at the rate', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { rateLimit: { rate: 2, burst: 1, key: 'route' } } }))
  t.teardown(() => gw.close())
  t.equal(await status(`${gw.url}/status/200`), 200)
  t.equal(await status(`${gw.url}/status/200`), 429, 'the burst of 1 is spent')
  await new Promise((resolve) => setTimeout(resolve, 600))
  t.equal(await status(`${gw.url}/status/200`), 200, 'a token came back after 500 ms')
})

t.test('per-client buckets: behind a trusted proxy each X-Forwarded-For client has its own', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { listen: { trustedProxies: ['127.0.0.1'] }, policies: { rateLimit: { rate: 0.1, burst: 2 } } }))
  t.teardown(() => gw.close())
  const a = { 'x-forwarded-for': '203.0.113.7' }
  const b = { 'x-forwarded-for': '198.51.100.9' }
  t.same([await status(`${gw.url}/status/200`, a), await status(`${gw.url}/status/200`, a), await status(`${gw.url}/status/200`, a)], [200, 200, 429])
  t.equal(await status(`${gw.url}/status/200`, b), 200, 'another client is not affected')
  const spoofed = { 'x-forwarded-for': '203.0.113.7, 198.51.100.9' }
  t.equal(await status(`${gw.url}/status/200`, spoofed), 200, 'the right-most untrusted hop is the client: 198.51.100.9, with one token left')
  t.equal(await status(`${gw.url}/status/200`, spoofed), 429)
})

t.test('without trusted proxies X-Forwarded-For is ignored: one bucket per peer address', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { rateLimit: { rate: 0.1, burst: 1 } } }))
  t.teardown(() => gw.close())
  t.equal(await status(`${gw.url}/status/200`, { 'x-forwarded-for': '203.0.113.1' }), 200)
  t.equal(await status(`${gw.url}/status/200`, { 'x-forwarded-for': '203.0.113.2' }), 429, 'a forged header does not buy a new bucket')
})

t.test('a header key (an API key) gives each key its own bucket', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { rateLimit: { rate: 0.1, burst: 1, key: { header: 'X-Api-Key' } } } }))
  t.teardown(() => gw.close())
  t.equal(await status(`${gw.url}/status/200`, { 'x-api-key': 'alpha' }), 200)
  t.equal(await status(`${gw.url}/status/200`, { 'x-api-key': 'alpha' }), 429)
  t.equal(await status(`${gw.url}/status/200`, { 'x-api-key': 'beta' }), 200)
  t.equal(await status(`${gw.url}/status/200`), 200, 'no key: the client address bucket')
  t.equal(await status(`${gw.url}/status/200`), 429)
})

t.test('shadow mode lets everything through, counts and logs what it would refuse', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { rateLimit: { rate: 0.1, burst: 1, key: 'route', shadow: true } } }))
  t.teardown(() => gw.close())
  const statuses = []
  for (let i = 0; i < 4; i++) statuses.push(await status(`${gw.url}/status/200`))
  t.same(statuses, [200, 200, 200, 200])
  const metrics = await metricsText(gw)
  t.match(metrics, /waypost_rate_limit_total\{route="all",result="shadow-limited"\} 3/)
  t.equal(gw.logs.filter((line) => line.msg === 'rate limit exceeded (shadow mode: let through)').length, 3)
})

t.test('buckets survive a reload while the limit is unchanged', async (t) => {
  const limited = (burst: number): string => catchAllConfig(stub.url, { policies: { rateLimit: { rate: 0.1, burst, key: 'route' } } })
  const config = limited(1)
  const gw = await startGateway(config)
  t.teardown(() => gw.close())
  t.equal(await status(`${gw.url}/status/200`), 200)
  const { writeFileSync } = await import('node:fs')
  writeFileSync(gw.configFile, `${config}\n# an unrelated edit\n`)
  t.equal((await request(`${gw.adminUrl}/reload`, { method: 'POST' })).statusCode, 200)
  t.equal(await status(`${gw.url}/status/200`), 429, 'still spent after the reload')
  writeFileSync(gw.configFile, limited(2))
  t.equal((await request(`${gw.adminUrl}/reload`, { method: 'POST' })).statusCode, 200)
  t.equal(await status(`${gw.url}/status/200`), 200, 'a changed limit starts with full buckets')
})
