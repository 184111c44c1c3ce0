// config/examples/auth.yaml does what its header says: the header's own shell lines (token minting
// at the stub, then each curl with the status its comment promises) run with curl against the
// example, its fixed ports swapped for free ones.
import t from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { startStub } from '../../upstream-stub/src/stub.js'
import { startGateway } from './helpers.js'

const REPO = fileURLToPath(new URL('../../', import.meta.url))
const hasCurl = spawnSync('curl', ['--version']).status === 0

t.test('the auth example answers its curl lines as documented', { skip: hasCurl ? false : 'curl is not installed' }, async (t) => {
  const stub = await startStub()
  t.teardown(() => stub.close())
  const stubAddress = stub.url.slice('http://'.length)
  const example = readFileSync(`${REPO}config/examples/auth.yaml`, 'utf8')
  const text = example
    .replaceAll('127.0.0.1:3000', stubAddress)
    .replace('address: 127.0.0.1:8080', 'address: 127.0.0.1:0')
    .replace('address: 127.0.0.1:9901', 'address: 127.0.0.1:0')
  // The keys file beside the policy file, named relatively as the example does: read from the policy file's folder.
  const gw = await startGateway(text, { beside: { 'api-keys.yaml': readFileSync(`${REPO}config/examples/api-keys.yaml`, 'utf8') } })
  t.teardown(() => gw.close())
  const gateway = gw.url.slice('http://'.length)

  const header = example.split('\n').filter((line) => line.startsWith('#   '))
  const assignments = header.filter((line) => /^#\s+[A-Z]+=\$\(curl/.test(line)).map((line) => line.slice(1).trim().replaceAll('localhost:3000', stubAddress))
  const checks = header
    .map((line) => /^#\s+(curl -i .*?)\s+# (\d{3})/.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({ command: match[1]!.replace('curl -i', "curl -s -o /dev/null -w '%{http_code}\\n'").replaceAll('localhost:8080', gateway), expected: Number(match[2]) }))
  t.equal(assignments.length, 2, 'TOKEN and ADMIN')
  t.ok(checks.length >= 6, `${checks.length} curl lines`)
  t.same([...new Set(checks.map((check) => check.expected))].sort(), [200, 401, 403], 'a 200, a 401 and a 403 at least')
  const script = ['set -e', ...assignments, ...checks.map((check) => check.command)].join('\n')
  const output = await new Promise<string>((resolve, reject) => execFile('sh', ['-c', script], { timeout: 30_000 }, (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(`${error.message}\n${stderr}`)))))
  const statuses = output.trim().split('\n').map(Number)
  checks.forEach((check, index) => t.equal(statuses[index], check.expected, check.command.replace(/Bearer \$\w+/, 'Bearer …')))
})
