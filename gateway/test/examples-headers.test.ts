// The headers of resilience.yaml, cache.yaml and resilience-cache.yaml: each command, taken from
// the file as written and run with sh and curl against a real gateway in front of the stub, gives
// what its comment says.
import t from 'tap'
import { startStub } from '../../upstream-stub/src/stub.js'
import { example, gatewayFor, hasCurl, headerCommand, ports, sh, withPorts } from './example-runner.js'

if (!hasCurl) t.comment('curl is not installed: the examples’ commands cannot be run here')

t.test('resilience.yaml, cache.yaml, resilience-cache.yaml: each header command gives what it says', { skip: !hasCurl }, async (t) => {
  /** Each header command (by its start) and what its output must show. */
  const expectations: Record<string, Array<[string, RegExp[]]>> = {
    'resilience.yaml': [
      ['curl -i localhost:8080/sequence/demo?codes=503,200', [/^HTTP\/1\.1 200/, /^x-waypost-attempts: 2\r?$/im]],
      ['curl -i localhost:8080/delay/3', [/^HTTP\/1\.1 504/, /^x-waypost-attempts: 3\r?$/im, /^x-waypost-reason: attempt-timeout/im]],
      ["curl -s localhost:9901/metrics | grep -E 'waypost_(retries|upstream_attempts|breaker_state)'", [/^waypost_upstream_attempts_total\{/m, /^waypost_breaker_state\{/m, /^waypost_retries_total\{/m]],
      ['curl -s localhost:9901/breakers', [/"state": "closed"/]],
    ],
    'cache.yaml': [
      ["curl -si localhost:8080/cache/60 | grep -i -E 'cache-status|age'", [/^cache-status: waypost; fwd=uri-miss; stored/im]],
      ["curl -si localhost:8080/cache/60 | grep -i -E 'cache-status|age'", [/^cache-status: waypost; hit/im, /^age: \d+/im]],
      [`curl -s -XPOST localhost:9901/cache/purge -d '{"prefix": "/cache/"}'`, [/"purged": 1/]],
      ['curl -s localhost:9901/metrics | grep waypost_cache_', [/^waypost_cache_/m]],
    ],
    'resilience-cache.yaml': [
      ["curl -si 'localhost:8080/flaky?fail=0&maxAge=5' | grep -i -E 'cache-status|age'", [/^cache-status: waypost; fwd=uri-miss; stored/im]],
      ["curl -si 'localhost:8080/flaky?fail=0&maxAge=5' | grep -i -E 'cache-status|age'", [/^cache-status: waypost; hit/im]],
      ["curl -si 'localhost:8080/flaky?fail=1&maxAge=5'", [/^HTTP\/1\.1 503/, /^x-waypost-attempts: 3\r?$/im]],
    ],
  }
  for (const [name, steps] of Object.entries(expectations)) {
    t.test(name, async (t) => {
      const text = example(name)
      const at = await ports()
      const stub = await startStub({ port: at.stub })
      t.teardown(() => stub.close())
      await gatewayFor(withPorts(text, at), (fn) => t.teardown(fn))
      for (const [start, expected] of steps) {
        const command = headerCommand(text, start)
        const result = await sh(command, at)
        for (const pattern of expected) t.match(result.stdout, pattern, `${command}: ${pattern}`)
      }
    })
  }
})
