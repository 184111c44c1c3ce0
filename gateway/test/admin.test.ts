// The admin listener: probes, config state, reload, metrics.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, startGateway } from './helpers.js'

const stub = await startStub()
const gw = await startGateway(catchAllConfig(stub.url))
t.teardown(async () => {
  await gw.close()
  await stub.close()
})

async function get(path: string, method: 'GET' | 'POST' = 'GET') {
  const response = await request(`${gw.adminUrl}${path}`, { method })
  return { status: response.statusCode, text: await response.body.text(), headers: response.headers }
}

t.test('/live and /ready', async (t) => {
  t.equal((await get('/live')).status, 200)
  t.equal((await get('/ready')).status, 200)
  t.equal((await get('/nope')).status, 404)
  t.equal((await get('/ready', 'POST')).status, 405)
})

t.test('/metrics exposes request, duration, in-flight and reload series', async (t) => {
  const proxied = await request(`${gw.url}/status/503`)
  await proxied.body.dump()
  const { text, headers } = await get('/metrics')
  t.match(headers['content-type'], /text\/plain/)
  t.match(text, /waypost_requests_total\{route="all",method="GET",status_class="5xx"\} 1/)
  t.match(text, /waypost_request_duration_seconds_bucket\{le="[0-9.]+",route="all"\}/)
  t.match(text, /waypost_requests_in_flight\{route="all"\} 0/)
  t.match(text, /waypost_config_reload_total\{result="success"\} 1/)
  t.match(text, /process_resident_memory_bytes/)
})

/** The value of one series in a /metrics text, 0 when absent. */
function series(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? 0 : Number(line.slice(name.length + 1))
}

t.test('request counts and the duration histogram are exact, however often they are scraped', async (t) => {
  // The request path counts in plain numbers and the scrape brings prom-client up to date: a
  // scrape must neither lose nor repeat what was counted before it.
  const count = 'waypost_request_duration_seconds_count{route="all"}'
  const ok = 'waypost_requests_total{route="all",method="GET",status_class="2xx"}'
  const fast = 'waypost_request_duration_seconds_bucket{le="0.025",route="all"}'
  const slow = 'waypost_request_duration_seconds_bucket{le="+Inf",route="all"}'
  const send = async (path: string, method: 'GET' | 'DELETE' = 'GET') => (await request(`${gw.url}${path}`, { method })).body.dump()
  const before = (await get('/metrics')).text
  await send('/status/200')
  await send('/status/200')
  const between = (await get('/metrics')).text
  t.equal(series(between, ok) - series(before, ok), 2)
  await send('/delay/0.05')
  await send('/status/404', 'DELETE')
  const after = (await get('/metrics')).text
  const again = (await get('/metrics')).text
  t.equal(series(after, ok) - series(before, ok), 3, 'each request counted once across three scrapes')
  t.equal(series(again, ok), series(after, ok), 'a scrape adds nothing by itself')
  t.equal(series(after, 'waypost_requests_total{route="all",method="DELETE",status_class="4xx"}'), 1)
  t.equal(series(after, count) - series(before, count), 4)
  t.equal(series(after, slow), series(after, count), 'the +Inf bucket holds every observation')
  t.equal(series(after, slow) - series(after, fast) - (series(before, slow) - series(before, fast)), 1, 'only the 50 ms request is above 25 ms')
  const sum = series(after, 'waypost_request_duration_seconds_sum{route="all"}') - series(before, 'waypost_request_duration_seconds_sum{route="all"}')
  t.ok(sum >= 0.05 && sum < 1, `the sum grew by the requests' durations (${sum} s)`)
})

t.test('/config shows the active version and hash; POST /reload applies or rejects', async (t) => {
  const before = JSON.parse((await get('/config')).text) as { active: { version: number; hash: string }; lastError: unknown }
  t.equal(before.active.version, 1)
  t.equal(before.lastError, null)

  writeFileSync(gw.configFile, catchAllConfig(stub.url, { policies: { timeout: { request: '1s' } } }))
  const applied = await get('/reload', 'POST')
  t.equal(applied.status, 200)
  t.match(JSON.parse(applied.text), { ok: true, version: 2, changed: true })

  writeFileSync(gw.configFile, 'routes: [')
  const rejected = await get('/reload', 'POST')
  t.equal(rejected.status, 422)
  t.match(JSON.parse(rejected.text), { ok: false, errors: [/waypost\.yaml:\d+:\d+: YAML syntax/] })

  const after = JSON.parse((await get('/config')).text) as { active: { version: number }; lastError: { errors: string[] }; history: Array<{ version: number; summary: { changed: string[] } }> }
  t.equal(after.active.version, 2, 'the good plan keeps serving')
  t.match(after.lastError.errors[0], /YAML syntax/)
  t.same(after.history.map((event) => event.version), [1, 2])
  t.same(after.history[1]!.summary.changed, ['route:all'])
  const proxied = await request(`${gw.url}/status/200`)
  await proxied.body.dump()
  t.equal(proxied.statusCode, 200)
  t.match((await get('/metrics')).text, /waypost_config_reload_total\{result="failure"\} 1/)
})

t.test('mutating endpoints refuse web pages: a Host that is a name (DNS rebinding) or a cross-site Origin; read-only ones stay open', async (t) => {
  const post = async (path: string, headers: Record<string, string>) => {
    const response = await request(`${gw.adminUrl}${path}`, { method: 'POST', headers, body: '{"prefix": "/"}' })
    return { status: response.statusCode, body: (await response.body.json()) as { error?: string } }
  }
  const rebinding = await post('/reload', { host: 'attacker.example:9901' })
  t.equal(rebinding.status, 403)
  t.match(rebinding.body.error, /not an IP address or localhost/)
  t.equal((await post('/cache/purge', { host: 'attacker.example' })).status, 403, 'policy endpoints too')
  const crossSite = await post('/reload', { origin: 'http://attacker.example' })
  t.equal(crossSite.status, 403)
  t.match(crossSite.body.error, /cross-origin/)
  t.equal((await post('/cache/purge', { host: 'localhost:9901' })).status, 200, 'localhost from loopback: allowed')
  t.equal((await post('/cache/purge', {})).status, 200, 'an IP Host from loopback: allowed')
  const probe = await request(`${gw.adminUrl}/ready`, { headers: { host: 'waypost.pod.cluster.local' } })
  await probe.body.dump()
  t.equal(probe.statusCode, 200, 'probes with any Host still work')
  t.match(gw.logs.find((line) => line.msg === 'admin request refused'), { level: 40, method: 'POST', path: '/reload', status: 403 })
})

t.test('GET /config and the logs never show secrets: the admin token, passwords in URLs', async (t) => {
  const token = 'admin-token-0123456789-secret'
  const secrets = await startGateway(
    catchAllConfig(stub.url, { extra: { admin: { address: '127.0.0.1:0', token }, redis: { url: 'redis://:redis-password-42@127.0.0.1:6399/0' } } }),
  )
  t.teardown(() => secrets.close())
  await (await request(`${secrets.url}/status/200`)).body.dump()
  await (await request(`${secrets.adminUrl}/reload`, { method: 'POST' })).body.dump()
  await (await request(`${secrets.adminUrl}/reload`, { method: 'POST', headers: { host: 'attacker.example', authorization: `Bearer ${token}` } })).body.dump()
  const config = await (await request(`${secrets.adminUrl}/config`)).body.text()
  t.notMatch(config, token)
  t.notMatch(config, 'redis-password-42')
  t.match(config, /"token": "\[redacted\]"/)
  t.match(config, /redis:\/\/:%5Bredacted%5D@127\.0\.0\.1:6399\/0|redis:\/\/:\[redacted\]@127\.0\.0\.1:6399\/0/)
  const logs = JSON.stringify(secrets.logs) + JSON.stringify(secrets.accessLines())
  t.notMatch(logs, token, 'no log line holds the token')
  t.notMatch(logs, 'redis-password-42', 'nor the Redis password')
})
