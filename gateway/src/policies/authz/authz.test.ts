// Authorization rules through the layer harness: each condition alone, the deny-first order, the
// default, and the validation of rules that can never match. gateway/test/auth.test.ts keeps the
// wiring (and the path-normalization bypass attempts) end to end.
import t from 'tap'
import { ManualClock, runLayer, scriptedUpstream, type FakeRequest } from '../../../test/layer-harness.js'
import { ANONYMOUS, type ClientCertificate, type Identity } from '../../core/identity.js'
import { authz } from './authz.js'

const jwt = (extra: Partial<Identity> = {}): Identity => ({ ...ANONYMOUS, kind: 'jwt', subject: 'alice', issuer: 'https://issuer', roles: ['dev'], scopes: ['read'], claims: { email: 'alice@example.com', tier: 2, verified: true, groups: ['eng', 'ops'] }, ...extra })
const certificate: ClientCertificate = {
  subject: 'CN=billing',
  issuer: 'CN=mesh-ca',
  san: { dns: ['billing.internal'], uri: ['spiffe://mesh.example/ns/prod/sa/billing'], email: [] },
  spiffeId: 'spiffe://mesh.example/ns/prod/sa/billing',
  fingerprint: 'ab'.repeat(32),
  serial: '01',
  notAfter: Date.now() + 86_400_000,
}
const mtls: Identity = { ...ANONYMOUS, kind: 'mtls', subject: certificate.spiffeId!, issuer: certificate.issuer, certificate }

/** Whether one rule `allow: condition` lets `request` through (default deny). */
function allows(condition: Record<string, unknown>, clock = new ManualClock()) {
  const layer = runLayer(authz, { rules: [{ name: 'rule', allow: condition }] } as never, { next: scriptedUpstream(200), clock })
  return async (request: FakeRequest): Promise<boolean> => (await layer.call(request)).status === 200
}

t.test('each condition alone', async (t) => {
  const kind = allows({ kind: ['jwt', 'apiKey'] })
  t.ok(await kind({ identity: jwt() }))
  t.notOk(await kind({ identity: ANONYMOUS }))

  const subject = allows({ subject: { oneOf: ['alice', 'bob'] } })
  t.ok(await subject({ identity: jwt() }))
  t.notOk(await subject({ identity: jwt({ subject: 'mallory' }) }))

  const exactSubject = allows({ subject: 'alice' })
  t.ok(await exactSubject({ identity: jwt() }))
  t.notOk(await exactSubject({ identity: jwt({ subject: 'alice2' }) }))

  const issuer = allows({ issuer: { regex: '^https://issuer$' } })
  t.ok(await issuer({ identity: jwt() }))
  t.notOk(await issuer({ identity: jwt({ issuer: 'https://issuer.evil' }) }))

  const anyRole = allows({ roles: ['admin', 'dev'] })
  t.ok(await anyRole({ identity: jwt() }))
  t.notOk(await anyRole({ identity: jwt({ roles: ['guest'] }) }))
  const allRoles = allows({ roles: { allOf: ['admin', 'dev'] } })
  t.notOk(await allRoles({ identity: jwt() }))
  t.ok(await allRoles({ identity: jwt({ roles: ['dev', 'admin'] }) }))

  const scopes = allows({ scopes: { anyOf: ['write'] } })
  t.notOk(await scopes({ identity: jwt() }))
  t.ok(await scopes({ identity: jwt({ scopes: ['read', 'write'] }) }))

  const claims = allows({ claims: { email: { regex: '@example\\.com$' }, tier: { oneOf: [2, 3] }, verified: { equals: true }, groups: { contains: 'ops' } } })
  t.ok(await claims({ identity: jwt() }))
  t.notOk(await claims({ identity: jwt({ claims: { email: 'alice@example.com.evil', tier: 2, verified: true, groups: ['ops'] } }) }), 'regex')
  t.notOk(await claims({ identity: jwt({ claims: { email: 'alice@example.com', tier: '2', verified: true, groups: ['ops'] } }) }), 'oneOf compares types: "2" is not 2')
  t.notOk(await claims({ identity: jwt({ claims: { email: 'alice@example.com', tier: 2, verified: 'true', groups: ['ops'] } }) }), 'equals')
  t.notOk(await claims({ identity: jwt({ claims: { email: 'alice@example.com', tier: 2, verified: true, groups: 'ops' } }) }), 'contains needs a list')
  const present = allows({ claims: { tenant: { present: true }, banned: { present: false } } })
  t.ok(await present({ identity: jwt({ claims: { tenant: 'a' } }) }))
  t.notOk(await present({ identity: jwt({ claims: { tenant: 'a', banned: true } }) }))
  t.notOk(await present({ identity: jwt({ claims: {} }) }))
  const proto = allows({ claims: { constructor: { present: true } } })
  t.notOk(await proto({ identity: jwt({ claims: {} }) }), 'a claim named like a prototype property is absent unless the token has it')

  const spiffe = allows({ spiffeId: { regex: '^spiffe://mesh\\.example/ns/prod/' } })
  t.ok(await spiffe({ identity: mtls }))
  t.notOk(await spiffe({ identity: jwt() }), 'no certificate, no SPIFFE ID')
  t.ok(await spiffe({ identity: jwt({ certificate }) }), 'a JWT over an mTLS connection keeps the certificate')
  const san = allows({ san: 'billing.internal' })
  t.ok(await san({ identity: mtls }))
  t.notOk(await san({ identity: { ...mtls, certificate: { ...certificate, san: { dns: ['other.internal'], uri: [], email: [] } } } }))

  const methods = allows({ methods: ['GET', 'HEAD'] })
  t.ok(await methods({ method: 'GET' }))
  t.notOk(await methods({ method: 'DELETE' }))

  const prefix = allows({ path: { prefix: '/admin' } })
  t.ok(await prefix({ path: '/admin' }))
  t.ok(await prefix({ path: '/admin/users?x=1' }))
  t.notOk(await prefix({ path: '/administrator' }), 'whole segments')
  const exact = allows({ path: { exact: '/health' } })
  t.ok(await exact({ path: '/health?verbose=1' }), 'the query is not part of the path')
  t.notOk(await exact({ path: '/health/x' }))
  const regex = allows({ path: { regex: '^/users/[0-9]+$' } })
  t.ok(await regex({ path: '/users/42' }))
  t.notOk(await regex({ path: '/users/42/delete' }))

  const source = allows({ source: ['10.0.0.0/8', '::1'] })
  t.ok(await source({ remoteAddress: '10.1.2.3' }))
  t.ok(await source({ remoteAddress: '::ffff:10.1.2.3' }), 'IPv4-mapped')
  t.ok(await source({ remoteAddress: '::1' }))
  t.notOk(await source({ remoteAddress: '192.168.0.1' }))
  t.notOk(await source({ remoteAddress: '192.168.0.1', headers: { 'x-forwarded-for': '10.0.0.1' } }), 'X-Forwarded-For is not believed from an untrusted peer')
})

t.test('time windows, in a time zone, across midnight, on some days', async (t) => {
  const clock = new ManualClock() // 2023-11-14T22:13:20Z, a Tuesday
  const at = (iso: string) => Date.parse(iso) - clock.now()
  const office = allows({ time: { from: '09:00', to: '17:00', days: ['mon', 'tue', 'wed', 'thu', 'fri'], timezone: 'Europe/Paris' } }, clock)
  t.notOk(await office({}), '23:13 in Paris')
  await clock.advance(at('2023-11-15T08:30:00Z'))
  t.ok(await office({}), '09:30 in Paris on a Wednesday')
  await clock.advance(at('2023-11-18T10:00:00Z'))
  t.notOk(await office({}), 'a Saturday')
  const night = allows({ time: { from: '22:00', to: '06:00' } }, clock)
  t.notOk(await night({}), '10:00 UTC')
  await clock.advance(at('2023-11-18T23:30:00Z'))
  t.ok(await night({}), '23:30 UTC')
  await clock.advance(at('2023-11-19T05:59:00Z'))
  t.ok(await night({}), '05:59 UTC')
  await clock.advance(at('2023-11-19T06:00:00Z'))
  t.notOk(await night({}), '06:00 is excluded')
})

t.test('deny rules first, then allow rules, then the default; the rule goes to the security log, not the response', async (t) => {
  const layer = runLayer(
    authz,
    {
      rules: [
        { name: 'admins', allow: { roles: ['admin'] } },
        { name: 'no-deletes-from-outside', deny: { methods: ['DELETE'], source: ['0.0.0.0/0'] } },
        { name: 'readers', allow: { methods: ['GET'], kind: ['jwt'] } },
      ],
    } as never,
    { next: scriptedUpstream(200) },
  )
  t.equal((await layer.call({ identity: jwt({ roles: ['admin'] }), method: 'POST' })).status, 200, 'admins')
  const denied = await layer.call({ identity: jwt({ roles: ['admin'] }), method: 'DELETE', path: '/things/1' })
  t.equal(denied.status, 403, 'a deny rule wins over an allow rule that also matches')
  t.match(denied.headers['x-waypost-reason'], /^forbidden route=test upstream=app$/)
  t.notMatch(denied.body!.toString(), /no-deletes/, 'the rule name is not in the response')
  t.equal((await layer.call({ identity: jwt(), method: 'GET' })).status, 200, 'readers')
  t.equal((await layer.call({ identity: jwt(), method: 'POST' })).status, 403, 'default deny')
  t.equal((await layer.call({ identity: ANONYMOUS, method: 'GET' })).status, 403)
  t.match(layer.securityEvents, [
    { event: 'authorization-denied', rule: 'no-deletes-from-outside', reason: 'deny-rule', subject: 'alice', kind: 'jwt', method: 'DELETE', path: '/things/1', remote: '127.0.0.1', route: 'test' },
    { rule: 'default', reason: 'no-rule-allowed', subject: 'alice' },
    { rule: 'default', kind: 'anonymous', subject: '' },
  ])
  const open = runLayer(authz, { default: 'allow', rules: [{ name: 'no-guests', deny: { kind: ['anonymous'] } }] } as never, { next: scriptedUpstream(200) })
  t.equal((await open.call({ identity: jwt() })).status, 200, 'default allow')
  t.equal((await open.call({})).status, 403)
})

t.test('rules that can never match are refused when the file is validated', async (t) => {
  const problems = (rules: unknown[]) => authz.validate!({ rules } as never, { upstreams: new Set(), redis: false }).map((problem) => `${problem.path}: ${problem.message}`)
  t.match(problems([{ name: 'r', allow: { subject: { regex: '(a' } } }]), [/^\/rules\/0\/allow\/subject\/regex: invalid regular expression/])
  t.match(problems([{ name: 'r', allow: { claims: { 'a/b': { regex: '(?<=x)y' } } } }]), [/^\/rules\/0\/allow\/claims\/a~1b\/regex: invalid regular expression .*lookaround/])
  t.match(problems([{ name: 'r', deny: { path: { regex: '\\1' } } }]), [/^\/rules\/0\/deny\/path\/regex:/])
  t.match(problems([{ name: 'r', allow: { path: { prefix: '/a', exact: '/a' } } }]), [/exactly one of exact, prefix or regex/])
  t.match(problems([{ name: 'r', allow: { source: ['10.0.0.0/33'] } }]), [/^\/rules\/0\/allow\/source\/0: not an IP address or CIDR/])
  t.match(problems([{ name: 'r', allow: { time: { from: '25:00', to: '10:00' } } }]), [/\/time\/from: not a time of day/])
  t.match(problems([{ name: 'r', allow: { time: { from: '10:00', to: '10:00' } } }]), [/the window is empty/])
  t.match(problems([{ name: 'r', allow: { time: { from: '10:00', to: '11:00', timezone: 'Mars/Olympus' } } }]), [/unknown time zone/])
  t.match(problems([{ name: 'r', allow: { kind: ['anonymous'], roles: ['admin'] } }]), [/anonymous identities have no roles: this condition can never hold/])
  t.match(problems([{ name: 'r' }]), [/exactly one of allow or deny/])
  t.match(problems([{ name: 'r', allow: {} }, { name: 'r', deny: {} }]), [/duplicate rule name "r"/])
  t.same(problems([{ name: 'r', allow: { kind: ['anonymous'], subject: { present: false } } }]), [], 'what anonymous has is fine')
})
