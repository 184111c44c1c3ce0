// Endpoints from DNS: every address `name` resolves to (node's resolver, as connect() would use it,
// so /etc/hosts applies) is an endpoint on `port`. Re-resolved every `ttl`; endpoints come and go
// with the answer, and a failed or empty answer keeps the last good set (a DNS outage must not
// empty the upstream).
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIPv6 } from 'node:net'
import { toMs } from '../../core/units.js'
import type { ResolvedDnsConfig } from './config.js'
import type { EndpointSpec } from './endpoint.js'
import type { EndpointGroup } from './group.js'

export interface ResolvedAddress {
  readonly address: string
  readonly family: number
}

/** The resolver: node's `lookup(name, { all: true })` unless a test supplies another. */
export type Lookup = (name: string) => Promise<ReadonlyArray<ResolvedAddress>>

const systemLookup: Lookup = (name) => dnsLookup(name, { all: true })

export class DnsDiscovery {
  private readonly ttlMs: number
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  /** Settles after the first resolve, whatever its outcome (readiness waits for it). */
  readonly firstAnswer: Promise<void>
  private answered!: () => void

  constructor(
    private readonly config: ResolvedDnsConfig,
    private readonly group: EndpointGroup,
    private readonly lookup: Lookup = systemLookup,
  ) {
    this.ttlMs = toMs(config.ttl)
    this.firstAnswer = new Promise((resolve) => (this.answered = resolve))
  }

  start(): void {
    void this.resolve()
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
    this.answered()
  }

  private async resolve(): Promise<void> {
    const { name, port, family } = this.config
    const scheme = this.config.scheme
    try {
      const answer = (await this.lookup(name)).filter((entry) => family === undefined || entry.family === family)
      if (this.stopped) return
      if (answer.length === 0) throw new Error(`no ${family === undefined ? '' : `IPv${family} `}address`)
      const addresses = [...new Set(answer.map((entry) => `${scheme}://${isIPv6(entry.address) ? `[${entry.address}]` : entry.address}:${port}`))].sort()
      const specs = addresses.map((address): EndpointSpec => ({ address, priority: 0, weight: 1 }))
      const { added, removed } = this.group.setEndpoints(specs)
      if (added.length > 0 || removed.length > 0) this.group.log.info({ upstream: this.group.name, name, added, removed }, 'upstream endpoints changed (DNS)')
    } catch (error) {
      if (this.stopped) return
      this.group.log.warn({ upstream: this.group.name, name, err: (error as Error).message, kept: this.group.size }, 'DNS resolve failed; keeping the last good endpoints')
    }
    this.answered()
    this.timer = setTimeout(() => void this.resolve(), this.ttlMs).unref()
  }
}
