// PURGE on a route is an operator's act (it drops the stale copies staleIfError needs in an
// outage): callers on loopback, with the admin token, or in purgeFrom. The layer harness plays the
// non-loopback callers a test on this machine cannot be.
import t from 'tap'
import { readBody, runLayer, scriptedUpstream, streamingBody, type FakeRequest } from '../../../test/layer-harness.js'
import { cache } from './cache.js'

const TOKEN = 'purge-token-0123456789abcdef'

t.test('PURGE: operators only; others get 401/403 and the entry stays', async (t) => {
  const next = scriptedUpstream(() => ({ status: 200, headers: { 'cache-control': 'max-age=60', date: new Date().toUTCString() }, body: streamingBody('stored'), origin: 'upstream' }))
  const layer = runLayer(cache, { purge: true, purgeFrom: ['192.0.2.0/24'] }, { next, adminToken: TOKEN })
  // Each answer is read to its end, as a client would: the cache stores what it delivered.
  const send = async (request: FakeRequest) => {
    const response = await layer.call(request)
    await readBody(response)
    return response
  }
  await send({ path: '/page' })
  t.match((await send({ path: '/page' })).headers['cache-status'], /hit/, 'stored')

  const stranger = await send({ method: 'PURGE', path: '/page', remoteAddress: '10.0.0.5' })
  t.equal(stranger.status, 401)
  t.match(stranger.headers['x-waypost-reason'], /^purge-refused/)
  const forged = await send({ method: 'PURGE', path: '/page', remoteAddress: '10.0.0.5', headers: { authorization: 'Bearer not-the-token-at-all' } })
  t.equal(forged.status, 401)
  t.match((await send({ path: '/page' })).headers['cache-status'], /hit/, 'still stored after the refusals')

  t.equal((await send({ method: 'PURGE', path: '/page', remoteAddress: '10.0.0.5', headers: { authorization: `Bearer ${TOKEN}` } })).status, 200, 'the admin token')
  await send({ path: '/page' })
  t.equal((await send({ method: 'PURGE', path: '/page', remoteAddress: '192.0.2.7' })).status, 200, 'a purgeFrom address')
  await send({ path: '/page' })
  t.equal((await send({ method: 'PURGE', path: '/page', remoteAddress: '127.0.0.1' })).status, 200, 'loopback')
  t.equal(next.calls.length, 3, 'each purge made the next GET go upstream')
  t.same(
    layer.securityEvents.map((event) => `${event.event} ${event.reason} ${event.status} ${event.remote}`),
    ['admin-action PURGE 401 10.0.0.5', 'admin-action PURGE 401 10.0.0.5', 'admin-action PURGE 200 10.0.0.5', 'admin-action PURGE 200 192.0.2.7', 'admin-action PURGE 200 127.0.0.1'],
    'every PURGE, refused or done, is in the security log',
  )
  t.notOk(JSON.stringify(layer.securityEvents).includes(TOKEN), 'without the admin token')

  const noToken = runLayer(cache, { purge: true }, { next })
  t.equal((await noToken.call({ method: 'PURGE', path: '/page', remoteAddress: '10.0.0.5' })).status, 403, 'no admin token configured: loopback only')
})

t.test('validate: purgeFrom entries are addresses or CIDRs', async (t) => {
  t.same(cache.validate!({ purgeFrom: ['10.0.0.0/8', 'ten'] }, { upstreams: new Set(), redis: false }), [{ path: '/purgeFrom/1', message: 'not an IP address or CIDR: "ten"' }])
})
