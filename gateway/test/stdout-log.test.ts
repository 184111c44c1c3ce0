// The log as `waypost run` writes it to stdout: pino's lines and the access log's 64 KiB batches
// through one sonic-boom stream. A busy run must come out whole: every access line once, valid
// JSON, characters beyond ASCII intact (sonic-boom counts bytes where a string counts UTF-16
// units), the access lines before the line saying the gateway stopped, and that line flushed at exit.
import t from 'tap'
import { Agent, request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, spawnGateway, tempConfig } from './helpers.js'

const REQUESTS = 3000
const CONCURRENCY = 20

t.test('thousands of access lines with non-ASCII hosts, beside pino lines, come out whole and in full', async (t) => {
  const stub = await startStub()
  t.teardown(() => stub.close())
  const gateway = await spawnGateway(tempConfig(catchAllConfig(stub.url)))
  t.teardown(() => gateway.stop())
  const agent = new Agent({ connections: CONCURRENCY })
  t.teardown(() => agent.close())

  // Host reaches node:http as latin1 text ("café" as c,a,f,U+00E9) and the access line holds it as
  // such: two UTF-8 bytes for one character, in every line.
  const hostOf = (i: number): string => `café-${i}.test`
  let next = 0
  const failed: string[] = []
  const client = async (): Promise<void> => {
    while (next < REQUESTS) {
      const i = next++
      const response = await request(`${gateway.url}/anything/${i}`, { dispatcher: agent, headers: { host: hostOf(i) } })
      await response.body.dump()
      if (response.statusCode !== 200) failed.push(`${i}: ${response.statusCode}`)
      // pino's own lines between the batches: a log-level change logs one line each time.
      if (i % 500 === 0) await (await request(`${gateway.adminUrl}/logging?level=${i % 1000 === 0 ? 'debug' : 'info'}`, { method: 'POST' })).body.dump()
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, client))
  t.same(failed, [], 'every request answered 200')
  gateway.child.kill('SIGTERM')
  const exit = await gateway.exited
  t.equal(exit.code, 0, 'drained and exited')

  const unparsed = gateway.lines.filter((line) => line.level === 0)
  t.same(unparsed, [], 'every stdout line is JSON')
  const access = gateway.lines.filter((line) => line.msg === 'access')
  t.equal(access.length, REQUESTS, 'one access line per request, none lost or doubled')
  const seen = new Set(access.map((line) => String(line.path)))
  t.equal(seen.size, REQUESTS, 'each request its own line')
  const wrongHost = access.filter((line) => line.host !== hostOf(Number(String(line.path).slice('/anything/'.length))))
  t.same(wrongHost.slice(0, 3), [], 'each line names its request\'s host, non-ASCII characters intact')
  t.ok(gateway.lines.filter((line) => /level/.test(String(line.msg))).length >= 2, 'pino\'s lines about the level changes are there too')
  t.equal(gateway.lines.at(-1)?.msg, 'stopped', 'the last line, written at exit, is flushed, after every access line')
})
