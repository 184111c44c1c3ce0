// The servers `npm run loadtest:memory` splits a connection's cost with (connection-parts.ts), as
// it runs them: the built script on a loopback port, answering keep-alive requests with the bench
// upstream's 1 KiB body. The parser mode reaches into node's `_http_common`, which a new node could
// change: this runs on both CI runtimes, so such a change fails here rather than in a long run.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Client } from 'undici'
import { REPO_ROOT } from '../lib/paths.js'
import { freePort } from '../lib/ports.js'
import { startProcess, stopProcess, waitForLine } from '../lib/processes.js'

const SCRIPT = join(REPO_ROOT, 'dist/loadtest/memory/connection-parts.js')
const logDir = mkdtempSync(join(tmpdir(), 'waypost-parts-test-'))
t.teardown(() => rmSync(logDir, { recursive: true, force: true }))

for (const mode of ['socket', 'parser']) {
  t.test(`${mode}: keep-alive connections each get the 1 KiB answer, request after request`, async (t) => {
    const port = await freePort()
    const server = startProcess(`parts-${mode}`, process.execPath, [SCRIPT, mode, String(port)], { logFile: join(logDir, `${mode}.log`) })
    t.teardown(() => stopProcess(server, 2000))
    await waitForLine(server, (line) => line.includes(`connection-parts (${mode}) listening on 127.0.0.1:${port}`), 10_000)
    const clients = Array.from({ length: 3 }, () => new Client(`http://127.0.0.1:${port}`))
    t.teardown(() => Promise.all(clients.map((client) => client.close())))
    for (let round = 0; round < 2; round++) {
      for (const client of clients) {
        const { statusCode, body } = await client.request({ method: 'GET', path: '/' })
        t.equal(statusCode, 200)
        t.equal((await body.arrayBuffer()).byteLength, 1024)
      }
    }
  })
}

t.test('an unknown mode or port is refused with its usage, exit 2', async (t) => {
  for (const args of [['both', '8080'], ['socket', 'x'], []]) {
    const failed = await promisify(execFile)(process.execPath, [SCRIPT, ...args]).then(
      () => undefined,
      (error: unknown) => error as { code: number; stderr: string },
    )
    t.equal(failed?.code, 2, args.join(' '))
    t.match(failed?.stderr, /usage: connection-parts\.js socket\|parser PORT/)
  }
})
