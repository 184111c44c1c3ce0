// Structured Field Dictionaries (RFC 8941): what parses, and the syntax errors that fail a whole field.
import t from 'tap'
import { parseDictionary } from './structured-field.js'

t.test('members: items of every type, parameters, inner lists; the last of a repeated key wins', async (t) => {
  const members = parseDictionary('max-age=60, no-store, private="set-cookie, x", d=1.5, tok=abc/d:e, b=?0, bytes=:aGk=:, neg=-3, l=(1 "a");p, x;a=1;b')!
  t.same([...members.keys()], ['max-age', 'no-store', 'private', 'd', 'tok', 'b', 'bytes', 'neg', 'l', 'x'])
  t.same(members.get('max-age')!.value, { type: 'integer', value: 60 })
  t.same(members.get('no-store')!.value, { type: 'boolean', value: true })
  t.same(members.get('private')!.value, { type: 'string', value: 'set-cookie, x' })
  t.same(members.get('d')!.value, { type: 'decimal', value: 1.5 })
  t.same(members.get('tok')!.value, { type: 'token', value: 'abc/d:e' })
  t.same(members.get('b')!.value, { type: 'boolean', value: false })
  t.same(members.get('bytes')!.value, { type: 'bytes', value: 'aGk=' })
  t.same(members.get('neg')!.value, { type: 'integer', value: -3 })
  t.same(members.get('l')!.value, [{ value: { type: 'integer', value: 1 }, params: new Map() }, { value: { type: 'string', value: 'a' }, params: new Map() }])
  t.same(members.get('l')!.params, new Map([['p', { type: 'boolean', value: true }]]))
  t.same(members.get('x')!.params, new Map([['a', { type: 'integer', value: 1 }], ['b', { type: 'boolean', value: true }]]))
  t.same(parseDictionary('a=1, a=2')!.get('a')!.value, { type: 'integer', value: 2 })
  t.same(parseDictionary(['max-age=60', 'no-cache'])!.size, 2, 'several lines are one list')
  t.same(parseDictionary('  a=1 ,\tb  ')!.size, 2, 'spaces around members')
  t.equal(parseDictionary('')!.size, 0, 'empty parses, to nothing')
  t.equal(parseDictionary(undefined), undefined)
  t.same(parseDictionary('a="q\\"b\\\\"')!.get('a')!.value, { type: 'string', value: 'q"b\\' }, 'escapes')
})

t.test('syntax errors fail the whole field', async (t) => {
  for (const text of ['Max-Age=60', 'max-age=60,', 'max-age=60;', 'max-age=', 'max-age=60 no-store', ',a', 'a=1.', 'a=1.2345', 'a=1234567890123456', 'a=1234567890123.1', 'a="unterminated', 'a="\\x"', 'a=?2', 'a=:not base64!:', 'a=(1 2', 'a=@1', 'a=é', 'a=1,,b']) {
    t.equal(parseDictionary(text), undefined, JSON.stringify(text))
  }
})
