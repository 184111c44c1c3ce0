// A certificate for the TLS benchmarks: one self-signed RSA 2048 leaf for 127.0.0.1 and localhost
// (what cert-manager issues by default, and what `waypost certs` writes), made with the openssl CLI.
// nginx-tls and gateway-tls serve the same files, so the handshakes they do are the same work.
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { findTool } from './tools.js'

export interface CertificateFiles {
  readonly cert: string
  readonly key: string
}

export function writeBenchCertificate(dir: string): CertificateFiles {
  const cert = join(dir, 'bench.crt')
  const key = join(dir, 'bench.key')
  const openssl = findTool('openssl') ?? 'openssl'
  const args = ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert]
  const result = spawnSync(openssl, args, { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${result.status ?? result.signal}):\n${result.stderr}`)
  return { cert, key }
}
