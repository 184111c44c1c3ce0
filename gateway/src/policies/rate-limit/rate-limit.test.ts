// Rate limits keyed on identity, through the layer harness: the bucket follows who `auth` proved
// (an API key's rateLimitKey, else kind and subject), and anonymous requests fall back to their address.
import t from 'tap'
import { runLayer, scriptedUpstream } from '../../../test/layer-harness.js'
import { ANONYMOUS, type Identity } from '../../core/identity.js'
import { rateLimit } from './rate-limit.js'

const user = (subject: string, extra: Partial<Identity> = {}): Identity => ({ ...ANONYMOUS, kind: 'jwt', subject, issuer: 'https://issuer', ...extra })

t.test('key: identity gives each authenticated caller its own bucket', async (t) => {
  const layer = runLayer(rateLimit, { rate: 1, burst: 1, key: 'identity' }, { next: scriptedUpstream(200) })
  const status = async (identity: Identity, remoteAddress = '10.0.0.1') => (await layer.call({ identity, remoteAddress })).status
  t.equal(await status(user('alice')), 200)
  t.equal(await status(user('alice'), '10.0.0.2'), 429, 'alice from another address shares her bucket')
  t.equal(await status(user('bob')), 200, 'bob from alice\'s address has his own')
  t.equal(await status(user('alice', { kind: 'apiKey', rateLimitKey: 'gold' })), 200, 'a rateLimitKey names its own bucket')
  t.equal(await status(user('carol', { kind: 'apiKey', rateLimitKey: 'gold' })), 429, 'shared by every key that names it')
  t.equal(await status(ANONYMOUS, '10.0.0.9'), 200, 'anonymous: by address')
  t.equal(await status(ANONYMOUS, '10.0.0.9'), 429)
  t.equal(await status(ANONYMOUS, '10.0.0.8'), 200)
})
