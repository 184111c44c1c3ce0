// Vary's comparison of request headers (RFC 9111 §4.1) without sockets.
import t from 'tap'
import { varyValue } from './vary.js'

t.test('spacing and line splits do not matter; absent is not empty', async (t) => {
  t.equal(varyValue('accept-encoding', 'gzip, br'), varyValue('accept-encoding', ['gzip', 'br']))
  t.equal(varyValue('accept-encoding', 'gzip,br'), varyValue('accept-encoding', ' gzip ,  br'))
  t.not(varyValue('accept-encoding', 'br, gzip'), varyValue('accept-encoding', 'gzip, br'), 'other fields keep their order')
  t.not(varyValue('x-a', ''), varyValue('x-a', undefined))
  t.not(varyValue('x-a', 'A'), varyValue('x-a', 'a'), 'other fields keep their case')
})

t.test('Accept-Language: case, spacing, weight spelling and weight order do not matter', async (t) => {
  const same = (a: string | string[], b: string | string[], why: string): void => void t.equal(varyValue('accept-language', a), varyValue('accept-language', b), why)
  const different = (a: string, b: string, why: string): void => void t.not(varyValue('accept-language', a), varyValue('accept-language', b), why)
  same('en-US, fr;q=0.5', 'EN-us,fr;q=0.5', 'case')
  same('en-US, fr;q=0.5', ' en-US ,fr ; q=0.5 ', 'spaces')
  same('en-US, fr;q=0.5', 'fr;q=0.5, en-US', 'members in another order with their weights')
  same('en-US, fr;q=0.5', 'en-US;q=1.000, fr;Q=0.50', 'weights spelt differently')
  same('en-US, fr;q=0.5', ['fr;q=0.5', 'en-US'], 'several lines')
  same('de, en;q=0.8, fr;q=0.8', 'en;q=0.8, de, fr;q=0.8', 'equal weights keep their order')
  different('de, en;q=0.8, fr;q=0.8', 'de, fr;q=0.8, en;q=0.8', 'equal weights in another order')
  different('en-US, fr', 'fr, en-US', 'order without weights')
  different('en-US, fr;q=0.5', 'en-US, fr;q=0.6', 'other weights')
  different('en-US, fr;q=0.5', 'en-US', 'other members')
  same('en;q=abc', 'EN;Q=ABC', 'a malformed weight is kept, lower case')
  different('en;q=abc', 'en', 'and matches only itself')
})
