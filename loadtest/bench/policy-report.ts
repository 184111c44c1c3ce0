// The per-policy cost table (`npm run bench -- --policies`): each policy config against gateway-bare,
// paired round by round, so the machine's drift during the run cancels out.
import { paired, type ConfigSummary, type PolicyCost, type ThroughputRun } from './report.js'
import { isPolicyConfig, POLICY_ADDITIONS } from './policy-configs.js'
import { fmt, ratio, table } from './util.js'

export function policyCosts(throughput: readonly ThroughputRun[], summary: readonly ConfigSummary[]): PolicyCost[] {
  if (!summary.some((s) => s.config === 'gateway-bare')) return []
  return summary
    .filter((s) => isPolicyConfig(s.config) && s.rps.runs > 0)
    .map((s) => ({
      config: s.config,
      what: isPolicyConfig(s.config) ? POLICY_ADDITIONS[s.config].what : '',
      proxyCpuUsPerReq: s.proxyCpuUsPerReq,
      addedUsPerReq: paired(throughput, s.config, 'gateway-bare', (a, b) => a.proxyCpuUsPerReq - b.proxyCpuUsPerReq),
      cpuVsBare: paired(throughput, s.config, 'gateway-bare', (a, b) => a.proxyCpuUsPerReq / b.proxyCpuUsPerReq),
      throughputVsBare: paired(throughput, s.config, 'gateway-bare', (a, b) => a.rps / b.rps),
    }))
}

/** Undefined when no policy config was measured beside gateway-bare. */
export function formatPolicyTable(costs: readonly PolicyCost[]): string | undefined {
  if (costs.length === 0) return undefined
  const rows: string[][] = [['config', 'proxy CPU us/req', '+us/req over bare', 'CPU vs bare', 'throughput vs bare', 'what it adds to gateway-bare']]
  for (const cost of costs) rows.push([cost.config, fmt(cost.proxyCpuUsPerReq, 1), signedUs(cost.addedUsPerReq), ratio(cost.cpuVsBare), ratio(cost.throughputVsBare), cost.what])
  return `cost of each policy on its own (paired with gateway-bare round by round):\n${table(rows, new Set([0, 5]))}`
}

function signedUs(value: number): string {
  return Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${fmt(value, 1)}` : '-'
}
