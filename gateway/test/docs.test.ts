// The manual in docs/ and the front page: generated field tables are current, every relative link
// resolves inside the repository, and README stays a front page with its two commands.
import t from 'tap'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generated, pages, policyPage } from '../scripts/gen-docs.js'
import { policies } from '../src/policies/index.js'

const REPO = fileURLToPath(new URL('../../', import.meta.url))

function markdownFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return markdownFiles(path)
    return name.endsWith('.md') ? [path] : []
  })
}

const documents = [join(REPO, 'README.md'), ...markdownFiles(join(REPO, 'docs')), join(REPO, 'loadtest/README.md'), join(REPO, 'upstream-stub/README.md')]

t.test('every generated part of the manual matches the code (run `npm run docs`)', async (t) => {
  for (const { file, parts } of pages()) {
    const page = readFileSync(join(REPO, file), 'utf8')
    t.equal(page, generated(page, parts, file), `${file}: ${Object.keys(parts).join(', ')}`)
  }
})

t.test('every registered policy has its page', async (t) => {
  for (const policy of policies) t.ok(existsSync(join(REPO, policyPage(policy.name))), `${policy.name}: ${policyPage(policy.name)}`)
})

t.test('every relative link resolves to a file inside the repository', async (t) => {
  for (const document of documents) {
    const text = readFileSync(document, 'utf8').replace(/```[\s\S]*?```/g, '')
    for (const match of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = match[1]!
      if (/^(https?:|mailto:|#)/.test(target)) continue
      const path = resolve(dirname(document), decodeURI(target.split('#')[0]!))
      const name = `${relative(REPO, document)} → ${target}`
      t.notOk(relative(REPO, path).startsWith('..'), `${name} stays inside the repository`)
      t.ok(existsSync(path), `${name} exists`)
    }
    t.notMatch(text, /\.\.\/shared/, `${relative(REPO, document)} does not point at ../shared`)
  }
})

t.test('README is a front page with the two commands', async (t) => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
  t.ok(readme.split('\n').length <= 200, `${readme.split('\n').length} lines`)
  t.match(readme, 'npm ci && npm start')
  t.match(readme, 'npm test')
})

