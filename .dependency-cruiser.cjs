// The folder arrows of gateway/src (docs/architecture.md), checked by `npm run arrows` in `npm test`.
// Folders are ranked top to bottom; a folder may import only folders ranked below it (or itself).
// Tests are exempt: they stand outside the stack and may reach any layer.
const RANKS = [
  ['main.ts'],
  ['server', 'inject'],
  ['config'],
  ['routing', 'policies'],
  ['proxy'],
  ['store'],
  ['telemetry'],
  ['core'],
]

const pattern = (names) => `^gateway/src/(${names.map((name) => name.replace('.', '\\.')).join('|')})(/|$)`

const forbidden = RANKS.flatMap((names, rank) => {
  const above = RANKS.slice(0, rank).flat()
  const sideways = rank === 0 ? [] : names.map((name) => ({ name, siblings: names.filter((other) => other !== name) })).filter((entry) => entry.siblings.length > 0)
  const rules = []
  if (above.length > 0) {
    rules.push({
      name: `${names.join('-and-')}-import-only-below`,
      comment: `${names.join(' and ')} may not import ${above.join(', ')}: the arrows point down (docs/architecture.md)`,
      severity: 'error',
      from: { path: pattern(names), pathNot: '\\.test\\.ts$' },
      to: { path: pattern(above) },
    })
  }
  for (const { name, siblings } of sideways) {
    rules.push({
      name: `${name}-not-sideways`,
      comment: `${name} may not import ${siblings.join(', ')}: folders of one rank stay independent`,
      severity: 'error',
      from: { path: pattern([name]), pathNot: '\\.test\\.ts$' },
      to: { path: pattern(siblings) },
    })
  }
  return rules
})

module.exports = {
  forbidden: [
    ...forbidden,
    {
      name: 'no-circular',
      comment: 'a cycle between modules makes load order and the arrows meaningless',
      severity: 'error',
      from: { path: '^gateway/src/', pathNot: '\\.test\\.ts$' },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist)/' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
}
