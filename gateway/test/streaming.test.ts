// Large bodies stream through a real gateway process in both directions with bounded memory.
// The sizes here (256 MiB each way) are far above what the memory ceiling could buffer.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { createHash } from 'node:crypto'
import { request } from 'undici'
import { startStub } from '../../upstream-stub/src/stub.js'
import { catchAllConfig, spawnGateway, tempConfig } from './helpers.js'

const MiB = 1024 * 1024
const SIZE = 256 * MiB
/**
 * The gateway's peak RSS may grow by at most this much while moving SIZE bytes each way: half of one
 * body. Streaming holds only a few chunks at a time, but spent chunk buffers live outside V8's heap and
 * are freed only when V8's external-memory pressure triggers a collection, so the peak reads 50-100 MiB
 * on a healthy run (CI once saw 96.7); buffering a body would read 256 MiB or more.
 */
const CEILING = 128 * MiB

function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024
}

const stub = await startStub()
const gw = await spawnGateway(tempConfig(catchAllConfig(stub.url, { accessLog: false })))
t.teardown(async () => {
  await gw.stop()
  await stub.close()
})

const warm = await request(`${gw.url}/bytes/1024`)
await warm.body.dump()
const baseline = peakRss(gw.pid)

t.test(`download of ${SIZE / MiB} MiB streams through`, async (t) => {
  const response = await request(`${gw.url}/bytes/${SIZE}`)
  t.equal(response.statusCode, 200)
  let received = 0
  for await (const chunk of response.body) received += (chunk as Buffer).length
  t.equal(received, SIZE)
})

t.test(`upload of ${SIZE / MiB} MiB streams through (chunked)`, async (t) => {
  const block = Buffer.alloc(MiB, 7)
  const hash = createHash('sha256')
  async function* upload() {
    for (let i = 0; i < SIZE / MiB; i++) {
      hash.update(block)
      yield block
    }
  }
  const response = await request(`${gw.url}/anything`, { method: 'POST', body: Readable.from(upload()) })
  const json = (await response.body.json()) as { bodyLength: number; bodySha256: string }
  t.equal(response.statusCode, 200)
  t.equal(json.bodyLength, SIZE)
  t.equal(json.bodySha256, hash.digest('hex'))
})

t.test('echo: a body streamed up and back at once', async (t) => {
  const size = 64 * MiB
  const response = await request(`${gw.url}/echo`, { method: 'POST', body: Readable.from((async function* () {
    for (let i = 0; i < size / MiB; i++) yield Buffer.alloc(MiB, 1)
  })()) })
  let received = 0
  for await (const chunk of response.body) received += (chunk as Buffer).length
  t.equal(received, size)
})

t.test('peak RSS stayed bounded', async (t) => {
  const growth = peakRss(gw.pid) - baseline
  t.ok(growth < CEILING, `peak RSS grew by ${(growth / MiB).toFixed(1)} MiB (ceiling ${CEILING / MiB} MiB) while moving ${(2 * SIZE + 128 * MiB) / MiB} MiB`)
})
