import { resolveUpstream } from './config.js'
import t from 'tap'
import { pino } from 'pino'
import { GatewayMetrics } from '../../telemetry/metrics.js'
import { createPool } from '../pool.js'
import { EndpointGroup } from './group.js'
import type { BalancerName } from './balancer.js'
import type { Endpoint } from './endpoint.js'
import { dispatchTo } from '../dispatch.js'
import { answerForError } from '../errors.js'
import { newExchangeRecord, type Exchange, type ExchangeRecord } from '../../core/exchange.js'

/** Nothing here sends a request: the pools never connect. */
function group(t: { teardown(cleanup: () => void): void }, specs: Array<[port: number, priority: number, weight?: number]>, balancer: BalancerName = 'round-robin'): EndpointGroup {
  const endpoints = new EndpointGroup({ name: 'app', balancer, minHealthyPercent: 50, log: pino({ level: 'silent' }), metrics: new GatewayMetrics(), createPool: (origin) => createPool(origin, resolveUpstream({})) })
  endpoints.setEndpoints(specs.map(([port, priority, weight = 1]) => ({ address: `http://127.0.0.1:${port}`, priority, weight })))
  t.teardown(() => endpoints.dispose())
  return endpoints
}

function ports(endpoints: ReadonlyArray<object | null>): number[] {
  return [...new Set(endpoints.map((endpoint) => Number(new URL((endpoint as Endpoint).address).port)))].sort((a, b) => a - b)
}

function picks(endpoints: EndpointGroup, count: number): Array<Endpoint | null> {
  return Array.from({ length: count }, () => endpoints.pick(null))
}

function setHealthy(endpoints: EndpointGroup, healthy: Record<number, boolean>): void {
  for (const endpoint of endpoints.endpointList) endpoint.healthy = healthy[Number(new URL(endpoint.address).port)] ?? true
  endpoints.refresh()
}

t.test('the first priority group with enough available endpoints takes the traffic', async (t) => {
  const endpoints = group(t, [[11, 1], [1, 0], [2, 0], [3, 0], [12, 1]])
  t.same(ports(picks(endpoints, 12)), [1, 2, 3], 'the highest priority (0) while all are healthy')
  setHealthy(endpoints, { 1: false })
  t.same(ports(picks(endpoints, 12)), [2, 3], '2 of 3 available is above minHealthyPercent: only the available ones')
  setHealthy(endpoints, { 1: false, 2: false })
  t.same(ports(picks(endpoints, 12)), [11, 12], '1 of 3 is below 50%: fail over to priority 1')
  setHealthy(endpoints, { 1: false, 2: false, 11: false, 12: false })
  t.same(ports(picks(endpoints, 12)), [3], 'no group qualifies: the first group with any available endpoint')
  setHealthy(endpoints, { 1: false, 2: false, 3: false, 11: false, 12: false })
  t.same(ports(picks(endpoints, 12)), [1, 2, 3], 'none available at all: panic uses every endpoint of the first group')
  setHealthy(endpoints, {})
  t.same(ports(picks(endpoints, 12)), [1, 2, 3])
})

t.test('a retry avoids the endpoints already tried, even across groups, and reuses one when it must', async (t) => {
  const endpoints = group(t, [[1, 0], [2, 0], [11, 1]], 'least-request')
  const tried: object[] = []
  for (let i = 0; i < 3; i++) tried.push(endpoints.pick(tried)!)
  t.same(ports(tried), [1, 2, 11], 'the backup group once the primary group is used up')
  t.ok(endpoints.pick(tried) !== null, 'all tried: still an endpoint')
})

t.test('round-robin honours weights without bursts', async (t) => {
  const endpoints = group(t, [[1, 0, 3], [2, 0, 1]])
  const sequence = picks(endpoints, 8).map((endpoint) => endpoint!.address.slice(-1))
  t.same(sequence, ['1', '1', '2', '1', '1', '1', '2', '1'])
})

t.test('least-request picks the less busy of two', async (t) => {
  const endpoints = group(t, [[1, 0], [2, 0]], 'least-request')
  endpoints.endpointList[0]!.inFlight = 3
  t.same(ports(picks(endpoints, 20)), [2])
})

t.test('a new endpoint set keeps the state of endpoints that stay and closes the pools of removed ones', async (t) => {
  const endpoints = group(t, [[1, 0], [2, 0]])
  const [first, second] = endpoints.endpointList as [Endpoint, Endpoint]
  first.healthy = false
  const { added, removed } = endpoints.setEndpoints([{ address: first.address, priority: 0, weight: 1 }, { address: 'http://127.0.0.1:3', priority: 0, weight: 1 }])
  t.same(added, ['http://127.0.0.1:3'])
  t.same(removed, [second.address])
  t.equal(endpoints.endpointList[0], first, 'same object, same health')
  t.equal(first.healthy, false)
  t.ok(second.pool.closed, 'the removed endpoint\'s pool is closing')
  t.equal(endpoints.pick(null)!.address, 'http://127.0.0.1:3', 'traffic avoids the unhealthy one')
})

t.test('an empty group (DNS not answered yet) has nothing to pick: dispatch answers 503 no-endpoints', async (t) => {
  const endpoints = group(t, [])
  t.equal(endpoints.pick(null), null)
  const record: ExchangeRecord = newExchangeRecord()
  const failure = await dispatchTo(endpoints)({ record } as Exchange).then(() => undefined, (error: unknown) => error)
  t.same(answerForError(failure), { status: 503, reason: 'no-endpoints' })
  t.equal(record.attempts, 0, 'no attempt was made')
})
