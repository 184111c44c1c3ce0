// One GET on 127.0.0.1, for readiness checks and admin scrapes; over TLS for the TLS benchmarks.
import { request } from 'node:http'
import { request as httpsRequest } from 'node:https'

/**
 * One GET; resolves with the status and body, or rejects. No keep-alive: no socket is left behind.
 * With `tls`, over https, accepting the benchmark's self-signed certificate.
 */
export function httpGet(port: number, path = '/', timeoutMs = 2000, tls = false, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const send = tls ? httpsRequest : request
    const req = send({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs, headers, ...(tls ? { rejectUnauthorized: false } : {}) }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}
