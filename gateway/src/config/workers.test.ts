import t from 'tap'
import { listenSupportsReusePort, parseWorkers, workerCount } from './workers.js'
import { perWorkerShare } from '../core/per-worker.js'
import { concurrency } from '../policies/concurrency.js'
import { rateLimit } from '../policies/rate-limit/rate-limit.js'

t.test('parseWorkers: 1..64 or auto; anything else names the problem', async (t) => {
  t.equal(parseWorkers('1'), 1)
  t.equal(parseWorkers('64'), 64)
  t.equal(parseWorkers('auto'), 'auto')
  for (const bad of ['0', '65', '-1', '2.5', 'lots', '', ' 2', '1e1']) t.throws(() => parseWorkers(bad), /expected a whole number from 1 to 64, or auto/, JSON.stringify(bad))
  t.equal(workerCount(undefined), 1)
  t.equal(workerCount(3), 3)
  t.ok(workerCount('auto') >= 1 && workerCount('auto') <= 64)
})

t.test('SO_REUSEPORT by version: Node 22.12+ and 23.1+', async (t) => {
  t.same(['20.18.1', '22.11.0', '22.12.0', '23.0.0', '23.1.0', '24.0.0'].map((version) => listenSupportsReusePort(version)), [false, false, true, false, true, true])
})

t.test('a per-worker share is rounded up and never 0', async (t) => {
  t.equal(perWorkerShare(10, 1), 10)
  t.equal(perWorkerShare(10, 2), 5)
  t.equal(perWorkerShare(3, 2), 2)
  t.equal(perWorkerShare(1, 4), 1)
})

t.test('concurrency: max and queue divided; rateLimit: local divided, global (Redis) not', async (t) => {
  t.same(concurrency.perWorker!({ max: 5, queue: 3 }, 2), {
    config: { max: 3, queue: 2, queueTimeout: '1s' },
    divided: [
      { field: 'max', configured: 5, perWorker: 3 },
      { field: 'queue', configured: 3, perWorker: 2 },
    ],
  })
  t.same(concurrency.perWorker!({ max: 5 }, 2).divided, [{ field: 'max', configured: 5, perWorker: 3 }], 'no queue, nothing to divide')
  const local = rateLimit.perWorker!({ rate: 9 }, 2)
  t.match(local.config, { rate: 4.5, burst: 5 }, 'the default burst (the rate, rounded up) divided')
  t.same(local.divided, [
    { field: 'rate', configured: 9, perWorker: 4.5 },
    { field: 'burst', configured: 9, perWorker: 5 },
  ])
  const global = rateLimit.perWorker!({ rate: 9, global: true }, 2)
  t.same(global.divided, [])
  t.equal(global.config.rate, 9)
})
