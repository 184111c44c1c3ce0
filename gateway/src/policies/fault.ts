// Fault injection for chaos testing in staging: delay and/or abort a share of a route's requests,
// optionally only those carrying a header (by convention `x-waypost-fault`), so test traffic gets
// hurt and nothing else. The delay comes first and honours the exchange's signal: a client that
// leaves or the request deadline ends it. An injected abort never reaches the upstream.
import { Type } from '@sinclair/typebox'
import { duration, toMs } from '../core/units.js'
import { pendingCount, sharedCounter } from '../telemetry/metrics.js'
import { localResponse, sleep } from '../core/exchange.js'
import { definePolicy } from './policy.js'
import { addressList, inList, parseCidr } from '../core/cidr.js'

const Percent = Type.Number({ minimum: 0, maximum: 100, description: 'Share of eligible requests, 0-100.' })

export const FaultConfig = Type.Object(
  {
    header: Type.Optional(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", errorMessage: 'expected a header name, e.g. "x-waypost-fault"', description: 'Only requests carrying this header are eligible (e.g. "x-waypost-fault").' })),
    from: Type.Optional(
      Type.Array(Type.String(), {
        default: ['127.0.0.0/8', '::1'],
        description: 'With `header`: the client addresses (CIDRs) whose header is honoured, so nobody else can hurt their own requests (or learn the route has faults) by sending it.',
      }),
    ),
    delay: Type.Optional(Type.Object({ percent: Percent, duration: duration({ description: 'How long an eligible request is held.' }) }, { additionalProperties: false, description: 'Delay `percent` of eligible requests by `duration` before they go on.' })),
    abort: Type.Optional(
      Type.Object(
        { percent: Percent, status: Type.Integer({ minimum: 400, maximum: 599, description: 'The status to answer with.' }) },
        { additionalProperties: false, description: 'Answer `percent` of eligible requests with `status` (reason fault-abort) instead of the upstream.' },
      ),
    ),
  },
  { additionalProperties: false, description: 'Chaos testing: inject delays and aborts into a share of the requests, optionally only those carrying `header`.' },
)

export const fault = definePolicy({
  name: 'fault',
  schema: FaultConfig,
  localReasons: (config) => ((config.abort?.percent ?? 0) > 0 ? ['fault-abort'] : []),
  validate: (config) =>
    (config.from ?? []).flatMap((entry, index) => (parseCidr(entry) === undefined ? [{ path: `/from/${index}`, message: `not an IP address or CIDR: "${entry}"` }] : [])),
  build(config, deps) {
    const delayShare = (config.delay?.percent ?? 0) / 100
    const abortShare = (config.abort?.percent ?? 0) / 100
    if (delayShare === 0 && abortShare === 0) return null
    const delayMs = config.delay === undefined ? 0 : toMs(config.delay.duration)
    const abortStatus = config.abort?.status ?? 503
    const header = config.header?.toLowerCase()
    const sources = addressList(config.from)
    const injected = sharedCounter(deps.metrics, 'waypost_faults_injected_total', 'Faults injected by the fault policy, by route and kind (delay, abort).', ['route', 'kind'])
    // The kinds this config injects, counted from 0.
    const delays = delayShare > 0 ? pendingCount(injected, deps.route.name, 'delay') : undefined
    const aborts = abortShare > 0 ? pendingCount(injected, deps.route.name, 'abort') : undefined
    return (next) => async (exchange) => {
      const incoming = exchange.request.incoming
      if (header === undefined || (incoming.headers[header] !== undefined && sources !== undefined && inList(sources, incoming.socket.remoteAddress))) {
        // Math.random() is in [0, 1): a share of 1 always injects, 0 never.
        if (delays !== undefined && Math.random() < delayShare) {
          delays.inc()
          await sleep(delayMs, exchange.signal, deps.clock)
        }
        if (aborts !== undefined && Math.random() < abortShare) {
          aborts.inc()
          return localResponse(abortStatus, 'fault-abort', exchange)
        }
      }
      return next(exchange)
    }
  },
})
