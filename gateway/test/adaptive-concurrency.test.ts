// Adaptive concurrency against an upstream whose latency grows with its concurrency (the stub's
// /concurrency-latency): with the limiter the upstream's concurrency and latency stay bounded and
// the excess is shed with 503; without it, every client's request piles onto the upstream.
import t from 'tap'
import { Agent, request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, metricsText, startGateway } from './helpers.js'

const stub = await startStub()
t.teardown(() => stub.close())
const PATH = '/concurrency-latency?baseMs=5&perInFlightMs=3'

/** `clients` closed-loop clients for `ms`; returns statuses and latencies of the 200s. */
async function load(url: string, clients: number, ms: number): Promise<{ ok: number[]; shed: number; other: number }> {
  const agent = new Agent({ connections: clients })
  const deadline = Date.now() + ms
  const ok: number[] = []
  let shed = 0
  let other = 0
  const client = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const started = performance.now()
      const response = await request(`${url}${PATH}`, { dispatcher: agent })
      await response.body.dump()
      if (response.statusCode === 200) ok.push(performance.now() - started)
      else if (response.statusCode === 503 && response.headers['x-waypost-reason'] === 'adaptive-concurrency-limit route=all upstream=app') {
        shed++
        // A shed client backs off a little, as a real one would after a 503.
        await new Promise((resolve) => setTimeout(resolve, 20))
      } else other++
    }
  }
  await Promise.all(Array.from({ length: clients }, client))
  await agent.close()
  return { ok: ok.sort((a, b) => a - b), shed, other }
}

t.test('the limit keeps the upstream out of overload and sheds the excess', async (t) => {
  const gw = await startGateway(catchAllConfig(stub.url, { policies: { adaptiveConcurrency: { initialLimit: 10, window: '100ms' } } }))
  t.teardown(() => gw.close())
  stub.resetStats()
  const result = await load(gw.url, 120, 4000)
  const p50 = result.ok[Math.floor(result.ok.length / 2)]!
  t.ok(result.shed > 0, `excess load is shed with 503 adaptive-concurrency-limit (${result.shed})`)
  t.equal(result.other, 0)
  t.ok(stub.stats.maxInFlight < 100, `the upstream saw at most ${stub.stats.maxInFlight} in flight of 120 clients`)
  const metrics = await metricsText(gw)
  const limit = Number(/waypost_adaptive_concurrency_limit\{route="all"\} (\d+)/.exec(metrics)?.[1])
  t.ok(limit >= 4 && limit < 100, `the limit settled at ${limit}`)
  t.comment(`adaptive: ${result.ok.length} ok (p50 ${p50.toFixed(1)} ms), ${result.shed} shed, upstream max in flight ${stub.stats.maxInFlight}`)

  const plain = await startGateway(catchAllConfig(stub.url))
  t.teardown(() => plain.close())
  stub.resetStats()
  const unlimited = await load(plain.url, 120, 3000)
  t.ok(stub.stats.maxInFlight >= 110, `without it the upstream carries every client (${stub.stats.maxInFlight} in flight)`)
  const unlimitedP50 = unlimited.ok[Math.floor(unlimited.ok.length / 2)]!
  t.ok(unlimitedP50 > p50, `and its latency is higher: p50 ${unlimitedP50.toFixed(1)} ms vs ${p50.toFixed(1)} ms`)
})
