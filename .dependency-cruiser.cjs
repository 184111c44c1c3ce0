// The folder arrows of gateway/src (docs/architecture.md), checked by `npm run arrows` in `npm test`.
// Folders are ranked top to bottom; a folder may import only its own rank's folder and those ranked
// below it (an allowed list, so a new folder is restricted until it is ranked here). Tests stand
// outside the stack and may reach any layer; nothing else may reach the tests.
const RANKS = [
  ['main.ts'],
  ['server', 'inject'],
  ['config'],
  ['routing', 'policies'],
  ['proxy'],
  ['store', 'tls'],
  ['telemetry'],
  ['core'],
]

const TEST = '\\.test\\.ts$'
const pattern = (names) => `^gateway/src/(${names.map((name) => name.replace('.', '\\.')).join('|')})(/|$)`

const ranked = RANKS.flatMap((names, rank) => {
  const below = RANKS.slice(rank + 1).flat()
  return names.map((name) => ({
    name: `${name.replace('.ts', '')}-imports-only-below`,
    comment: `${name} may import only itself and ${below.join(', ') || 'nothing of ours'}: the arrows point down (docs/architecture.md)`,
    severity: 'error',
    from: { path: pattern([name]), pathNot: TEST },
    to: { path: '^gateway/src/', pathNot: pattern([name, ...below]) },
  }))
})

module.exports = {
  forbidden: [
    ...ranked,
    {
      name: 'policies-independent',
      comment: 'a policy knows nothing of the others: it reaches shared things through policy.ts, core and the folders below',
      severity: 'error',
      from: { path: '^gateway/src/policies/([^/.]+)', pathNot: `^gateway/src/policies/(index|policy)\\.ts$|${TEST}` },
      to: { path: '^gateway/src/policies/', pathNot: '^gateway/src/policies/($1(/|\\.ts$)|policy\\.ts$)' },
    },
    {
      name: 'no-test-code-in-the-gateway',
      comment: 'the gateway never loads tests, test helpers, scripts, the load tests or the stub',
      severity: 'error',
      from: { path: '^gateway/src/', pathNot: TEST },
      to: { path: `^(gateway/(test|scripts)|loadtest|upstream-stub)/|${TEST}` },
    },
    {
      name: 'no-circular',
      comment: 'a cycle between modules makes load order and the arrows meaningless',
      severity: 'error',
      from: { path: '^gateway/src/', pathNot: TEST },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'an import that resolves to nothing would slip past every rule above',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist)/' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
}
