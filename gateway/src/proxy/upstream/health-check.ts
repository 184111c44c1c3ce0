// Active health checks: one timer per upstream, a GET of `path` on every endpoint each round.
//
// An endpoint starts healthy, so the first requests after a start or reload go through at once
// (Envoy starts hosts unhealthy until the first pass and holds traffic meanwhile). To make up for
// it, the first check's answer decides at once, either way; after that `healthyThreshold` passes
// or `unhealthyThreshold` failures in a row are needed to change state.
//
// Checks use a one-connection client of their own per endpoint rather than the endpoint's pool, so
// a pool saturated by traffic cannot queue a check past its timeout and fail a busy but working
// endpoint; the connection settings (connect timeout, TLS) are the upstream's.
import { Client } from '../undici.js'
import { toMs } from '../../core/units.js'
import { statusRange, type ResolvedHealthCheckConfig } from './config.js'
import type { Endpoint } from './endpoint.js'
import type { EndpointGroup } from './group.js'
import type { UpstreamTls } from './tls.js'
import { isTlsFailureCode } from '../errors.js'

const HEADERS = { 'user-agent': 'waypost-health-check' }

export class HealthChecker {
  private readonly intervalMs: number
  private readonly timeoutMs: number
  private readonly healthyThreshold: number
  private readonly unhealthyThreshold: number
  private readonly expect: { low: number; high: number }
  private timer: NodeJS.Timeout | undefined
  private stopped = false

  constructor(
    private readonly config: ResolvedHealthCheckConfig,
    private readonly group: EndpointGroup,
    /** The upstream's connect timeout, keep-alive idle timeout and TLS, as its pools use them. */
    private readonly connection: { readonly connectTimeoutMs: number; readonly idleMs: number; readonly tls: UpstreamTls | undefined },
  ) {
    this.intervalMs = toMs(config.interval)
    this.timeoutMs = toMs(config.timeout)
    this.healthyThreshold = config.healthyThreshold
    this.unhealthyThreshold = config.unhealthyThreshold
    this.expect = statusRange(config.expectStatus)!
  }

  /** The first round runs at once; the next starts `interval` after a round ends, so rounds never overlap. */
  start(): void {
    void this.round()
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
  }

  private async round(): Promise<void> {
    await Promise.all(this.group.endpointList.map((endpoint) => this.check(endpoint)))
    if (!this.stopped) this.timer = setTimeout(() => void this.round(), this.intervalMs).unref()
  }

  private async check(endpoint: Endpoint): Promise<void> {
    let passed = false
    let detail: string
    try {
      const client = (endpoint.checkClient ??= this.clientFor(endpoint))
      const response = await client.request({
        method: 'GET',
        path: this.config.path,
        headers: HEADERS,
        signal: AbortSignal.timeout(this.timeoutMs),
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      })
      await response.body.dump()
      passed = response.statusCode >= this.expect.low && response.statusCode <= this.expect.high
      detail = `status ${response.statusCode}`
    } catch (error) {
      const code = (error as { code?: string }).code
      detail = code === undefined ? (error as Error).message : isTlsFailureCode(code) ? `upstream-tls ${code}` : code
    }
    // Stopped, or removed from the group (a new DNS answer) while the check ran: nothing to record.
    if (this.stopped || !this.group.endpointList.includes(endpoint)) return
    this.record(endpoint, passed, detail)
  }

  private clientFor(endpoint: Endpoint): Client {
    const { connectTimeoutMs, idleMs, tls } = this.connection
    // An https endpoint is checked through the upstream's TLS connector: same CA, name, client certificate.
    const connect = tls !== undefined && endpoint.address.startsWith('https:') ? tls.connect : { timeout: connectTimeoutMs }
    return new Client(endpoint.address, { connect, keepAliveTimeout: idleMs, keepAliveMaxTimeout: idleMs, keepAliveTimeoutThreshold: 1000, pipelining: 1 })
  }

  private record(endpoint: Endpoint, passed: boolean, detail: string): void {
    const first = !endpoint.checked
    endpoint.checked = true
    if (passed) endpoint.checkStreak = endpoint.checkStreak > 0 ? endpoint.checkStreak + 1 : 1
    else endpoint.checkStreak = endpoint.checkStreak < 0 ? endpoint.checkStreak - 1 : -1
    const healthy = first ? passed : passed ? endpoint.healthy || endpoint.checkStreak >= this.healthyThreshold : endpoint.healthy && -endpoint.checkStreak < this.unhealthyThreshold
    if (healthy === endpoint.healthy) return
    endpoint.healthy = healthy
    const fields = { upstream: this.group.name, endpoint: endpoint.address, check: detail }
    if (healthy) this.group.log.info(fields, 'upstream endpoint healthy')
    else this.group.log.warn(fields, 'upstream endpoint unhealthy')
    this.group.refresh()
  }
}
