import t from 'tap'
import { normalizePath } from './normalize-path.js'

t.test('dot segments, escapes of unreserved characters and repeated slashes are normalized', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['/', '/'],
    ['/api/users/42', '/api/users/42'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a..b/c', '/a..b/c'],
    ['/anything/public/../../status/418', '/status/418'],
    ['/anything/public/%2e%2e/%2E%2E/status/418', '/status/418'],
    ['/a/./b/.', '/a/b/'],
    ['/a/b/..', '/a/'],
    ['/a//b///c', '/a/b/c'],
    ['//', '/'],
    ['/%7euser/%41%62', '/~user/Ab'],
    ['/a%2fb', '/a%2Fb'],
    ['/a/%2F..%2Fadmin', '/a/%2F..%2Fadmin'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/a/b/', '/a/b/'],
    ['/..', undefined],
    ['/a/../..', undefined],
    ['/%2e%2e/etc', undefined],
    ['/bad%zz', undefined],
    ['/bad%4', undefined],
    ['no-slash', undefined],
  ]
  for (const [input, expected] of cases) t.equal(normalizePath(input), expected, `${input} → ${String(expected)}`)
})

t.test('a normalized path is its own normal form', async (t) => {
  for (const input of ['/a/./b/../c//d/', '/%7e/%2f/x', '/x/%2e/y']) {
    const once = normalizePath(input)!
    t.equal(normalizePath(once), once, input)
  }
})
