// The token half of the admin guard, for callers this machine's tests cannot be (not on loopback):
// requests shaped as the HTTP server hands them over. The Host and Origin half is tested over real
// sockets in gateway/test/admin.test.ts.
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { IncomingMessage } from 'node:http'
import { refuseMutation } from './admin-guard.js'
import { isLoopback } from '../core/operator.js'

function from(remoteAddress: string, headers: Record<string, string> = {}): IncomingMessage {
  // Only what the guard reads: the peer address and the headers.
  return { socket: { remoteAddress }, headers: { host: '10.1.2.3:9901', ...headers } } as unknown as IncomingMessage
}

const TOKEN = 'a-token-of-32-characters-or-so!!'

t.test('loopback callers need no token', async (t) => {
  for (const address of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(address), address)
  for (const address of ['10.0.0.5', '::ffff:10.0.0.5', '128.0.0.1', 'fe80::1', '']) t.notOk(isLoopback(address), address)
  t.equal(await refuseMutation(from('127.0.0.1'), undefined), undefined)
})

t.test('other callers: refused without a configured token; with one, only the right Bearer token passes', async (t) => {
  t.match(await refuseMutation(from('10.0.0.5'), undefined), { status: 403, error: /loopback callers only, unless admin\.token/ })
  t.match(await refuseMutation(from('10.0.0.5'), TOKEN), { status: 401, error: /send the admin token/, headers: { 'www-authenticate': /Bearer/ } })
  t.match(await refuseMutation(from('10.0.0.5', { authorization: 'Basic Zm9vOmJhcg==' }), TOKEN), { status: 401 })
  t.match(await refuseMutation(from('10.0.0.5', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }), TOKEN), { status: 401, error: 'wrong admin token' }, 'a prefix of the token')
  t.match(await refuseMutation(from('10.0.0.5', { authorization: `Bearer ${TOKEN}x` }), TOKEN), { status: 401 }, 'longer than the token')
  t.equal(await refuseMutation(from('10.0.0.5', { authorization: `Bearer ${TOKEN}` }), TOKEN), undefined)
})

t.test('the token from a file (read at each use, so a rotated Secret applies) or from the environment', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'waypost-token-')), 'token')
  writeFileSync(file, `${TOKEN}\n`)
  const bearer = from('10.0.0.5', { authorization: `Bearer ${TOKEN}` })
  t.equal(await refuseMutation(bearer, { file }), undefined, 'a trailing newline is not part of it')
  writeFileSync(file, 'rotated-token-0123456789')
  t.match(await refuseMutation(bearer, { file }), { status: 401 }, 'the rotated token replaces the old one at once')
  t.match(await refuseMutation(bearer, { file: '/nonexistent/token' }), { status: 503, error: /cannot be read/ })
  process.env.WAYPOST_TEST_ADMIN_TOKEN = TOKEN
  t.teardown(() => void delete process.env.WAYPOST_TEST_ADMIN_TOKEN)
  t.equal(await refuseMutation(bearer, { env: 'WAYPOST_TEST_ADMIN_TOKEN' }), undefined)
  t.match(await refuseMutation(bearer, { env: 'WAYPOST_TEST_UNSET' }), { status: 503 })
})

t.test('even with the token, a web page is refused', async (t) => {
  const bearer = { authorization: `Bearer ${TOKEN}` }
  t.match(await refuseMutation(from('10.0.0.5', { ...bearer, host: 'admin.attacker.example' }), TOKEN), { status: 403 })
  t.match(await refuseMutation(from('10.0.0.5', { ...bearer, origin: 'https://attacker.example' }), TOKEN), { status: 403 })
  t.equal(await refuseMutation(from('10.0.0.5', { ...bearer, origin: 'http://10.1.2.3:9901' }), TOKEN), undefined, 'its own origin is fine')
})
