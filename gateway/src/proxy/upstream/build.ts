// Builds an upstream's endpoint group from its config: static endpoints or DNS discovery, health
// checks and outlier detection wired in. The compiler keeps the result across reloads while the
// upstream's config is unchanged, and disposes of it (timers stopped, pools closed) when retired.
import type { Logger } from 'pino'
import { toMs } from '../../core/units.js'
import { ENDPOINT_SERIES_CAP, type GatewayMetrics } from '../../telemetry/metrics.js'
import { createPool } from '../pool.js'
import { resolve } from 'node:path'
import { resolveUpstream, type ResolvedUpstreamTlsConfig, type UpstreamConfig } from './config.js'
import { MaterialError } from '../../tls/material.js'
import { EndpointGroup } from './group.js'
import { HealthChecker } from './health-check.js'
import { OutlierDetector } from './outlier.js'
import { DnsDiscovery } from './dns.js'
import { DEFAULT_UPSTREAM_TLS, UpstreamTls } from './tls.js'

export interface UpstreamDeps {
  readonly log: Logger
  readonly metrics: GatewayMetrics
  /** Where relative file paths (the TLS files) are read from: the policy file's folder. */
  readonly baseDir: string
}

/** Whether the upstream has (or, through DNS, will have) https:// endpoints. */
function usesHttps(config: ReturnType<typeof resolveUpstream>): boolean {
  if (config.dns !== undefined) return config.dns.scheme === 'https'
  const urls = config.endpoints?.map((endpoint) => endpoint.url) ?? [config.url!]
  return urls.some((url) => url.startsWith('https:'))
}

/** The upstream's TLS settings with its file paths resolved against `baseDir`. */
function tlsWithPaths(tls: ResolvedUpstreamTlsConfig, baseDir: string): ResolvedUpstreamTlsConfig {
  const path = (file: string | undefined): string | undefined => (file === undefined ? undefined : resolve(baseDir, file))
  return { ...tls, ca: path(tls.ca), clientCert: path(tls.clientCert), clientKey: path(tls.clientKey) }
}

/**
 * The upstream's endpoint group. Throws when its TLS files cannot be used, naming the field, the
 * file and the reason, so a start fails and a reload is refused rather than run an upstream without
 * them. (`waypost validate` does not read them: it may run where the certificates are not.)
 */
export function buildUpstream(name: string, section: UpstreamConfig, deps: UpstreamDeps): EndpointGroup {
  const config = resolveUpstream(section)
  const connectTimeoutMs = toMs(config.connectTimeout)
  let tls: UpstreamTls | undefined
  if (config.tls !== undefined || usesHttps(config)) {
    try {
      tls = new UpstreamTls(tlsWithPaths(config.tls ?? DEFAULT_UPSTREAM_TLS, deps.baseDir), { upstream: name, log: deps.log, metrics: deps.metrics, connectTimeoutMs, defaultServerName: config.dns?.name })
    } catch (error) {
      if (!(error instanceof MaterialError)) throw error
      const field = ({ ca: 'ca', cert: 'clientCert', key: 'clientKey', crl: 'ca' } as const)[error.role]
      throw new Error(`upstreams.${name}.tls.${field}: ${error.file}: ${error.reason}`, { cause: error })
    }
  }
  const group = new EndpointGroup({
    name,
    balancer: config.balancer,
    minHealthyPercent: config.minHealthyPercent,
    log: deps.log,
    metrics: deps.metrics,
    createPool: (origin) => createPool(origin, config, tls),
    // Endpoint labels stay bounded: only a static list, and a short one, gets series per endpoint.
    endpointSeries: config.dns === undefined && (config.endpoints?.length ?? 1) <= ENDPOINT_SERIES_CAP,
  })
  if (tls !== undefined) {
    group.tls = tls
    group.onDispose(() => tls.stop())
  }
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
    const checker = new HealthChecker(config.healthCheck, group, { connectTimeoutMs, idleMs: toMs(config.idleTimeout), tls })
    group.onDispose(() => checker.stop())
    // DNS endpoints are checked from the round after they appear.
    checker.start()
  }
  return group
}
