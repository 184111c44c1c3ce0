// The 2-core benchmark's pieces that need no load (`npm run bench -- --workers`): the preset and
// its pinning, the gateway-default-2w policy file, and the nginx-2w and haproxy-2t configs as the
// real nginx and haproxy check them.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import { formatError, parseConfig } from '../../gateway/src/config/load.js'
import { findTool } from '../lib/tools.js'
import { benchOptions, MULTI_CPU_CONFIG_NAMES, WORKERS_CONFIGS } from './options.js'
import { gatewayConfig, haproxyConf, nginxTwoWorkersConf } from './topology.js'
import { reportKind } from './report.js'

const run = promisify(execFile)

t.test('--workers: nginx 1 and 2 workers, haproxy 2 threads, the gateway 1 and 2 workers; the 2-core ones on 0,1', async (t) => {
  const options = benchOptions(['--workers'])
  if (options === 'help') throw new Error('unexpected help')
  t.same(options.configs, ['nginx', 'nginx-2w', 'haproxy-2t', 'gateway-default', 'gateway-default-2w'])
  t.same(options.configs, WORKERS_CONFIGS)
  t.same(MULTI_CPU_CONFIG_NAMES, ['nginx-2w', 'haproxy-2t', 'gateway-default-2w'])
  t.equal(options.serverCpus, '0')
  t.equal(options.multiServerCpus, '0,1', 'the two cores; the load generator stays on CPU 1 and shares it')
  t.match(benchOptions(['--workers', '--multi-server-cpus', '2,3']), { multiServerCpus: '2,3' })
  t.throws(() => benchOptions(['--workers', '--tls']), /one preset at a time/)
  t.equal(reportKind({ summary: [{ config: 'gateway-default-2w' }] as never }), 'workers', 'filed apart from the proxy comparison')
})

t.test('gateway-default-2w: gateway-default in 2 workers, and the gateway accepts it', async (t) => {
  const text = gatewayConfig('gateway-default-2w', 19024, 19025, 19000)
  const doc = parse(text) as { workers: number; defaults: unknown; listen: unknown; admin: unknown }
  t.equal(doc.workers, 2)
  t.same(doc.defaults, parse(gatewayConfig('gateway-default', 19003, 19013, 19000)).defaults, 'the same chain as gateway-default')
  t.same(doc.listen, { address: '127.0.0.1:19024' })
  t.same(doc.admin, { address: '127.0.0.1:19025' })
  const result = parseConfig(text, 'gateway-default-2w.yaml')
  t.same(result.ok ? [] : result.errors.map(formatError), [])
})

t.test('nginx-2w: a master and 2 workers, accepted by nginx -t', { skip: findTool('nginx') === undefined ? 'nginx is not installed' : false }, async (t) => {
  const prefix = mkdtempSync(join(tmpdir(), 'waypost-nginx-2w-'))
  for (const dir of ['logs', 'tmp']) mkdirSync(join(prefix, dir))
  const conf = nginxTwoWorkersConf(prefix, 19022, 19000)
  t.match(conf, /^master_process on;$/m)
  t.match(conf, /^worker_processes 2;$/m)
  const file = join(prefix, 'nginx.conf')
  writeFileSync(file, conf)
  const checked = await run(findTool('nginx')!, ['-t', '-p', prefix, '-c', file, '-e', join(prefix, 'logs', 'error.log')])
  t.match(checked.stderr, /syntax is ok/)
})

t.test('haproxy-2t: 2 threads, accepted by haproxy -c', { skip: findTool('haproxy') === undefined ? 'haproxy is not installed' : false }, async (t) => {
  const conf = haproxyConf(19023, 19000)
  t.match(conf, /^\s*nbthread 2$/m)
  const file = join(mkdtempSync(join(tmpdir(), 'waypost-haproxy-2t-')), 'haproxy.cfg')
  writeFileSync(file, conf)
  const checked = await run(findTool('haproxy')!, ['-c', '-f', file])
  t.match(`${checked.stdout}${checked.stderr}`, /Configuration file is valid/)
})
