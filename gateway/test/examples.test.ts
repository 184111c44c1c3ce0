// The examples in config/examples/ do what their headers promise: each header's commands, taken
// from the file as written and run with sh and curl against a real gateway in front of real stubs
// (the file's ports swapped for free ones), give what the header says they give. The other
// examples' headers are run in examples-headers.test.ts.
import t from 'tap'
import { spawn } from 'node:child_process'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { metricsText, sleep } from './helpers.js'
import { example, gatewayFor, hasCurl, headerCommand, ports, sh, STUB_CLI, withPorts } from './example-runner.js'

if (!hasCurl) t.comment('curl is not installed: the examples’ commands cannot be run here')

t.test('rate-limit.yaml: the burst runs out and 429s follow, on a fast machine and a slow one', { skip: !hasCurl }, async (t) => {
  const text = example('rate-limit.yaml')
  const at = await ports()
  const stub = await startStub({ port: at.stub })
  t.teardown(() => stub.close())
  await gatewayFor(withPorts(text, at), (fn) => t.teardown(fn))
  const burst = headerCommand(text, 'curl -s --no-progress-meter --parallel')
  const counts = (output: string): Map<string, number> => new Map(output.trim().split('\n').map((line) => line.trim().split(/\s+/).reverse() as [string, string]).map(([status, count]) => [status, Number(count)]))

  const fast = await sh(burst, at)
  t.equal(fast.code, 0)
  t.equal(fast.stderr, '', "nothing on the terminal but the counts (curl's parallel progress meter ignores -s)")
  const fastCounts = counts(fast.stdout)
  // The bucket refills 10 a second while the 60 go out, more on a busy machine: at least the burst passes.
  t.ok((fastCounts.get('200') ?? 0) >= 20, `about 20 × 200, the burst: ${fast.stdout.trim()}`)
  t.ok((fastCounts.get('429') ?? 0) >= 10, `the rest 429: ${fast.stdout.trim()}`)
  t.equal((fastCounts.get('200') ?? 0) + (fastCounts.get('429') ?? 0), 60, 'nothing else')

  // A slow machine, or a slow upstream: every request takes 300 ms. One curl after another would
  // take 18 s, long enough to refill the bucket three times over; 60 at once still find it empty.
  await sleep(2100) // the bucket full again
  const slow = await sh(burst.replace('/status/200', '/delay/0.3'), at)
  const slowCounts = counts(slow.stdout)
  t.ok((slowCounts.get('429') ?? 0) >= 10, `still 429s when every request is slow: ${slow.stdout.trim()}`)

  const headers = await sh(headerCommand(text, 'curl -si localhost:8080/status/200 | grep -i ratelimit'), at)
  t.match(headers.stdout, /^ratelimit-policy: "default";q=20;w=\d+/im)
  t.match(headers.stdout, /^ratelimit: "default";r=\d+;t=\d+/im)
})

t.test('chaos.yaml: faults only on x-waypost-fault, in the shares it says; they never trip the breaker, upstream 503s do', { skip: !hasCurl }, async (t) => {
  const text = example('chaos.yaml')
  const at = await ports()
  const stub = await startStub({ port: at.stub })
  t.teardown(() => stub.close())

  t.test('the header’s breaker commands, on a fresh start', async (t) => {
    await gatewayFor(withPorts(text, at), (fn) => t.teardown(fn))
    const untouched = await sh(headerCommand(text, 'curl -i localhost:8080/status/200'), at)
    t.match(untouched.stdout, /^HTTP\/1\.1 200/)
    t.match((await sh(headerCommand(text, "curl -i -H 'x-waypost-fault: 1'"), at)).stdout, /^HTTP\/1\.1 (200|503)/)
    const loop = await sh(headerCommand(text, 'for i in $(seq 25); do curl -s -o /dev/null localhost:8080/status/503'), at)
    t.equal(loop.code, 0, loop.stderr)
    const breakers = await sh(headerCommand(text, 'curl -s localhost:9901/breakers'), at)
    t.match(breakers.stdout, '"state": "open"', 'upstream 503s trip it')
    const reason = await sh(headerCommand(text, 'curl -si localhost:8080/status/200 | grep -i x-waypost-reason'), at)
    t.match(reason.stdout, /^x-waypost-reason: breaker-open/im)
  })

  t.test('the shares, over 300 requests with the header; the breaker hears nothing of them', async (t) => {
    const gateway = await gatewayFor(withPorts(text, at), (fn) => t.teardown(fn))
    const outcomes = await Promise.all(
      Array.from({ length: 300 }, async () => {
        const response = await request(`${gateway.url}/status/200`, { headers: { 'x-waypost-fault': '1' } })
        await response.body.dump()
        return { status: response.statusCode, reason: String(response.headers['x-waypost-reason']) }
      }),
    )
    const aborted = outcomes.filter((outcome) => outcome.status === 503 && outcome.reason.startsWith('fault-abort')).length
    t.ok(aborted >= 10 && aborted <= 60, `about 10% aborted with 503 fault-abort: ${aborted} of 300`)
    t.equal(outcomes.filter((outcome) => outcome.status === 200).length, 300 - aborted, 'every other request reached the stub')
    // The gateway's own count of delays: timing each request on a busy machine would not tell.
    const delayed = Number(/waypost_faults_injected_total\{route="chaos",kind="delay"\} (\d+)/.exec(await metricsText(gateway))?.[1] ?? 0)
    t.ok(delayed >= 30 && delayed <= 100, `about 20% delayed 1.5 s: ${delayed} of 300`)
    const breakers = (await (await request(`${gateway.adminUrl}/breakers`)).body.json()) as { breakers: Array<{ state: string; stats: { failures: number } }> }
    t.match(breakers.breakers[0], { state: 'closed', stats: { failures: 0 } }, `${aborted} injected aborts reached no breaker: they sit outside it`)
    const plain = await request(`${gateway.url}/status/200`)
    await plain.body.dump()
    t.equal(plain.headers['x-waypost-reason'], undefined, 'without the header: untouched')
  })
})

t.test('endpoints.yaml: stopping the primary stub (Ctrl-C) fails over with no error, and npm start’s stub keeps serving', { skip: !hasCurl }, async (t) => {
  const text = example('endpoints.yaml')
  const at = await ports()
  // npm start's stub, on what the file calls 3000: the fail-over.
  const failover = await startStub({ port: at.stub })
  t.teardown(() => failover.close())
  // The primary, as the header starts it in a second terminal, on what the file calls 3001.
  const primaryCommand = headerCommand(text, 'node dist/upstream-stub/src/cli.js --port 3001')
  t.equal(primaryCommand, 'node dist/upstream-stub/src/cli.js --port 3001')
  const primary = spawn(process.execPath, [STUB_CLI, '--port', String(at.stub2)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const primaryExited = new Promise<number | null>((resolve) => primary.once('exit', resolve))
  t.teardown(() => void primary.kill('SIGKILL'))
  await new Promise<void>((resolve) => primary.stdout!.once('data', () => resolve())) // "upstream-stub listening on …"
  const gateway = await gatewayFor(withPorts(text, at), (fn) => t.teardown(fn))

  const loop = sh(headerCommand(text, 'for i in $(seq 50)'), at, 120_000)
  // Ctrl-C in the primary's terminal once a few requests have gone through it.
  const primaryAddress = `http://127.0.0.1:${at.stub2}`
  const endpointsSeen = (): string[] => gateway.lines.filter((line) => line.msg === 'access').map((line) => String(line.endpoint))
  for (const deadline = Date.now() + 30_000; endpointsSeen().filter((endpoint) => endpoint === primaryAddress).length < 5 && Date.now() < deadline; ) await sleep(50)
  primary.kill('SIGINT')
  t.equal(await primaryExited, 0, 'the primary stops on Ctrl-C')
  const result = await loop
  const statuses = result.stdout.trim().split(/\s+/)
  t.equal(statuses.length, 50)
  t.same(
    statuses.filter((status) => status !== '200'),
    [],
    'every request succeeded: the one that found the primary gone was retried on the fail-over',
  )
  const seen = endpointsSeen()
  const firstFailover = seen.indexOf(`http://127.0.0.1:${at.stub}`)
  t.ok(seen.indexOf(primaryAddress) === 0 && firstFailover > 0, `the primary first, then the fail-over: ${[...new Set(seen)].join(' then ')}`)
  t.notOk(seen.slice(firstFailover + 1).includes(primaryAddress), 'nothing went to the stopped primary after that')
  t.match(text, '`curl -s localhost:9901/upstreams`')
  const upstreams = await sh('curl -s localhost:9901/upstreams', at)
  t.match(upstreams.stdout, `127.0.0.1:${at.stub2}`, 'GET /upstreams lists the endpoints')
  t.match((await request(`${gateway.url}/status/200`)).statusCode, 200, 'the gateway and the fail-over still serve')
})
