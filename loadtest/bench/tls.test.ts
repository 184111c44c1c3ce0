// The TLS benchmark's pieces that need no load: the gateway-tls policy file, the ratios against
// nginx-tls, and new connections per second over a real TLS server.
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { GatewayConfig } from '../../gateway/src/config/schema.js'
import { parseConfig, formatError } from '../../gateway/src/config/load.js'
import { gatewayConfig } from './topology.js'
import { benchOptions, TLS_CONFIGS } from './options.js'
import { formatHandshakeTable, reportKind, summarize, type HandshakeRun, type ThroughputRun } from './report.js'
import { writeBenchCertificate } from '../lib/certs.js'

const run = promisify(execFile)
const dist = fileURLToPath(new URL('../../dist/loadtest/bench/', import.meta.url))

t.test('gateway-tls: the default chain behind listen.tls with the benchmark certificate', async (t) => {
  const text = gatewayConfig('gateway-tls', 19008, 19018, 19000, { certificate: { cert: '/run/bench.crt', key: '/run/bench.key' } })
  const doc = parse(text) as { listen: unknown; defaults: unknown; log: { access: boolean } }
  t.same(doc.listen, { address: '127.0.0.1:19008', tls: { cert: '/run/bench.crt', key: '/run/bench.key' } })
  t.same(doc.defaults, parse(gatewayConfig('gateway-default', 19003, 19013, 19000)).defaults, 'the same chain as gateway-default')
  t.equal(doc.log.access, true)
  t.throws(() => gatewayConfig('gateway-tls', 1, 2, 3), /needs the benchmark certificate/)
  // listen.tls comes with the TLS listener (issue 14's other half): until the schema has it, the file cannot load.
  const listen = (GatewayConfig.properties.listen as unknown as { anyOf?: unknown; properties?: Record<string, unknown> }).properties
  const hasListenTls = listen !== undefined && 'tls' in listen
  t.test('and the gateway accepts it', { todo: hasListenTls ? false : 'needs listen.tls (the TLS listener branch)' }, async (t) => {
    const result = parseConfig(text, 'gateway-tls.yaml')
    t.same(result.ok ? [] : result.errors.map(formatError), [])
  })
})

t.test('--tls measures TLS beside nginx-tls; --tls and --cache do not mix', async (t) => {
  const options = benchOptions(['--tls'])
  t.same(options !== 'help' && options.configs, TLS_CONFIGS)
  t.throws(() => benchOptions(['--tls', '--cache']), /one preset at a time/)
})

function throughput(config: ThroughputRun['config'], rep: number, rps: number, cpu: number): ThroughputRun {
  return { config, rep, attempts: 1, rps, requests: rps * 5, errors: 0, wrkP50Ms: 1, wrkP99Ms: 2, proxyCpuUsPerReq: cpu, upstreamCpuUsPerReq: 40, loadgenCpuUsPerReq: 20, foreignPct: 0, stealPct: 0 }
}

function handshakes(config: HandshakeRun['config'], rep: number, rate: number, cpu: number): HandshakeRun {
  return { config, rep, attempts: 1, handshakes: rate * 5, seconds: 5, rate, errors: 0, p50Ms: 5, p99Ms: 9, protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', proxyCpuUsPerHandshake: cpu, loadgenCpuUsPerHandshake: 300, foreignPct: 0, stealPct: 0 }
}

t.test('TLS configs are compared with nginx-tls, round by round; the handshake table shows it', async (t) => {
  const configs = ['nginx', 'gateway-default', 'nginx-tls', 'gateway-tls'] as const
  const runs = [throughput('nginx', 1, 10_000, 40), throughput('gateway-default', 1, 6_000, 80), throughput('nginx-tls', 1, 8_000, 50), throughput('gateway-tls', 1, 4_000, 100)]
  const hs = [handshakes('nginx-tls', 1, 1_000, 900), handshakes('gateway-tls', 1, 800, 1_200), handshakes('nginx-tls', 2, 1_200, 800), handshakes('gateway-tls', 2, 600, 1_600)]
  const summary = summarize(configs, runs, [], { idle: new Map(), loaded: new Map() }, 2000, hs)
  const of = (config: string) => summary.find((s) => s.config === config)!
  t.equal(of('gateway-default').ratios.throughputVsNginx, 0.6, 'cleartext: against nginx')
  t.equal(of('gateway-tls').ratios.throughputVsNginx, 0.5, 'TLS: against nginx-tls')
  t.equal(of('gateway-tls').ratios.cpuVsNginx, 2)
  t.equal(of('gateway-default').handshakes, undefined)
  t.match(of('gateway-tls').handshakes, { rate: 700, proxyCpuUsPerHandshake: 1_400, rateVsNginx: (0.8 + 0.5) / 2, cpuVsNginx: (1_200 / 900 + 2) / 2 })
  const table = formatHandshakeTable(summary)!
  t.match(table, /^gateway-tls +700 +0\.65x +1400\.0 +1\.67x /m)
  t.equal(reportKind({ summary }), 'tls', 'filed as bench-tls-*.json and tls-latest.json')
  t.equal(reportKind({ summary: summary.filter((s) => s.config === 'nginx' || s.config === 'gateway-default') }), 'proxy')
})

t.test('handshakes.js: every connection a full handshake and one request', async (t) => {
  const certificate = writeBenchCertificate(t.testdir())
  const sessions: boolean[] = []
  const server = createServer({ cert: readFileSync(certificate.cert), key: readFileSync(certificate.key) }, (_req, res) => res.end('x'.repeat(1024)))
  server.on('secureConnection', (socket) => sessions.push(socket.isSessionReused()))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const port = (server.address() as AddressInfo).port
  // Not execFileSync: the server runs in this process and must answer meanwhile.
  const { stdout: output } = await run(process.execPath, [`${dist}handshakes.js`, '--port', String(port), '--duration', '1', '--connections', '2'], { encoding: 'utf8' })
  const result = JSON.parse(output) as { handshakes: number; errors: number; protocol: string }
  t.ok(result.handshakes >= 5, `handshakes: ${result.handshakes}`)
  t.equal(result.errors, 0)
  t.equal(result.protocol, 'TLSv1.3')
  t.ok(sessions.length >= result.handshakes, 'one connection per request')
  t.notOk(sessions.includes(true), 'no session was resumed')
})
