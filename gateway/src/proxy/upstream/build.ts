// Builds an upstream's endpoint group from its config: static endpoints or DNS discovery, health
// checks and outlier detection wired in. The compiler keeps the result across reloads while the
// upstream's config is unchanged, and disposes of it (timers stopped, pools closed) when retired.
import type { Logger } from 'pino'
import { toMs } from '../../core/units.js'
import { ENDPOINT_SERIES_CAP, type GatewayMetrics } from '../../telemetry/metrics.js'
import { createPool } from '../pool.js'
import { resolveUpstream, type UpstreamConfig } from './config.js'
import { EndpointGroup } from './group.js'
import { HealthChecker } from './health-check.js'
import { OutlierDetector } from './outlier.js'
import { DnsDiscovery } from './dns.js'

export interface UpstreamDeps {
  readonly log: Logger
  readonly metrics: GatewayMetrics
}

export function buildUpstream(name: string, section: UpstreamConfig, deps: UpstreamDeps): EndpointGroup {
  const config = resolveUpstream(section)
  const group = new EndpointGroup({
    name,
    balancer: config.balancer,
    minHealthyPercent: config.minHealthyPercent,
    log: deps.log,
    metrics: deps.metrics,
    createPool: (origin) => createPool(origin, config),
    // Endpoint labels stay bounded: only a static list, and a short one, gets series per endpoint.
    endpointSeries: config.dns === undefined && (config.endpoints?.length ?? 1) <= ENDPOINT_SERIES_CAP,
  })
  if (config.outlierDetection !== undefined) {
    const ejections = deps.metrics.upstreamEjections.labels(name)
    // From 0, so that rate() and increase() see the first ejection.
    ejections.inc(0)
    group.outlier = new OutlierDetector(config.outlierDetection, ejections)
  }
  if (config.dns !== undefined) {
    const discovery = new DnsDiscovery(config.dns, group)
    group.onDispose(() => discovery.stop())
    discovery.start()
    group.warmedUp = discovery.firstAnswer
  } else {
    const endpoints = config.endpoints ?? [{ url: config.url!, priority: 0, weight: 1 }]
    group.setEndpoints(endpoints.map((endpoint) => ({ address: new URL(endpoint.url).origin, priority: endpoint.priority, weight: endpoint.weight })))
  }
  if (config.healthCheck !== undefined) {
    const checker = new HealthChecker(config.healthCheck, group, { connectTimeoutMs: toMs(config.connectTimeout), idleMs: toMs(config.idleTimeout) })
    group.onDispose(() => checker.stop())
    // DNS endpoints are checked from the round after they appear.
    checker.start()
  }
  return group
}
