import t from 'tap'
import { rememberLast } from './remember-last.js'

t.test('computes again only when the argument changes, the first call included whatever it is', async (t) => {
  const seen: Array<string | undefined> = []
  const quoted = rememberLast((value: string | undefined) => {
    seen.push(value)
    return `"${value}"`
  })
  t.equal(quoted(undefined), '"undefined"', 'an undefined first argument is computed, not taken for "nothing yet"')
  t.equal(quoted(''), '""')
  t.equal(quoted(''), '""')
  t.equal(quoted('a'), '"a"')
  t.equal(quoted('a'), '"a"')
  t.equal(quoted(''), '""', 'an earlier value is computed again, not confused with the last')
  t.same(seen, [undefined, '', 'a', ''])
})
