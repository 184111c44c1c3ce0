// The request mix of the zero-downtime scenario: keep-alive and new connections, GETs and POSTs
// (content-length and chunked bodies of 1 B to 192 KiB) whose echo is checked byte for byte via the
// stub's /anything bodyLength and bodySha256, and every answer's x-request-id checked against the
// request's, so a lost, truncated or misrouted answer counts as a failure like an error status does.
import { createHash, randomBytes } from 'node:crypto'
import { chunkedBody, type Answer, type PlannedRequest } from './load.js'
import { seededRandom } from './util.js'

interface Payload {
  data: Buffer
  sha256: string
}

const SIZES = [1, 512, 4096, 16_384, 65_536, 196_608]

export interface MixOptions {
  /** Origin of the keep-alive requests (the load balancer's keep-alive frontend). */
  keepAliveOrigin: string
  /** Origin of the new-connection requests (the frontend that also opens a new gateway connection per request). */
  freshOrigin: string
  /** Share of requests sent on a connection of their own. */
  freshRatio: number
  seed: number
}

export function zeroDowntimeMix(options: MixOptions): (id: number) => PlannedRequest {
  const payloads: Payload[] = SIZES.map((size) => {
    const data = randomBytes(size)
    return { data, sha256: createHash('sha256').update(data).digest('hex') }
  })
  const random = seededRandom(options.seed)
  return (id) => {
    const requestId = `zd-${id}`
    const fresh = random() < options.freshRatio
    const origin = fresh ? options.freshOrigin : options.keepAliveOrigin
    const headers = { 'x-request-id': requestId }
    const pick = random()
    // Small bodies are the common case; the largest one now and then.
    const sizeRoll = random()
    const payload = payloads[sizeRoll < 0.3 ? 0 : sizeRoll < 0.55 ? 1 : sizeRoll < 0.8 ? 2 : sizeRoll < 0.93 ? 3 : sizeRoll < 0.98 ? 4 : 5]!
    if (pick < 0.35) {
      return { origin, fresh, kind: 'GET /status/200', method: 'GET', path: '/status/200', headers, verify: (answer) => checkId(answer, requestId) }
    }
    if (pick < 0.55) {
      // Now and then a path that only some config variants route separately (/anything/extra).
      const path = random() < 0.25 ? `/anything/extra/${id}` : `/anything/get/${id}`
      return {
        origin,
        fresh,
        kind: 'GET /anything',
        method: 'GET',
        path: `${path}?i=${id}`,
        headers,
        verify: (answer) => checkId(answer, requestId) ?? checkEcho(answer, { method: 'GET', path, i: String(id) }),
      }
    }
    const chunked = pick >= 0.9
    return {
      origin,
      fresh,
      kind: chunked ? 'POST /anything chunked' : 'POST /anything',
      method: 'POST',
      path: `/anything/post/${id}?i=${id}`,
      headers: { ...headers, 'content-type': 'application/octet-stream' },
      body: chunked ? chunkedBody(payload.data, 4) : payload.data,
      verify: (answer) => checkId(answer, requestId) ?? checkEcho(answer, { method: 'POST', path: `/anything/post/${id}`, i: String(id), length: payload.data.length, sha256: payload.sha256 }),
    }
  }
}

function checkId(answer: Answer, requestId: string): string | undefined {
  if (answer.status !== 200) return `status-${answer.status}`
  if (answer.headers['x-request-id'] !== requestId) return 'wrong-request-id'
  return undefined
}

interface Echo {
  method: string
  path: string
  query: Record<string, string | string[]>
  bodyLength: number
  bodySha256: string
}

function checkEcho(answer: Answer, expected: { method: string; path: string; i: string; length?: number; sha256?: string }): string | undefined {
  let echo: Echo
  try {
    echo = JSON.parse(answer.body.toString('utf8')) as Echo
  } catch {
    return 'echo-not-json'
  }
  if (echo.method !== expected.method || echo.path !== expected.path || echo.query.i !== expected.i) return 'echo-mismatch'
  if (expected.length !== undefined && echo.bodyLength !== expected.length) return 'body-length-mismatch'
  if (expected.sha256 !== undefined && echo.bodySha256 !== expected.sha256) return 'body-sha256-mismatch'
  return undefined
}
