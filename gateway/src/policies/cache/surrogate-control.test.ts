// Surrogate-Control without sockets: which directives are ours, what they mean, what is forwarded.
import t from 'tap'
import { stripOurSurrogateControl } from './surrogate-control.js'
import { responseDirectives as withTarget } from './targeted.js'
import type { ResponseHeaders } from '../../core/exchange.js'

const responseDirectives = (headers: ResponseHeaders): ReturnType<typeof withTarget> => withTarget(headers, 'cdn-cache-control')

t.test('directives for us replace Cache-Control', async (t) => {
  t.match(responseDirectives({ 'cache-control': 'no-store', 'surrogate-control': 'max-age=3600' }), { noStore: false, sMaxAge: 3600 })
  t.match(responseDirectives({ 'cache-control': 'max-age=10000', 'surrogate-control': 'no-store' }), { noStore: true, maxAge: undefined })
  t.match(responseDirectives({ 'surrogate-control': 'max-age=60;waypost' }), { sMaxAge: 60 }, 'targeted at our device token')
  t.match(responseDirectives({ 'surrogate-control': 'max-age=60+600, content="ESI/1.0"' }), { sMaxAge: 60 }, 'the +M extension and content= are ignored')
  t.match(responseDirectives({ 'surrogate-control': 'MAX-AGE=30' }), { sMaxAge: 30 })
  t.match(responseDirectives({ 'surrogate-control': 'max-age=x' }), { sMaxAge: 0 }, 'an invalid number is the cautious 0')
})

t.test('directives for other devices are left alone', async (t) => {
  t.match(responseDirectives({ 'cache-control': 'max-age=5', 'surrogate-control': 'max-age=3600;akamai' }), { maxAge: 5, sMaxAge: undefined })
  t.match(responseDirectives({ 'cache-control': 'max-age=5', 'surrogate-control': 'content="a;b"' }), { sMaxAge: undefined, maxAge: 5 }, 'nothing we act on: Cache-Control decides')
})

t.test('our directives are stripped before the response goes on; the others stay', async (t) => {
  const only = { 'surrogate-control': 'max-age=60' }
  stripOurSurrogateControl(only)
  t.same(only, {})
  const mixed = { 'surrogate-control': 'max-age=60;waypost, no-store;cdn' }
  stripOurSurrogateControl(mixed)
  t.same(mixed, { 'surrogate-control': 'no-store;cdn' })
  const theirs = { 'surrogate-control': 'max-age=60;cdn' }
  stripOurSurrogateControl(theirs)
  t.same(theirs, { 'surrogate-control': 'max-age=60;cdn' })
})
