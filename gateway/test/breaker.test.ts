// Circuit breakers end to end: opening on the failure ratio, answering without the upstream,
// half-open probes, what counts as a failure, fallbacks, reloads, /breakers, metrics and logs.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, sleep, startGateway, type RunningGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

interface Answer {
  status: number
  reason: string | undefined
  body: string
  headers: Record<string, string | string[] | undefined>
}

async function get(gw: RunningGateway, path: string): Promise<Answer> {
  const response = await request(`${gw.url}${path}`)
  const reason = response.headers['x-waypost-reason']
  return { status: response.statusCode, reason: typeof reason === 'string' ? reason : undefined, body: await response.body.text(), headers: response.headers }
}

interface BreakerView {
  route: string
  upstream: string
  state: string
  stats: { fires: number; successes: number; failures: number; rejects: number }
  openedAt: string | null
  halfOpenAt: string | null
}

async function breakers(gw: RunningGateway): Promise<BreakerView[]> {
  const response = await request(`${gw.adminUrl}/breakers`)
  return ((await response.body.json()) as { breakers: BreakerView[] }).breakers
}

async function waitForState(gw: RunningGateway, state: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if ((await breakers(gw))[0]?.state === state) return
    await sleep(20)
  }
  throw new Error(`the breaker did not turn ${state} within ${timeoutMs} ms: ${JSON.stringify(await breakers(gw))}`)
}

/** Fails `count` requests through the upstream with 503s, which opens a breaker with minRequests <= count. */
async function fail(gw: RunningGateway, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await get(gw, '/status/503')
}

function transitions(gw: RunningGateway): string[] {
  return gw.logs.filter((line) => typeof line.msg === 'string' && line.msg.startsWith('breaker ')).map((line) => `${String(line.from)}→${String(line.to)}`)
}

const OPEN = 'breaker-open route=all upstream=app'

t.test('opens once more than failureRatio of at least minRequests calls failed, then answers without the upstream', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: '      breaker: { minRequests: 4, failureRatio: 0.5, openFor: 10s }\n' }))
  t.teardown(() => gw.close())
  for (const status of [200, 503, 200, 503]) t.equal((await get(gw, `/status/${status}`)).status, status)
  t.match(await breakers(gw), [{ route: 'all', upstream: 'app', state: 'closed', stats: { fires: 4, failures: 2 }, openedAt: null }], '2 of 4 failed: not more than half')

  const tripping = await get(gw, '/status/503')
  t.equal(tripping.status, 503, 'the failure that trips the breaker is still delivered as the upstream sent it')
  t.equal(tripping.reason, undefined)
  const [open] = await breakers(gw)
  t.match(open, { state: 'open', stats: { fires: 5, failures: 3 } })
  t.equal(Date.parse(open!.halfOpenAt!) - Date.parse(open!.openedAt!), 10_000, 'half-open is due openFor after opening')

  stub.resetStats()
  for (let i = 0; i < 3; i++) {
    const rejected = await get(gw, '/status/200')
    t.equal(rejected.status, 503)
    t.equal(rejected.reason, OPEN)
  }
  t.equal(stub.stats.requests, 0, 'the upstream was not touched while open')
  t.match((await breakers(gw))[0], { stats: { rejects: 3 } })

  const text = await metricsText(gw)
  t.match(text, /waypost_breaker_state\{route="all",upstream="app"\} 2/)
  t.match(text, /waypost_breaker_rejections_total\{route="all",upstream="app"\} 3/)
  t.match(text, /waypost_local_responses_total\{route="all",reason="breaker-open"\} 3/)
  t.same(transitions(gw), ['closed→open'])
  t.match(gw.logs.find((line) => line.msg === 'breaker closed → open'), { level: 40, route: 'all', upstream: 'app', from: 'closed', to: 'open', window: { fires: 5, failures: 3 } })
  t.match(gw.accessLines().at(-1), { status: 503, reason: 'breaker-open' })
})

t.test('half-open lets exactly halfOpenProbes requests through; their success closes the breaker', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: '      breaker: { minRequests: 2, openFor: 300ms, halfOpenProbes: 2 }\n' }))
  t.teardown(() => gw.close())
  await fail(gw, 2)
  t.equal((await breakers(gw))[0]?.state, 'open')
  await waitForState(gw, 'half-open')
  t.match(await metricsText(gw), /waypost_breaker_state\{route="all",upstream="app"\} 1/)

  stub.resetStats()
  // Probes take a second upstream, so every request below arrives while they are still in flight.
  const answers = await Promise.all(Array.from({ length: 6 }, () => get(gw, '/delay/1')))
  const passed = answers.filter((answer) => answer.status === 200)
  const rejected = answers.filter((answer) => answer.status === 503)
  t.equal(passed.length, 2, 'exactly halfOpenProbes requests went through')
  t.equal(rejected.length, 4)
  for (const answer of rejected) t.equal(answer.reason, OPEN)
  t.equal(stub.stats.byPath.get('/delay/1'), 2, 'the upstream saw exactly the probes')

  t.equal((await breakers(gw))[0]?.state, 'closed', 'both probes succeeded')
  t.equal((await get(gw, '/status/200')).status, 200)
  // The window starts afresh on close: one failure is below minRequests again.
  t.equal((await get(gw, '/status/503')).status, 503)
  t.equal((await get(gw, '/status/200')).status, 200, 'the failures from before it opened do not reopen it')
  t.same(transitions(gw), ['closed→open', 'open→half-open', 'half-open→closed'])
})

t.test('a failed probe reopens the breaker', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: '      breaker: { minRequests: 2, openFor: 300ms }\n' }))
  t.teardown(() => gw.close())
  await fail(gw, 2)
  await waitForState(gw, 'half-open')
  const probe = await get(gw, '/status/502')
  t.equal(probe.status, 502, 'the probe\'s own answer reaches the client')
  t.equal(probe.reason, undefined)
  t.equal((await breakers(gw))[0]?.state, 'open')
  t.equal((await get(gw, '/status/200')).reason, OPEN)
  await waitForState(gw, 'half-open')
  t.equal((await get(gw, '/status/200')).status, 200)
  t.equal((await breakers(gw))[0]?.state, 'closed')
  t.same(transitions(gw), ['closed→open', 'open→half-open', 'half-open→open', 'open→half-open', 'half-open→closed'])
})

t.test('a call from before the breaker opened that ends while it is half-open changes nothing', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: '      breaker: { minRequests: 2, openFor: 300ms }\n' }))
  t.teardown(() => gw.close())
  const controller = new AbortController()
  const stale = request(`${gw.url}/fault/hang`, { signal: controller.signal })
  await sleep(100)
  await fail(gw, 2)
  t.equal((await breakers(gw))[0]?.state, 'open', '2 of 3 calls failed')
  await waitForState(gw, 'half-open')
  controller.abort()
  await t.rejects(stale)
  await sleep(100)
  t.equal((await breakers(gw))[0]?.state, 'half-open', 'a client leaving is no evidence the upstream recovered')
  t.equal((await get(gw, '/status/200')).status, 200, 'the probe is still available')
  t.equal((await breakers(gw))[0]?.state, 'closed')
})

t.test('only failOn outcomes count: statuses, per-try timeouts, connection errors; never client aborts or the request deadline', async (t) => {
  const strict = '{ minRequests: 2, failureRatio: 0, openFor: 10s'
  t.test('statuses outside failOn.statuses', async (t) => {
    const gw = await startGateway(catchAllConfig(stub.url, { policies: `      breaker: ${strict}, failOn: { statuses: [502] } }\n` }))
    t.teardown(() => gw.close())
    for (let i = 0; i < 4; i++) t.equal((await get(gw, '/status/503')).status, 503)
    t.match(await breakers(gw), [{ state: 'closed', stats: { failures: 0 } }])
    await get(gw, '/status/502')
    await get(gw, '/status/502')
    t.match(await breakers(gw), [{ state: 'open' }], 'the listed status does count')
  })

  t.test('a client that goes away', async (t) => {
    const gw = await startGateway(catchAllConfig(stub.url, { policies: `      breaker: ${strict} }\n` }))
    t.teardown(() => gw.close())
    for (let i = 0; i < 3; i++) {
      const controller = new AbortController()
      const pending = request(`${gw.url}/fault/hang`, { signal: controller.signal })
      await sleep(100)
      controller.abort()
      await t.rejects(pending)
    }
    await sleep(100)
    t.match(await breakers(gw), [{ state: 'closed', stats: { failures: 0 } }])
  })

  t.test('the whole-exchange deadline', async (t) => {
    const gw = await startGateway(catchAllConfig(stub.url, { policies: `      timeout: { request: 150ms }\n      breaker: ${strict} }\n` }))
    t.teardown(() => gw.close())
    for (let i = 0; i < 3; i++) t.equal((await get(gw, '/fault/hang')).reason, 'timeout route=all upstream=app')
    t.match(await breakers(gw), [{ state: 'closed', stats: { failures: 0 } }])
  })

  t.test('per-try timeouts, unless failOn.timeouts is false', async (t) => {
    const gw = await startGateway(catchAllConfig(stub.url, { policies: `      timeout: { perTry: 150ms }\n      breaker: ${strict} }\n` }))
    t.teardown(() => gw.close())
    for (let i = 0; i < 2; i++) t.equal((await get(gw, '/fault/hang')).reason, 'attempt-timeout route=all upstream=app')
    t.match(await breakers(gw), [{ state: 'open', stats: { failures: 2 } }])
    const lenient = await startGateway(catchAllConfig(stub.url, { policies: `      timeout: { perTry: 150ms }\n      breaker: ${strict}, failOn: { timeouts: false } }\n` }))
    t.teardown(() => lenient.close())
    for (let i = 0; i < 2; i++) await get(lenient, '/fault/hang')
    t.match(await breakers(lenient), [{ state: 'closed', stats: { failures: 0 } }])
  })

  t.test('connection errors, unless failOn.connectionErrors is false', async (t) => {
    const gw = await startGateway(catchAllConfig('http://127.0.0.1:1', { policies: `      breaker: ${strict} }\n` }))
    t.teardown(() => gw.close())
    for (let i = 0; i < 2; i++) t.equal((await get(gw, '/x')).reason, 'connect-refused route=all upstream=app')
    t.equal((await get(gw, '/x')).reason, OPEN)
    const lenient = await startGateway(catchAllConfig('http://127.0.0.1:1', { policies: `      breaker: ${strict}, failOn: { connectionErrors: false } }\n` }))
    t.teardown(() => lenient.close())
    for (let i = 0; i < 3; i++) t.equal((await get(lenient, '/x')).reason, 'connect-refused route=all upstream=app')
  })
})

t.test('fallback: a static response, or another upstream', async (t) => {
  const fallback = '{ status: 200, body: "stale but fine\\n", headers: { Content-Type: text/plain, x-fallback: static } }'
  const gw = await startGateway(catchAllConfig(stub.url, { policies: `      breaker: { minRequests: 2, openFor: 10s, fallback: ${fallback} }\n` }))
  t.teardown(() => gw.close())
  await fail(gw, 2)
  const answer = await get(gw, '/status/503')
  t.equal(answer.status, 200)
  t.equal(answer.body, 'stale but fine\n')
  t.equal(answer.headers['content-type'], 'text/plain')
  t.equal(answer.headers['x-fallback'], 'static')
  t.equal(answer.reason, OPEN, 'a static fallback still says why')

  const backup = `  backup:\n    url: ${stub.url}\n`
  const moved = await startGateway(catchAllConfig('http://127.0.0.1:1', { upstreamExtra: backup, policies: '      breaker: { minRequests: 2, openFor: 10s, fallback: { upstream: backup } }\n' }))
  t.teardown(() => moved.close())
  for (let i = 0; i < 2; i++) t.equal((await get(moved, '/status/201')).status, 502)
  stub.resetStats()
  const served = await get(moved, '/status/201')
  t.equal(served.status, 201, 'answered by the fallback upstream')
  t.equal(served.reason, 'breaker-fallback route=all upstream=app fallback=backup')
  t.equal(stub.stats.byPath.get('/status/201'), 1)
  await sleep(20)
  t.match(moved.accessLines().at(-1), { status: 201, reason: 'breaker-fallback' })
})

t.test('state survives a reload while the breaker config is unchanged; a change or removal starts afresh', async (t) => {
  const breaker = '      breaker: { minRequests: 2, openFor: 10s }\n'
  const gw = await startGateway(catchAllConfig(stub.url, { policies: breaker }))
  t.teardown(() => gw.close())
  await fail(gw, 2)
  t.equal((await get(gw, '/status/200')).reason, OPEN)

  writeFileSync(gw.configFile, catchAllConfig(stub.url, { policies: `      timeout: { request: 5s }\n${breaker}` }))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  t.equal((await get(gw, '/status/200')).reason, OPEN, 'still open after an unrelated change')
  t.match(await breakers(gw), [{ state: 'open', stats: { failures: 2 } }])

  writeFileSync(gw.configFile, catchAllConfig(stub.url, { policies: '      breaker: { minRequests: 2, openFor: 5s }\n' }))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  t.equal((await get(gw, '/status/200')).status, 200, 'a changed breaker starts closed')
  t.match(await breakers(gw), [{ state: 'closed', stats: { fires: 1, failures: 0 } }], 'only the new breaker is listed')

  writeFileSync(gw.configFile, catchAllConfig(stub.url))
  t.match(await gw.gateway.reload('test'), { ok: true, changed: true })
  t.same(await breakers(gw), [], 'a retired breaker disappears')
  t.notMatch(await metricsText(gw), /waypost_breaker_state\{/)
})
