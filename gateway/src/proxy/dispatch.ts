// The innermost layer: send the exchange to the upstream pool and hand back the streaming response.
// Bodies are streamed both ways with backpressure; nothing is buffered here.
import type { Pool } from 'undici'
import type { Upstream } from '../policies/policy.js'

export function dispatchTo(pool: Pool): Upstream {
  return async (exchange) => {
    const request = exchange.request
    request.sendContinue?.()
    const record = exchange.record
    record.attempts++
    const started = performance.now()
    const response = await pool.request({
      method: request.method,
      path: request.path,
      headers: request.headers,
      body: request.hasBody ? request.incoming : null,
      signal: exchange.signal,
    })
    record.upstreamMs = performance.now() - started
    return { status: response.statusCode, headers: response.headers, body: response.body, origin: 'upstream', trailers: response.trailers }
  }
}
