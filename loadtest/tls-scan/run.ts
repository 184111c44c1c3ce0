// npm run tls:scan [-- --fast]
//
// An external scanner's view of the TLS listener: the gateway runs the TLS settings of
// config/examples/mtls.yaml (development certificates from `waypost certs`, on a free loopback
// port, in front of the stub) and testssl.sh (Debian package `testssl.sh`) scans it: protocols,
// ciphers, forward secrecy, server defaults, known vulnerabilities. Fails (exit 1) on any finding
// rated HIGH or CRITICAL other than those the self-signed development CA causes (the chain of trust).
// clientAuth is `optional` for the scan: Debian's testssl 3.0 cannot present a client certificate,
// and with `require` every handshake it tries would fail; the protocols, ciphers, groups and
// renegotiation it checks are the same. Writes loadtest/results/tls-scan-latest.json (the summary).
// Everything is on loopback and ends by itself.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseDocument } from 'yaml'
import { startGatewayProcess } from '../lib/gateway.js'
import { log } from '../lib/log.js'
import { GATEWAY_MAIN, REPO_ROOT, requireBuilt, STUB_CLI } from '../lib/paths.js'
import { runMain, stackOf } from '../lib/main.js'
import { HELP_FLAG, resultsDirFlag } from '../lib/options.js'
import { runToEnd, stopAll } from '../lib/processes.js'
import { startStubProcess } from '../lib/stub.js'
import { findTool } from '../lib/tools.js'
import { writeDevelopmentCertificates } from '../../gateway/src/tls/command.js'

const USAGE = `usage: node dist/loadtest/tls-scan/run.js [--fast | --quick] [options]
  --fast              testssl's --fast (fewer cipher probes)
  --quick             --fast, and only protocols, cipher categories, forward secrecy, server defaults and
                      preferences, and vulnerabilities (no client simulation, headers or cipher list): for CI
  --results-dir DIR   where tls-scan-latest.json goes (default loadtest/results)
  --keep              keep the temp dir (config, certificates, logs, testssl's JSON)`

/**
 * What the development CA's certificates cause, and nothing else: a scanner that does not trust the
 * self-signed CA says so, and its leaves carry no CRL or OCSP URI (nothing revokes them). Properties
 * of `waypost certs`' certificates, not of the listener: a real CA's (cert-manager's issuer) differ.
 */
const DEVELOPMENT_CA_FINDINGS = new Set(['cert_chain_of_trust', 'cert_trust', 'cert_revocation'])
const FAILING = new Set(['HIGH', 'CRITICAL'])
const SEVERITIES = ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'WARN', 'INFO', 'OK'] as const

interface Options {
  fast: boolean
  quick: boolean
  resultsDir: string
  keep: boolean
}

interface Finding {
  id: string
  severity: string
  finding: string
  cve?: string
}

function parse(argv: string[]): Options | 'help' {
  const { values } = parseArgs({ args: argv, options: { ...HELP_FLAG, fast: { type: 'boolean', default: false }, quick: { type: 'boolean', default: false }, 'results-dir': { type: 'string' }, keep: { type: 'boolean', default: false } } })
  if (values.help === true) return 'help'
  return { fast: values.fast === true || values.quick === true, quick: values.quick === true, resultsDir: resultsDirFlag(values['results-dir']), keep: values.keep === true }
}

/** config/examples/mtls.yaml with the certificates in `certs`, the stub as its upstream, and clientAuth optional. */
function scanConfig(certs: string, stubUrl: string): string {
  const document = parseDocument(readFileSync(join(REPO_ROOT, 'config/examples/mtls.yaml'), 'utf8'))
  document.setIn(['listen', 'tls', 'cert'], join(certs, 'server.crt'))
  document.setIn(['listen', 'tls', 'key'], join(certs, 'server.key'))
  document.setIn(['listen', 'tls', 'clientCa'], join(certs, 'ca.crt'))
  document.setIn(['listen', 'tls', 'clientAuth'], 'optional')
  document.setIn(['upstreams', 'app', 'url'], stubUrl)
  return document.toString()
}

async function run(options: Options): Promise<number> {
  requireBuilt([GATEWAY_MAIN, STUB_CLI])
  const testssl = findTool('testssl') ?? findTool('testssl.sh')
  if (testssl === undefined) throw new Error('testssl is not installed: apt-get install -y testssl.sh')
  const dir = mkdtempSync(join(tmpdir(), 'waypost-tls-scan-'))
  try {
    const certs = join(dir, 'certs')
    await writeDevelopmentCertificates({ out: certs })
    const stub = await startStubProcess(join(dir, 'stub.log'), 0)
    const configFile = join(dir, 'mtls.yaml')
    writeFileSync(configFile, scanConfig(certs, stub.url))
    const gateway = await startGatewayProcess('gateway', configFile, join(dir, 'gateway.log'), '127.0.0.1:0', '127.0.0.1:0')
    const port = gateway.listen.split(':').pop()!
    const version = (await runToEnd('testssl-version', testssl, ['--version'], { logFile: join(dir, 'testssl-version.log'), timeoutMs: 60_000 })).output.match(/testssl\S*\s+(\d+\.\d+\S*)/)?.[1] ?? '?'
    log(`gateway on https://localhost:${port} (clientAuth optional for the scanner); testssl ${version} ${options.quick ? '--quick ' : options.fast ? '--fast ' : ''}starts`)
    const json = join(dir, 'testssl.json')
    const checks = options.quick ? ['--protocols', '--std', '--fs', '--server-defaults', '--server-preference', '--vulnerable'] : []
    // --add-ca: the scanner trusts the development CA, as the example's clients do.
    const args = ['--quiet', '--color', '0', '--warnings', 'off', '--nodns', 'none', '--ip', '127.0.0.1', '--add-ca', join(certs, 'ca.crt'), '--jsonfile', json, ...(options.fast ? ['--fast'] : []), ...checks, `localhost:${port}`]
    const started = Date.now()
    const scan = await runToEnd('testssl', testssl, args, { logFile: join(dir, 'testssl.log'), timeoutMs: 20 * 60_000 })
    const seconds = Math.round((Date.now() - started) / 1000)
    await stopAll()
    let findings: Finding[]
    try {
      findings = JSON.parse(readFileSync(json, 'utf8')) as Finding[]
    } catch (error) {
      throw new Error(`testssl wrote no readable JSON (exit ${scan.code}): ${(error as Error).message}\n${scan.output.slice(-2000)}`)
    }
    const counts: Record<string, number> = {}
    for (const severity of SEVERITIES) counts[severity] = findings.filter((finding) => finding.severity === severity).length
    const failing = findings.filter((finding) => FAILING.has(finding.severity) && !DEVELOPMENT_CA_FINDINGS.has(finding.id))
    const excused = findings.filter((finding) => FAILING.has(finding.severity) && DEVELOPMENT_CA_FINDINGS.has(finding.id))
    const notable = findings.filter((finding) => ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'WARN'].includes(finding.severity))
    const pick = (id: string): string => findings.find((finding) => finding.id === id)?.finding ?? '-'
    const summary = {
      date: new Date().toISOString(),
      testssl: version,
      fast: options.fast,
      quick: options.quick,
      seconds,
      counts,
      protocols: ['SSLv2', 'SSLv3', 'TLS1', 'TLS1_1', 'TLS1_2', 'TLS1_3'].map((id) => `${id}: ${pick(id)}`),
      verdict: failing.length === 0 ? 'PASS' : 'FAIL',
      failing,
      excused,
      notable,
    }
    mkdirSync(options.resultsDir, { recursive: true })
    writeFileSync(join(options.resultsDir, 'tls-scan-latest.json'), `${JSON.stringify(summary, null, 2)}\n`)
    console.log(`testssl ${version}${options.quick ? ' --quick' : options.fast ? ' --fast' : ''} (${seconds} s) against the mTLS example's listener:`)
    console.log(`  ${SEVERITIES.map((severity) => `${severity} ${counts[severity]}`).join(', ')}`)
    for (const line of summary.protocols) console.log(`  ${line}`)
    for (const finding of notable) console.log(`  ${finding.severity.padEnd(8)} ${finding.id}: ${finding.finding}${DEVELOPMENT_CA_FINDINGS.has(finding.id) ? " (the development CA's certificates: excused)" : ''}`)
    console.log(`verdict: ${summary.verdict}${failing.length === 0 ? '' : ` (${failing.length} HIGH or CRITICAL: ${failing.map((finding) => finding.id).join(', ')})`}`)
    return failing.length === 0 ? 0 : 1
  } finally {
    await stopAll()
    if (options.keep) log(`kept ${dir}`)
    else rmSync(dir, { recursive: true, force: true })
  }
}

runMain({ usage: USAGE, parse, run, logStamp: 'elapsed', describeFailure: (error) => `tls-scan: ${stackOf(error)}`, failureExitCode: 1 })
