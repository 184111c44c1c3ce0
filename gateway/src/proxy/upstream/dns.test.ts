import { resolveUpstream } from './config.js'
import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { GatewayMetrics } from '../../telemetry/metrics.js'
import { createPool } from '../pool.js'
import { EndpointGroup } from './group.js'
import { DnsDiscovery, type ResolvedAddress } from './dns.js'
import { DEFAULT_UPSTREAM_TLS, UpstreamTls } from './tls.js'

t.test('endpoints follow the DNS answer; a failed or empty answer keeps the last good set', async (t) => {
  const messages: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line !== '') messages.push((JSON.parse(line) as { msg: string }).msg)
      callback()
    },
  })
  const group = new EndpointGroup({ name: 'app', balancer: 'round-robin', minHealthyPercent: 50, log: pino(sink), metrics: new GatewayMetrics(), createPool: (origin) => createPool(origin, resolveUpstream({})) })
  const answers: Array<ReadonlyArray<ResolvedAddress> | Error> = [
    [{ address: '10.0.0.1', family: 4 }, { address: 'fd00::1', family: 6 }],
    [{ address: '10.0.0.1', family: 4 }, { address: '10.0.0.2', family: 4 }, { address: '10.0.0.1', family: 4 }],
    new Error('SERVFAIL'),
    [],
    [{ address: '10.0.0.2', family: 4 }],
  ]
  let asked = 0
  const discovery = new DnsDiscovery({ name: 'app.internal', port: 8080, ttl: 1, scheme: 'http' }, group, async (name) => {
    t.equal(name, 'app.internal')
    const answer = answers[Math.min(asked++, answers.length - 1)]!
    if (answer instanceof Error) throw answer
    return answer
  })
  t.teardown(() => {
    discovery.stop()
    group.dispose()
  })
  const seen: string[][] = []
  const addresses = (): string[] => group.endpointList.map((endpoint) => endpoint.address)
  discovery.start()
  await discovery.firstAnswer
  t.same(addresses(), ['http://10.0.0.1:8080', 'http://[fd00::1]:8080'], 'every address is an endpoint, IPv6 bracketed')
  const first = group.endpointList[0]
  while (asked < answers.length + 1) {
    seen.push(addresses())
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  t.same(addresses(), ['http://10.0.0.2:8080'])
  t.ok(seen.some((set) => set.join() === 'http://10.0.0.1:8080,http://10.0.0.2:8080'), 'an added address joins, duplicates once')
  t.notOk(seen.some((set) => set.length === 0), 'never emptied by a failed or empty answer')
  t.ok(first!.pool.closed, 'a removed endpoint\'s pool is closed')
  t.ok(messages.filter((message) => message === 'DNS resolve failed; keeping the last good endpoints').length >= 2)
  t.ok(messages.includes('upstream endpoints changed (DNS)'))
})

t.test('family keeps only IPv4 or IPv6 addresses', async (t) => {
  const log = pino({ level: 'silent' })
  const metrics = new GatewayMetrics()
  // https endpoints connect through their upstream's TLS (the defaults: verified against the system CAs).
  const tls = new UpstreamTls(DEFAULT_UPSTREAM_TLS, { upstream: 'app', log, metrics, connectTimeoutMs: 1000, defaultServerName: 'x' })
  const group = new EndpointGroup({ name: 'app', balancer: 'least-request', minHealthyPercent: 50, log, metrics, createPool: (origin) => createPool(origin, resolveUpstream({}), tls) })
  const discovery = new DnsDiscovery({ name: 'x', port: 443, scheme: 'https', family: 6, ttl: '1m' }, group, async () => [{ address: '10.0.0.1', family: 4 }, { address: '::1', family: 6 }])
  t.teardown(() => {
    discovery.stop()
    group.dispose()
  })
  discovery.start()
  await discovery.firstAnswer
  t.same(group.endpointList.map((endpoint) => endpoint.address), ['https://[::1]:443'])
})
