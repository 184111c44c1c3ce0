// `npm run bench:ab` as a user runs it: the built CLI, bad variants refused with the reason and exit
// 2 before anything starts, and one short real round (the floor and the bare gateway, wrk against
// each) whose report names both and compares the second with the first.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { GATEWAY_NODE_FLAGS } from '../../gateway/src/core/node-flags.js'
import { REPO_ROOT } from '../lib/paths.js'
import { findTool } from '../lib/tools.js'

const run = promisify(execFile)
const AB = join(REPO_ROOT, 'dist/loadtest/bench/ab.js')

async function ab(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [AB, ...args], { cwd: REPO_ROOT, timeout: 90_000 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string }
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr }
  }
}

t.test('bad variants are refused with the reason, before anything starts', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['a=gateway-bare'], /at least two variants/],
    [['a=nope', 'b=gateway-bare'], /a=nope: nope is not undici-proxy or a gateway config/],
    [['a=policy-jwt', 'b=gateway-bare'], /policy-jwt is not undici-proxy or a gateway config this tool can start/],
    [['a=gateway-bare@/tmp/elsewhere/main.js', 'b=gateway-bare'], /outside the repository/],
    [['a=undici-proxy@dist/waypost/main.js', 'b=gateway-bare'], /@MAIN is for gateway configs/],
    [['a=gateway-bare', 'a=gateway-default'], /names must differ/],
    [['a gateway-bare', 'b=gateway-bare'], /expected NAME=CONFIG/],
    [['a=gateway-bare', 'b=gateway-bare', '--rounds', 'x'], /--rounds/],
    [['a=gateway-bare max-semi-space-size=8', 'b=gateway-bare'], /"max-semi-space-size=8" is neither a node flag \(--name or --name=value\) nor an environment variable/],
    [['a=gateway-bare malloc_arena_max=1', 'b=gateway-bare'], /"malloc_arena_max=1" is neither a node flag/],
  ]
  for (const [args, reason] of cases) {
    const result = await ab(args)
    t.equal(result.code, 2, `${args.join(' ')}: exit 2`)
    t.match(result.stderr, reason, args.join(' '))
  }
})

t.test('one short round: the floor and the bare gateway, the second as a ratio to the first, written to a results dir it makes', { skip: findTool('wrk') === undefined ? 'wrk is not installed' : false }, async (t) => {
  const resultsDir = mkdtempSync(join(tmpdir(), 'waypost-ab-test-'))
  t.teardown(() => rmSync(resultsDir, { recursive: true, force: true }))
  const result = await ab(['floor=undici-proxy', 'bare=gateway-bare --max-semi-space-size=16 MALLOC_ARENA_MAX=1 --stack-size=900', '--rounds', '1', '--seconds', '1', '--node', 'current', '--results-dir', join(resultsDir, 'made')])
  t.equal(result.code, 0, result.stderr)
  t.match(result.stdout, /^floor\s+\d+\s+[\d.]+\s+1\.000x/m, 'the reference is 1x itself')
  t.match(result.stdout, /^bare\s+\d+\s+[\d.]+\s+[\d.]+x/m)
  const report = JSON.parse(readFileSync(join(resultsDir, 'made', 'ab-latest.json'), 'utf8')) as { rows: Array<{ name: string; nodeFlags: string[]; env: Record<string, string>; rps: number; proxyCpuUsPerReq: number; cpuVsReference: number; perRound: number[]; turns: unknown[] }> }
  t.same(report.rows.map((row) => row.name), ['floor', 'bare'])
  t.same(report.rows.map((row) => row.nodeFlags), [[...GATEWAY_NODE_FLAGS], ['--max-semi-space-size=16', '--stack-size=900']], 'the deployed flags, or the variant\'s own')
  t.same(report.rows.map((row) => row.env), [{}, { MALLOC_ARENA_MAX: '1' }], 'the environment a variant was given')
  t.match(result.stderr, /bare \(gateway-bare; --max-semi-space-size=16 --stack-size=900 MALLOC_ARENA_MAX=1\)/, 'the flags and environment the variant ran with')
  t.same(report.rows[0]!.perRound, [1], 'the reference: one ratio per round, 1 by definition')
  t.equal(report.rows[0]!.turns.length, 2, 'the reference ran before and after the other variant')
  t.equal(report.rows[1]!.perRound.length, 1)
  for (const row of report.rows) {
    t.ok(row.rps > 100, `${row.name} served load (${row.rps} req/s)`)
    t.ok(row.proxyCpuUsPerReq > 0 && Number.isFinite(row.cpuVsReference), `${row.name} has a CPU figure`)
  }
})
