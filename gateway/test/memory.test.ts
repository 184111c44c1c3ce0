// What a running gateway has loaded, for its idle memory (docs/performance.md#memory): only the
// parts of undici it uses (proxy/undici.ts), never undici's index (fetch, WebSocket, mocks, caches)
// nor Node's bundled undici, which `import … from 'node:http'` pulls in on Node 24 (core/node-http.ts).
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, spawnGateway, tempConfig } from './helpers.js'

/** Preloaded into the gateway: on SIGUSR2, one stderr line saying what is loaded. */
const PROBE = `import { createRequire } from 'node:module'
const cache = createRequire(import.meta.url).cache
process.on('SIGUSR2', () => {
  const loaded = Object.keys(cache)
  process.stderr.write('LOADED ' + JSON.stringify({
    bundledUndici: process.moduleLoadList.some((name) => name.includes('internal/deps/undici')),
    undiciIndex: loaded.some((file) => file.endsWith('/node_modules/undici/index.js')),
    undiciPool: loaded.some((file) => file.endsWith('/node_modules/undici/lib/dispatcher/pool.js')),
  }) + '\\n')
})
`

t.test("a gateway that has proxied a request holds neither undici's index nor Node's bundled undici", async (t) => {
  const stub = await startStub()
  t.teardown(() => stub.close())
  const probe = join(mkdtempSync(join(tmpdir(), 'waypost-memory-')), 'probe.mjs')
  writeFileSync(probe, PROBE)
  // A health check too: its client is an undici Client, from its own file as well.
  const gateway = await spawnGateway(tempConfig(catchAllConfig({ url: stub.url, healthCheck: { path: '/status/200', interval: '1s' } })), { NODE_OPTIONS: `--import=${probe}` })
  t.teardown(() => gateway.stop())
  const response = await request(`${gateway.url}/anything/x`)
  t.equal(response.statusCode, 200, 'proxied through the pool')
  await response.body.text()
  process.kill(gateway.pid, 'SIGUSR2')
  const deadline = Date.now() + 10_000
  while (!gateway.stderr().includes('LOADED ') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  const line = gateway.stderr().split('\n').find((text) => text.startsWith('LOADED '))
  t.ok(line, 'the probe answered')
  t.same(JSON.parse(line!.slice('LOADED '.length)), { bundledUndici: false, undiciIndex: false, undiciPool: true })
})
