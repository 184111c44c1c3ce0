// Reading the gateway's admin /metrics (Prometheus text format; prom-client default metrics included).
import { httpGet } from './processes.js'

export async function scrapeMetrics(adminPort: number): Promise<string> {
  const { status, body } = await httpGet(adminPort, '/metrics', 5000)
  if (status !== 200) throw new Error(`GET /metrics on admin port ${adminPort}: status ${status}`)
  return body
}

/** Sum of the samples of `name` whose labels include every pair in `labels` (NaN if none). */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = NaN
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue
    const match = /^[^\s{]+(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (match === null) continue
    const labelText = match[1] ?? ''
    if (!Object.entries(labels).every(([key, value]) => labelText.includes(`${key}="${value}"`))) continue
    sum = (Number.isNaN(sum) ? 0 : sum) + Number(match[2])
  }
  return sum
}
