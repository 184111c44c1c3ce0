// The audit trail's chain: sequence numbers and the previous line's hash, continued across
// reopening a file, and broken by any line removed, changed or inserted.
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AuditTrail, lineHash, verifyAuditChain } from './audit.js'

const stdout = { write: () => true }

function linesOf(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '')
}

t.test('each event has the next sequence number and the sha256 of the line before; a reopened file continues the chain', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'waypost-audit-')), 'nested', 'audit.jsonl')
  const trail = new AuditTrail()
  trail.open(file, stdout)
  trail.record({ event: 'signal', signal: 'SIGHUP', action: 'reload' })
  trail.record({ event: 'config.rejected', source: 'signal', errors: ['x: bad'] })
  trail.close()
  const again = new AuditTrail()
  again.open(file, stdout)
  t.equal(again.sequence, 2, 'the sequence continues from the file')
  again.record({ event: 'gateway.stopped', drained: true })
  again.close()
  const lines = linesOf(file)
  t.equal(lines.length, 3)
  const records = lines.map((line) => JSON.parse(line) as { seq: number; prev: string | null; log: string; event: string })
  t.same(records.map((record) => record.seq), [1, 2, 3])
  t.equal(records[0]!.prev, null)
  t.equal(records[1]!.prev, lineHash(lines[0]!))
  t.equal(records[2]!.prev, lineHash(lines[1]!), 'across the reopening')
  t.same(records.map((record) => record.log), ['audit', 'audit', 'audit'])
  t.same(verifyAuditChain(lines), { ok: true, events: 3 })
})

t.test('a line changed, removed or inserted breaks the chain where it happened', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'waypost-audit-')), 'audit.jsonl')
  const trail = new AuditTrail()
  trail.open(file, stdout)
  for (const signal of ['SIGHUP', 'SIGHUP', 'SIGTERM', 'SIGINT']) trail.record({ event: 'signal', signal, action: 'reload' })
  trail.close()
  const lines = linesOf(file)
  const changed = [...lines]
  changed[1] = changed[1]!.replace('SIGHUP', 'SIGUSR1')
  t.match(verifyAuditChain(changed), { ok: false, line: 3 }, 'the line after the changed one no longer links')
  t.match(verifyAuditChain([lines[0]!, lines[2]!, lines[3]!]), { ok: false, line: 2 }, 'a removed line')
  const forged = JSON.stringify({ ...JSON.parse(lines[1]!), signal: 'SIGKILL' })
  t.match(verifyAuditChain([lines[0]!, lines[1]!, forged, lines[2]!, lines[3]!]), { ok: false, line: 3 }, 'an inserted line')
  t.match(verifyAuditChain([lines[0]!, 'not json']), { ok: false, line: 2, problem: 'not JSON' })
})

t.test('stdout: lines go through the log stream; switching to nothing stops the trail', async (t) => {
  const written: string[] = []
  const trail = new AuditTrail()
  trail.open('stdout', { write: (text: string) => written.push(text) })
  t.equal(trail.output, 'stdout')
  trail.record({ event: 'signal', signal: 'SIGHUP', action: 'reload' })
  trail.open(undefined, stdout)
  t.equal(trail.output, undefined)
  t.equal(trail.record({ event: 'signal', signal: 'SIGHUP', action: 'reload' }), undefined)
  t.equal(written.length, 1)
  t.match(written[0], /^\{"log":"audit","seq":1,.*"event":"signal".*\}\n$/)
})

t.test('a file that cannot be opened throws and keeps the destination in force', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'waypost-audit-'))
  const blocker = join(dir, 'file')
  writeFileSync(blocker, '')
  const good = join(dir, 'audit.jsonl')
  const trail = new AuditTrail()
  trail.open(good, stdout)
  t.throws(() => trail.open(join(blocker, 'audit.jsonl'), stdout), /ENOTDIR|EEXIST/)
  t.equal(trail.output, good)
  trail.record({ event: 'signal', signal: 'SIGHUP', action: 'reload' })
  trail.close()
  t.equal(linesOf(good).length, 1)
})
