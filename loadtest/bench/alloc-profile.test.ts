// The allocation profiler: a process run with the preload writes a profile at exit that names the
// function that allocated, even though every object it made was collected long before.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const dist = fileURLToPath(new URL('../../dist/loadtest/bench/', import.meta.url))

t.test('profiles short-lived allocations and summarises them per request', async (t) => {
  const dir = t.testdir()
  const file = join(dir, 'alloc.heapprofile')
  // 5,000 "requests" of 64 short-lived 1 KiB-ish arrays each: all garbage by the next scavenge.
  const script = 'function makeGarbage(){let k=0;for(let i=0;i<64;i++){const a=new Array(128).fill(i);k+=a.length}return k}let n=0;for(let r=0;r<5000;r++)n+=makeGarbage();console.log(n)'
  execFileSync(process.execPath, ['--import', join(dist, 'alloc-profile.js'), '-e', script], { env: { ...process.env, ALLOC_PROFILE: file } })
  t.ok(existsSync(file), 'the profile was written at exit')
  const summary = execFileSync(process.execPath, [join(dist, 'profile-summary.js'), file, '--requests', '5000', '--top', '3'], { encoding: 'utf8' })
  t.match(summary, /^makeGarbage \[eval\]:1 /m, `makeGarbage is among the top allocators (once inlined, its caller shares its bytes):\n${summary}`)
  // 64 arrays of 128 elements: at least 64 KiB per "request" (8 bytes per element, plus headers).
  const perRequest = Number(/allocations sampled: ([\d,]+) bytes\/request/.exec(summary)?.[1]?.replace(/,/g, ''))
  t.ok(perRequest > 60_000 && perRequest < 200_000, `about 64 KiB per request, read ${perRequest}`)
})
