// The Dockerfile, checked without a Docker engine: dockerfile-utils lints it (the checks of the
// Docker language server), then its parsed instructions are held to the properties README promises.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { validate } from 'dockerfile-utils'
import { DockerfileParser } from 'dockerfile-ast'
import { DEFAULT_ADMIN_PORT, DEFAULT_PORT } from '../src/inject/sidecar.js'
import { GATEWAY_ENVIRONMENT, GATEWAY_NODE_FLAGS, IMAGE_COMMAND } from '../src/core/node-flags.js'

const root = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url))
const content = readFileSync(root('Dockerfile'), 'utf8')
const dockerfile = DockerfileParser.parse(content)
const instructions = dockerfile.getInstructions()
const froms = dockerfile.getFROMs()
/** The instructions of the last stage: what the runtime image is made of. */
const runtime = instructions.filter((instruction) => instruction.getRange().start.line > froms.at(-1)!.getRange().start.line)
const argumentsOf = (keyword: string): string[] => runtime.filter((instruction) => instruction.getKeyword() === keyword).map((instruction) => instruction.getArgumentsContent() ?? '')
/** An instruction as written, flags included, without the keyword. */
const written = (instruction: { getTextContent(): string; getKeyword(): string }): string => instruction.getTextContent().slice(instruction.getKeyword().length).trim()

t.test('dockerfile-utils finds no problem (errors or warnings)', async (t) => {
  const problems = validate(content).map((diagnostic) => `line ${diagnostic.range.start.line + 1}: ${diagnostic.message}`)
  t.same(problems, [])
})

t.test('multi-stage on Node 24: the build compiles with every dependency, the runtime gets production ones only', async (t) => {
  t.ok(froms.length >= 2, 'multi-stage')
  for (const from of froms) t.match(written(from), /^(node:24-|gcr\.io\/distroless\/nodejs24-)/, 'every stage is Node 24')
  const runs = instructions.filter((instruction) => instruction.getKeyword() === 'RUN').map((instruction) => instruction.getArgumentsContent() ?? '')
  const build = runs.findIndex((run) => run.startsWith('npm ci ') && !run.includes('--omit=dev'))
  t.ok(build !== -1 && runs.slice(build + 1).some((run) => run === 'npm run build'), 'npm ci, then npm run build')
  t.ok(runs.some((run) => /^npm ci .*--omit=dev/.test(run)), 'npm ci --omit=dev for the runtime')
  const copiedNodeModules = runtime.filter((instruction) => instruction.getKeyword() === 'COPY').map(written).filter((copy) => copy.includes('node_modules'))
  t.same(copiedNodeModules, ['--from=production-dependencies /app/node_modules ./node_modules'], 'only the production node_modules reach the runtime')
})

t.test('runtime: non-root numeric user, exec-form ENTRYPOINT running node, ports and environment', async (t) => {
  const users = argumentsOf('USER')
  t.equal(users.length, 1)
  const uid = Number(users[0]!.split(':')[0])
  t.ok(Number.isInteger(uid) && uid > 0, `numeric non-root uid (runAsNonRoot can verify it): ${users[0]}`)
  const entrypoints = dockerfile.getENTRYPOINTs()
  t.equal(entrypoints.length, 1)
  const entrypoint = JSON.parse(entrypoints[0]!.getArgumentsContent() ?? '') as string[]
  t.match(entrypoint[0], /\/node$/, 'exec form, node is PID 1 (no shell in between to swallow SIGTERM)')
  t.equal(entrypoint.at(-1), '/app/dist/waypost/main.js', 'the bundle')
  t.same(entrypoint, IMAGE_COMMAND, "node with the gateway's V8 flags (core/node-flags.ts), as the manifests and inject run it")
  t.same(argumentsOf('CMD'), ['["run"]'])
  // The sidecar's ports, as `waypost inject` and sidecar-manifests/ use them.
  t.same(argumentsOf('EXPOSE'), [`${DEFAULT_PORT} ${DEFAULT_ADMIN_PORT}`])
  const env = argumentsOf('ENV').join(' ')
  for (const [name, value] of Object.entries(GATEWAY_ENVIRONMENT)) t.ok(env.includes(`${name}=${value}`), `${name}=${value}, as the shebang and npm start set it`)
  for (const setting of ['WAYPOST_CONFIG=/etc/waypost/waypost.yaml', `WAYPOST_LISTEN=0.0.0.0:${DEFAULT_PORT}`, `WAYPOST_ADMIN=0.0.0.0:${DEFAULT_ADMIN_PORT}`]) t.ok(env.includes(setting), setting)
  t.notOk(runtime.some((instruction) => ['RUN', 'VOLUME'].includes(instruction.getKeyword())), 'nothing is run or written in the runtime stage')
})

t.test('.dockerignore keeps local builds and modules out of the context', async (t) => {
  const ignored = readFileSync(root('.dockerignore'), 'utf8').split('\n').filter((line) => line !== '' && !line.startsWith('#'))
  for (const entry of ['node_modules', 'dist', '.git']) t.ok(ignored.includes(entry), entry)
})

t.test("the waypost executable's shebang runs node with the same V8 flags and environment as the image", async (t) => {
  const shebang = readFileSync(root('gateway/src/main.ts'), 'utf8').split('\n', 1)[0]
  const environment = Object.entries(GATEWAY_ENVIRONMENT).map(([name, value]) => `${name}=${value} `).join('')
  t.equal(shebang, `#!/usr/bin/env -S ${environment}node ${GATEWAY_NODE_FLAGS.join(' ')}`)
})
