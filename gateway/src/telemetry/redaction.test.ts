// What the log redaction replaces: credential headers wherever they appear in a logged value,
// configured query parameters and Bearer/Basic credentials in any text; and what it leaves.
import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { loggerOptions } from './logger.js'
import { LogRedaction, REDACTED, fingerprint } from './redaction.js'

t.test('credential headers, by name in any case, at any depth; raw header lists too', async (t) => {
  const redaction = new LogRedaction()
  const logged = {
    headers: { Authorization: 'Bearer abc', cookie: 'sid=1', 'set-cookie': ['a=1', 'b=2'], 'proxy-authorization': 'Basic eA==', accept: '*/*' },
    nested: { deeper: { request: { headers: { 'PROXY-AUTHORIZATION': 'x' } } } },
    rawHeaders: ['Host', 'example', 'Cookie', 'sid=2', 'Accept', 'text/plain'],
  }
  t.same(redaction.scrub(logged), {
    headers: { Authorization: REDACTED, cookie: REDACTED, 'set-cookie': REDACTED, 'proxy-authorization': REDACTED, accept: '*/*' },
    nested: { deeper: { request: { headers: { 'PROXY-AUTHORIZATION': REDACTED } } } },
    rawHeaders: ['Host', 'example', 'Cookie', REDACTED, 'Accept', 'text/plain'],
  })
  t.equal(logged.headers.Authorization, 'Bearer abc', 'the logged object itself is left alone')
})

t.test('configured headers join the four; query lists replace the default', async (t) => {
  const redaction = new LogRedaction()
  t.equal(redaction.scrubText('/x?access_token=s3cret&page=2'), `/x?access_token=${REDACTED}&page=2`, 'a default query parameter')
  redaction.configure(['X-Api-Key'], ['session'])
  t.same(redaction.scrub({ 'x-api-key': 'k', authorization: 'a', other: 'o' }), { 'x-api-key': REDACTED, authorization: REDACTED, other: 'o' })
  t.equal(redaction.scrubText('GET /x?Session=abc;page=1&access_token=t'), `GET /x?Session=${REDACTED};page=1&access_token=t`, 'case-insensitive; the default list is gone')
  t.equal(redaction.scrubText('uri http://h/p?a=1&session=abc#frag'), `uri http://h/p?a=1&session=${REDACTED}#frag`)
  t.equal(redaction.scrubText('nothing=here session=notaquery'), 'nothing=here session=notaquery', 'only after ?, & or ;')
})

t.test('Bearer and Basic credentials in any text; errors copied with message and stack scrubbed', async (t) => {
  const redaction = new LogRedaction()
  t.equal(redaction.scrubText('upstream said: authorization: Bearer eyJhbGciOi.x.y'), `upstream said: authorization: Bearer ${REDACTED}`)
  const error = Object.assign(new TypeError('bad url /cb?code=abc123'), { code: 'E_X' })
  const scrubbed = redaction.scrub(error) as TypeError & { code: string }
  t.ok(scrubbed instanceof TypeError)
  t.equal(scrubbed.message, `bad url /cb?code=${REDACTED}`)
  t.notMatch(scrubbed.stack, 'abc123')
  t.equal(scrubbed.code, 'E_X')
})

t.test('a fingerprint tells keys apart without showing them', async (t) => {
  t.match(fingerprint('key-1'), /^sha256:[0-9a-f]{12}$/)
  t.not(fingerprint('key-1'), fingerprint('key-2'))
  t.equal(fingerprint('key-1'), fingerprint('key-1'))
})

t.test('through pino: every argument of a log call is scrubbed before the line is written', async (t) => {
  const lines: string[] = []
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) })
  const redaction = new LogRedaction()
  redaction.configure(['x-tenant-key'], ['token'])
  const log = pino(loggerOptions('debug', redaction), sink)
  log.info({ req: { url: '/a?token=TOPSECRET', headers: { cookie: 'COOKIESECRET', 'x-tenant-key': 'TENANTSECRET' } } }, 'request %s', '/b?token=TOPSECRET2')
  log.child({ route: 'r' }).debug('Authorization: Basic QUxBRERJTjpPcGVuU2VzYW1l')
  const text = lines.join('')
  for (const secret of ['TOPSECRET', 'COOKIESECRET', 'TENANTSECRET', 'QUxBRERJTjpPcGVuU2VzYW1l']) t.notMatch(text, secret, `no ${secret}`)
  t.match(text, /"url":"\/a\?token=\[redacted\]"/)
  t.match(text, /"msg":"request \/b\?token=\[redacted\]"/)
  t.match(text, /"route":"r"/, 'child loggers keep the hook')
})
