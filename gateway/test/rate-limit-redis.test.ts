// Global rate limits: two gateway processes take from one bucket in a real Redis; when Redis goes
// away the gateway keeps serving under local limits (never failing closed) and says so; when it
// comes back the limit is global again.
import t from 'tap'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, spawnGateway, startGateway, tempConfig } from './helpers.js'
import { redisAvailable, startRedis } from './redis-server.js'

if (!redisAvailable()) {
  t.plan(0, 'redis-server is not installed (apt-get install redis-server); CI installs it and requires these tests')
} else {
  const stub = await startStub()
  t.teardown(() => stub.close())
  const redis = await startRedis()
  t.teardown(() => redis.stop())

  const globalConfig = (burst: number, key = 'route'): string =>
    catchAllConfig(stub.url, {
      policies: { rateLimit: { rate: 0.05, burst, key, global: true } },
      extra: { redis: { url: redis.url, commandTimeout: '200ms' } },
    })

  async function status(url: string): Promise<number> {
    const response = await request(`${url}/status/200`)
    await response.body.dump()
    return response.statusCode
  }

  async function metric(adminUrl: string, pattern: RegExp): Promise<number | undefined> {
    const text = await metricsText({ adminUrl })
    const match = pattern.exec(text)
    return match === null ? undefined : Number(match[1])
  }

  /** Waits until the gateway's Redis client is connected. */
  async function untilStoreIs(adminUrl: string, up: 0 | 1, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while ((await metric(adminUrl, /waypost_rate_limit_store_up\{route="all"\} (\d+)/)) !== up) {
      if (Date.now() > deadline) throw new Error(`waypost_rate_limit_store_up never became ${up}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }

  t.test('two gateway processes share one bucket through Redis', async (t) => {
    const file = tempConfig(globalConfig(4))
    const first = await spawnGateway(file)
    t.teardown(() => first.stop())
    const second = await spawnGateway(file)
    t.teardown(() => second.stop())
    await untilStoreIs(first.adminUrl, 1)
    await untilStoreIs(second.adminUrl, 1)
    const statuses = [await status(first.url), await status(second.url), await status(first.url), await status(second.url)]
    t.same(statuses, [200, 200, 200, 200], 'the burst of 4 is shared')
    t.equal(await status(first.url), 429, 'the fifth request is refused, whichever gateway gets it')
    t.equal(await status(second.url), 429)
    // The series exists from the config on (metrics.md, series from zero): 0, not absent.
    t.equal(await metric(first.adminUrl, /waypost_rate_limit_fallback_total\{route="all"\} (\d+)/), 0, 'no local fallback was needed')
    t.equal(await metric(second.adminUrl, /waypost_rate_limit_fallback_total\{route="all"\} (\d+)/), 0)
  })

  t.test('a Redis outage falls back to local limits, logged and counted; recovery makes it global again', async (t) => {
    const gw = await startGateway(globalConfig(2, 'ip'))
    t.teardown(() => gw.close())
    await untilStoreIs(gw.adminUrl, 1)
    t.same([await status(gw.url), await status(gw.url), await status(gw.url)], [200, 200, 429], 'global bucket: burst 2')

    await redis.stop()
    await untilStoreIs(gw.adminUrl, 0)
    const during = [await status(gw.url), await status(gw.url), await status(gw.url)]
    t.same(during, [200, 200, 429], 'Redis down: served under the local bucket, not refused wholesale')
    t.ok(gw.logs.some((line) => line.msg.startsWith('rate limit: Redis unavailable')), 'the fallback is logged')
    const fallbacks = (await metric(gw.adminUrl, /waypost_rate_limit_fallback_total\{route="all"\} (\d+)/)) ?? 0
    t.ok(fallbacks >= 3, `and counted (${fallbacks})`)

    await redis.start()
    await untilStoreIs(gw.adminUrl, 1)
    t.equal(await status(gw.url), 200, 'the restarted Redis starts with a full bucket: global again')
    t.ok(gw.logs.some((line) => line.msg === 'rate limit: Redis answers again; the limit is global again'))
  })
}
