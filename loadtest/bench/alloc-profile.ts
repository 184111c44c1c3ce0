// Preload for the gateway under the bench: samples allocations from start to exit, including the
// objects the young-generation GC has already collected (`--heap-prof` leaves those out, and they
// are nearly all of what a proxy allocates per request), and writes the profile at exit.
// GATEWAY_NODE_FLAGS="--max-semi-space-size=8 --import $PWD/dist/loadtest/bench/alloc-profile.js" \
//   ALLOC_PROFILE=/tmp/alloc.heapprofile node dist/loadtest/bench/run.js --configs gateway-default --quick
// node dist/loadtest/bench/profile-summary.js /tmp/alloc.heapprofile --requests N
import { Session } from 'node:inspector'
import { writeFileSync } from 'node:fs'

const file = process.env.ALLOC_PROFILE ?? `/tmp/alloc-${process.pid}.heapprofile`
const session = new Session()
session.connect()
// One sample per 512 bytes allocated on average: fine enough for per-request figures.
session.post('HeapProfiler.startSampling', { samplingInterval: 512, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true })
process.once('exit', () => {
  // An in-process session answers synchronously, so this completes inside the exit handler.
  session.post('HeapProfiler.stopSampling', (error, result) => {
    if (error === null) writeFileSync(file, JSON.stringify(result.profile))
    else console.error(`alloc-profile: ${error.message}`)
  })
})
