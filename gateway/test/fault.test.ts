// Fault injection end to end: aborts by share and by header, delays and their cancellation.
import t from 'tap'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, startGateway, type RunningGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())

async function get(gw: RunningGateway, path: string, headers: Record<string, string> = {}): Promise<{ status: number; reason: unknown }> {
  const response = await request(`${gw.url}${path}`, { headers })
  await response.body.dump()
  return { status: response.statusCode, reason: response.headers['x-waypost-reason'] }
}

t.test('abort 100% answers every request with its status, without the upstream', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { fault: { abort: { percent: 100, status: 503 } } } }))
  t.teardown(() => gw.close())
  stub.resetStats()
  for (let i = 0; i < 10; i++) t.same(await get(gw, '/status/200'), { status: 503, reason: 'fault-abort route=all upstream=app' })
  t.equal(stub.stats.requests, 0)
  const metrics = await metricsText(gw)
  t.match(metrics, /waypost_faults_injected_total\{route="all",kind="abort"\} 10/)
  t.match(metrics, /waypost_local_responses_total\{route="all",reason="fault-abort"\} 10/)
})

t.test('a delay adds latency; the request deadline cuts it short with 504 timeout', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { fault: { delay: { percent: 100, duration: '300ms' } } } }))
  t.teardown(() => gw.close())
  let started = performance.now()
  t.equal((await get(gw, '/status/200')).status, 200)
  const delayed = performance.now() - started
  t.ok(delayed >= 295, `delayed by ${delayed.toFixed(1)} ms (300 ms injected)`)

  const bounded = await startGateway(catchAllConfig(stub.url, { policies: { timeout: { request: '200ms' }, fault: { delay: { percent: 100, duration: '5s' } } } }))
  t.teardown(() => bounded.close())
  stub.resetStats()
  started = performance.now()
  t.same(await get(bounded, '/status/200'), { status: 504, reason: 'timeout route=all upstream=app' })
  const elapsed = performance.now() - started
  t.ok(elapsed < 2000, `answered after ${elapsed.toFixed(1)} ms, not after the 5 s delay`)
  t.equal(stub.stats.requests, 0, 'the cancelled request never went upstream')
  const metrics = await metricsText(bounded)
  t.match(metrics, /waypost_faults_injected_total\{route="all",kind="delay"\} 1/)
})

t.test('percent outside 0-100 is rejected when the config is loaded', async (t) => {
  await t.rejects(startGateway(catchAllConfig(stub.url, { policies: { fault: { abort: { percent: 101, status: 503 } } } })), /routes\[0\]\.policies\.fault\.abort\.percent/)
})
