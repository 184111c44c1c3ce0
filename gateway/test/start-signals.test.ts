// `npm start` stops everything on SIGTERM, SIGINT and SIGHUP, sent to npm or to its process group
// (a terminal's Ctrl-C and hang-up), and leaves no process and no port behind. npm forwards SIGINT
// and SIGTERM to its script and dies of SIGHUP; start.js notices either.
import t from 'tap'
import { endsCleanly, type Ending } from './npm-start.js'

const endings: Ending[] = (['SIGTERM', 'SIGINT', 'SIGHUP'] as const).flatMap((signal): Ending[] => [
  { name: `${signal} to npm`, end: (npm) => process.kill(npm, signal) },
  { name: `${signal} to npm's process group`, end: (npm) => process.kill(-npm, signal) },
])

t.jobs = 3
for (const ending of endings) t.test(ending.name, (t) => endsCleanly(t, ending))
