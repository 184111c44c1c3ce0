// Request buffering: a body up to `request` bytes is read whole before the layers inside run, so a
// client that uploads slowly holds no upstream socket, no concurrency slot and no breaker probe
// while it does (nginx's default, `proxy_request_buffering on`). It sits inside the rate limit, so
// a refused request never has its body read, and outside the request deadline, so upload time is
// the client's (bounded by listen.clients) and not the upstream's `timeout.request`. Bigger bodies
// stream as they would without it.
import { Type } from '@sinclair/typebox'
import { size, toBytes } from '../../core/units.js'
import { callNext, type Layer } from '../../core/exchange.js'
import { readReplayableBody } from '../../core/request-body.js'
import { definePolicy } from '../policy.js'

export const BufferConfig = Type.Object(
  {
    request: Type.Optional(
      size({ default: '1MiB', description: 'Request bodies up to this size are read whole before the upstream is called; bigger ones stream to it as they arrive.' }),
    ),
  },
  { additionalProperties: false, description: 'Request buffering: bodies up to `request` are read whole before anything upstream is taken, so slow uploads cost no upstream socket.' },
)

export const buffer = definePolicy({
  name: 'buffer',
  schema: BufferConfig,
  build: (config) => bufferRequests(toBytes(config.request!)),
})

function bufferRequests(limit: number): Layer {
  return (next) => (exchange) => {
    const request = exchange.request
    if (!request.hasBody || request.body !== undefined || request.upgrade !== undefined) return callNext(next, exchange)
    request.sendContinue?.()
    return readReplayableBody(request.incoming, limit, exchange.signal).then((body) =>
      body === undefined ? callNext(next, exchange) : callNext(next, { ...exchange, request: { ...request, body, sendContinue: undefined } }),
    )
  }
}
