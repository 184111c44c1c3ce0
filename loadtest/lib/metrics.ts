// Reading the gateway's admin /metrics (Prometheus text format; prom-client default metrics included).
import { request } from 'undici'
import { httpGet } from './http.js'

/** By admin port, on a fresh connection each time (the benchmarks leave no socket open between runs). */
export async function scrapeMetrics(adminPort: number): Promise<string> {
  const { status, body } = await httpGet(adminPort, '/metrics', 5000)
  if (status !== 200) throw new Error(`GET /metrics on admin port ${adminPort}: status ${status}`)
  return body
}

/** By admin address (`127.0.0.1:PORT`, as the gateway's ready line prints it). */
export async function gatewayMetrics(admin: string): Promise<string> {
  const response = await request(`http://${admin}/metrics`, { headersTimeout: 2000, bodyTimeout: 2000 })
  return response.body.text()
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
