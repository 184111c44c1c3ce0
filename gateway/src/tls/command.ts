// `waypost certs`: development certificates in one folder, the file names a Kubernetes TLS Secret
// and the mTLS example use. Idempotent: a CA that is there is kept (clients already trust it), and
// leaves are issued only when missing, expired, not from that CA, or when --reissue asks.
import { parseArgs } from 'node:util'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Issued } from './issue.js'

export const CERTS_USAGE = 'waypost certs --out DIR [--host NAME ...] [--spiffe URI] [--days N] [--reissue]'

export const CERTS_HELP = `usage: ${CERTS_USAGE}

Writes a development CA and leaf certificates into DIR: ca.crt, ca.key, server.crt, server.key,
client.crt, client.key (keys mode 0600). For development and tests only; in a cluster, cert-manager
writes the same files (docs/operations/tls.md). Idempotent: an existing CA is kept, leaves are
issued when missing, expired or not from that CA.

  -o, --out DIR       where the files go (required)
  --host NAME         a DNS name or IP address of the server certificate, repeatable
                      (default localhost, 127.0.0.1, ::1)
  --spiffe URI        the client certificate's URI SAN (default spiffe://waypost.local/client)
  --days N            validity of the leaves, 1 to 3650 (default 90)
  --reissue           issue new leaves even when the ones there are good (rotation)
  -h, --help          this help`

const DEFAULT_HOSTS = ['localhost', '127.0.0.1', '::1']
const DEFAULT_SPIFFE = 'spiffe://waypost.local/client'

export interface CertsOptions {
  readonly out: string
  /** DNS names and IP addresses of the server certificate. */
  readonly hosts?: readonly string[]
  /** The client certificate's URI SAN. */
  readonly spiffe?: string
  /** Validity of the leaf certificates. */
  readonly days?: number
  /** Issue new leaves even when the ones there are good (rotation). */
  readonly reissue?: boolean
}

export type FileOutcome = 'kept' | 'created' | 'issued'

/** Writes through a temporary file and a rename, so a gateway watching the folder never reads half a file. */
async function writeAtomically(file: string, text: string, mode: number): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`
  await writeFile(temporary, text, { mode })
  await chmod(temporary, mode)
  await rename(temporary, file)
}

async function readIfThere(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** The CA in `dir`, or a new one. A half CA (a certificate without its key) is refused, never replaced. */
async function certificateAuthority(dir: string): Promise<{ ca: Issued; outcome: FileOutcome }> {
  const [cert, key] = await Promise.all([readIfThere(join(dir, 'ca.crt')), readIfThere(join(dir, 'ca.key'))])
  if (cert !== undefined && key !== undefined) {
    const parsed = new X509Certificate(cert)
    if (!parsed.checkPrivateKey(createPrivateKey(key))) throw new Error(`${join(dir, 'ca.key')} does not match ${join(dir, 'ca.crt')}`)
    if (Date.parse(parsed.validTo) <= Date.now()) throw new Error(`${join(dir, 'ca.crt')} expired on ${parsed.validTo}: remove ca.crt and ca.key to make a new CA`)
    return { ca: { cert, key, serial: parsed.serialNumber.toLowerCase() }, outcome: 'kept' }
  }
  if (cert !== undefined || key !== undefined) {
    const missing = cert === undefined ? 'ca.crt' : 'ca.key'
    throw new Error(`${join(dir, missing)} is missing beside its pair: restore it, or remove both to make a new CA`)
  }
  // node-forge is loaded only by this command, not by every start of the gateway.
  const { createCa } = await import('./issue.js')
  const ca = createCa()
  await writeAtomically(join(dir, 'ca.key'), ca.key, 0o600)
  await writeAtomically(join(dir, 'ca.crt'), ca.cert, 0o644)
  return { ca, outcome: 'created' }
}

/** Whether the leaf in `dir` can stay: there, with its key, issued by `ca`, not expired. */
async function leafIsGood(dir: string, name: string, ca: Issued): Promise<boolean> {
  const [cert, key] = await Promise.all([readIfThere(join(dir, `${name}.crt`)), readIfThere(join(dir, `${name}.key`))])
  if (cert === undefined || key === undefined) return false
  try {
    const parsed = new X509Certificate(cert)
    return parsed.checkPrivateKey(createPrivateKey(key)) && parsed.verify(new X509Certificate(ca.cert).publicKey) && Date.parse(parsed.validTo) > Date.now()
  } catch {
    return false
  }
}

/** Writes ca.crt, ca.key, server.crt, server.key, client.crt, client.key into `out`; what became of each. */
export async function writeDevelopmentCertificates(options: CertsOptions): Promise<Record<string, FileOutcome>> {
  const dir = options.out
  await mkdir(dir, { recursive: true })
  const { ca, outcome } = await certificateAuthority(dir)
  const { issueCertificate } = await import('./issue.js')
  const outcomes: Record<string, FileOutcome> = { ca: outcome }
  const leaves = {
    server: { commonName: options.hosts?.[0] ?? 'localhost', hosts: options.hosts ?? DEFAULT_HOSTS, usage: 'server' as const },
    client: { commonName: 'waypost-client', uris: [options.spiffe ?? DEFAULT_SPIFFE], usage: 'client' as const },
  }
  for (const [name, leaf] of Object.entries(leaves)) {
    if (options.reissue !== true && outcome === 'kept' && (await leafIsGood(dir, name, ca))) {
      outcomes[name] = 'kept'
      continue
    }
    const issued = issueCertificate(ca, { ...leaf, days: options.days ?? 90 })
    // The key first: a watching gateway that sees the new certificate before its key reports a
    // mismatch and keeps the old pair, then takes both once the key has landed.
    await writeAtomically(join(dir, `${name}.key`), issued.key, 0o600)
    await writeAtomically(join(dir, `${name}.crt`), issued.cert, 0o644)
    outcomes[name] = 'issued'
  }
  return outcomes
}

/** Exit code: 0 written (or kept), 1 refused, 2 usage. */
export async function certsCommand(args: string[]): Promise<number> {
  let options: CertsOptions
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { out: { type: 'string', short: 'o' }, host: { type: 'string', multiple: true }, spiffe: { type: 'string' }, days: { type: 'string' }, reissue: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    })
    if (values.help === true) {
      console.log(CERTS_HELP)
      return 0
    }
    if (positionals.length > 0) throw new Error(`unexpected argument "${positionals[0]}"`)
    if (values.out === undefined) throw new Error('--out DIR is required')
    const days = values.days === undefined ? undefined : Number(values.days)
    if (days !== undefined && !(Number.isInteger(days) && days >= 1 && days <= 3650)) throw new Error(`--days: expected a whole number of days from 1 to 3650, got "${values.days}"`)
    if (values.spiffe !== undefined && !/^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$/.test(values.spiffe)) throw new Error(`--spiffe: expected spiffe://trust-domain/path, got "${values.spiffe}"`)
    options = { out: values.out, hosts: values.host, spiffe: values.spiffe, days, reissue: values.reissue }
  } catch (error) {
    console.error(`${(error as Error).message}\nusage: ${CERTS_USAGE}`)
    return 2
  }
  try {
    const outcomes = await writeDevelopmentCertificates(options)
    for (const [name, outcome] of Object.entries(outcomes)) console.log(`${join(options.out, `${name}.crt`)}, ${name}.key: ${outcome}`)
    console.log('For development and tests only: in a cluster, cert-manager writes the same files (docs/operations/tls.md).')
    return 0
  } catch (error) {
    console.error(`waypost certs: ${(error as Error).message}`)
    return 1
  }
}
