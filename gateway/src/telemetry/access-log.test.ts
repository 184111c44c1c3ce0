// The hand-written access line must stay valid JSON with the values it was given, whatever the
// path, endpoint or timings hold: it is built from strings, not by a serializer.
import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { AccessLog, type AccessRecord } from './access-log.js'

function capture(): { log: AccessLog; lines: () => Array<Record<string, unknown>> } {
  let text = ''
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString()
      done()
    },
  })
  const log = new AccessLog(pino({ level: 'info' }, sink))
  return {
    log,
    lines: () => {
      log.flush()
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
    },
  }
}

const base: AccessRecord = {
  reqId: 'ab-12_3.x:y@z/w+q=',
  route: 'all',
  upstream: 'app',
  endpoint: 'http://127.0.0.1:3000',
  method: 'GET',
  host: 'app.example',
  path: '/',
  status: 200,
  durationMs: 1,
  upstreamMs: -1,
  attempts: 1,
  tries: '',
  bytesIn: 10,
  bytesOut: 20,
  reason: '',
  cache: '',
  error: undefined,
  remote: '127.0.0.1',
}

t.test('timings are milliseconds rounded to three decimals', async (t) => {
  const { log, lines } = capture()
  const values = [0, 0.0004, 0.0005, 0.001, 0.01, 0.05, 1.05, 3.9999, 12, 1234.5678, 0.123456, 99.9995, 0.9995, 1.9999, -0.0006, -2.5, 86_400_000.25]
  for (const value of values) log.write({ ...base, durationMs: value, upstreamMs: value >= 0 ? value / 2 : -1 })
  const written = lines()
  t.equal(written.length, values.length)
  values.forEach((value, i) => {
    t.equal(written[i]!.durationMs, Math.round(value * 1e3) / 1e3, `durationMs ${value}`)
    if (value >= 0) t.equal(written[i]!.upstreamMs, Math.round((value / 2) * 1e3) / 1e3, `upstreamMs ${value / 2}`)
  })
})

t.test('paths, endpoints and errors with quotes and control characters stay valid JSON', async (t) => {
  const { log, lines } = capture()
  const odd = 'a"b\\c\u0001d\u2028é'
  log.write({ ...base, path: `/${odd}`, host: odd, endpoint: `http://${odd}`, error: odd })
  log.write({ ...base, endpoint: 'http://127.0.0.1:3001' })
  log.write({ ...base, endpoint: '', upstreamMs: -1 })
  const [first, second, third] = lines()
  t.equal(first!.path, `/${odd}`)
  t.equal(first!.endpoint, `http://${odd}`)
  t.equal(first!.error, odd)
  t.equal(first!.host, odd)
  t.equal(first!.reqId, base.reqId)
  t.equal(second!.endpoint, 'http://127.0.0.1:3001', 'a new endpoint is not given the last one')
  t.equal(second!.host, 'app.example', 'nor a new host the last one')
  t.notOk('endpoint' in third!, 'no endpoint when no attempt was made')
  t.notOk('upstreamMs' in third!)
})

t.test('trace_id and span_id when tracing gave them, absent otherwise', async (t) => {
  const { log, lines } = capture()
  log.write({ ...base, traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' })
  log.write(base)
  const [traced, plain] = lines()
  t.equal(traced!.trace_id, '4bf92f3577b34da6a3ce929d0e0e4736')
  t.equal(traced!.span_id, '00f067aa0ba902b7')
  t.notOk('trace_id' in plain! || 'span_id' in plain!)
})
