// What runs during a benchmark: the upstream (node:http or nginx static, 1 KiB) and one server per
// measured config, each pinned to the server CPUs, with its config, logs and temp files in the run
// directory. Ports are PORT_BASE + a fixed offset, 127.0.0.1 only. The TLS configs (nginx-tls,
// gateway-tls) terminate TLS with one self-signed certificate written into the run directory.
import { mkdirSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { isTls, MULTI_CPU_CONFIG_NAMES, type CommonOptions, type ConfigName } from './options.js'
import { isPolicyConfig, POLICY_ADDITIONS, POLICY_CONFIG_NAMES, type PolicyConfigName } from './policy-configs.js'
import { assignments } from './util.js'
import { writeBenchCertificate, type CertificateFiles } from '../lib/certs.js'
import { launchGateway } from '../lib/gateway.js'
import { GATEWAY_ENVIRONMENT, withGatewayEnvironment } from '../../gateway/src/core/node-flags.js'
import { portIsFree } from '../lib/ports.js'
import { startProcess, waitForBody, type Started, type StartOptions } from '../lib/processes.js'
import { findTool, requireTools } from '../lib/tools.js'

const DIST_BENCH = fileURLToPath(new URL('.', import.meta.url))
/** Every server of the benchmark answers GET / with this many bytes. */
const BODY_BYTES = 1024

/** The CPUs a config's server is pinned to: two for the 2-core configs (--workers), else the one. */
function cpusOf(config: ConfigName, options: CommonOptions): string {
  return MULTI_CPU_CONFIG_NAMES.includes(config) ? options.multiServerCpus : options.serverCpus
}

/**
 * SIGTERM-to-SIGKILL grace of the benchmark's processes: its gateways drain at once (see
 * gatewayConfig), so 5 s is plenty unless a profiler has a file to write (bench/run.ts).
 */
export const STOP_GRACE_MS = 5_000

/** Throws with the install command if one of the tools is missing. */
export function requireBenchTools(names: readonly string[]): void {
  requireTools(names, 'the full set the benchmark uses: apt-get install -y wrk nginx-light openssl')
}

/** Port offsets from PORT_BASE. */
const OFFSET = { upstream: 0, nginx: 1, 'gateway-bare': 2, 'gateway-default': 3, 'nginx-static': 4, 'gateway-cache': 5, 'undici-proxy': 6, 'nginx-tls': 7, 'gateway-tls': 8, 'gateway-jwt-rs256': 9, 'gateway-jwt-es256': 10, 'gateway-trace-1': 11, 'gateway-trace-100': 21, 'nginx-2w': 22, 'haproxy-2t': 23, 'gateway-default-2w': 24 } as const
/** The gateways' admin ports, from PORT_BASE. */
const ADMIN_OFFSET = { 'gateway-bare': 12, 'gateway-default': 13, 'gateway-jwt-rs256': 14, 'gateway-cache': 15, 'gateway-jwt-es256': 16, 'gateway-trace-1': 17, 'gateway-tls': 18, 'gateway-trace-100': 19, 'gateway-default-2w': 25 } as const
/** The traced configs and their sampling ratio. */
const TRACE_RATIO: Partial<Record<GatewayConfigName, number>> = { 'gateway-trace-1': 0.01, 'gateway-trace-100': 1 }
type GatewayConfigName = keyof typeof ADMIN_OFFSET | PolicyConfigName
/** The policy configs (policy-configs.ts): a port and an admin port each, from this offset on. */
const POLICY_OFFSET = 50

function portOffset(config: Exclude<ConfigName, 'direct'>): number {
  return isPolicyConfig(config) ? POLICY_OFFSET + 2 * POLICY_CONFIG_NAMES.indexOf(config) : OFFSET[config]
}

function adminOffset(config: GatewayConfigName): number {
  return isPolicyConfig(config) ? POLICY_OFFSET + 2 * POLICY_CONFIG_NAMES.indexOf(config) + 1 : ADMIN_OFFSET[config]
}

function isGatewayConfig(config: ConfigName): config is GatewayConfigName {
  return config in ADMIN_OFFSET || isPolicyConfig(config)
}

function traceRatio(config: GatewayConfigName): number | undefined {
  return isPolicyConfig(config) ? POLICY_ADDITIONS[config].tracingRatio : TRACE_RATIO[config]
}

/** The JWT configs' algorithm; undefined for the others. */
function jwtAlgorithm(config: GatewayConfigName): 'RS256' | 'ES256' | undefined {
  if (config === 'gateway-jwt-rs256' || (isPolicyConfig(config) && POLICY_ADDITIONS[config].jwt !== undefined)) return 'RS256'
  return config === 'gateway-jwt-es256' ? 'ES256' : undefined
}

export interface Target {
  readonly config: ConfigName
  /** Where the load generator sends its requests. */
  readonly port: number
  /** The process doing the work being measured (for `direct`: the upstream itself). */
  readonly server: Started
  /** The gateway's admin port (/metrics), for the gateway configs. */
  readonly adminPort?: number
  /** The file the server's stdout goes to (for gateway-default: the access log). */
  readonly logFile: string
  /** Whether clients talk TLS to it (https, the benchmark's self-signed certificate). */
  readonly tls: boolean
  /** Sent with every request to it (the JWT configs' Authorization). */
  readonly headers?: Readonly<Record<string, string>>
}

export interface Topology {
  readonly upstream: Started
  readonly upstreamPort: number
  readonly targets: ReadonlyMap<ConfigName, Target>
  /** Where the traced configs export their spans, when one is measured. */
  readonly otlpSink?: OtlpSink
}

/**
 * A collector that accepts OTLP/HTTP exports and throws them away, in this process: its CPU counts
 * as the load generator's, not the gateway's, whose cost is building and sending the exports.
 */
export interface OtlpSink {
  readonly url: string
  readonly exports: number
  readonly bytes: number
}

async function startOtlpSink(): Promise<OtlpSink> {
  let exports = 0
  let bytes = 0
  const server: Server = createServer((request, response) => {
    request.on('data', (chunk: Buffer) => (bytes += chunk.length))
    request.on('end', () => {
      exports++
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  server.keepAliveTimeout = 65_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  server.unref() // the run ends when the measurements do
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    get exports() {
      return exports
    },
    get bytes() {
      return bytes
    },
  }
}

export function portsOf(base: number, configs: readonly ConfigName[]): number[] {
  const ports: number[] = [base + OFFSET.upstream]
  for (const config of configs) {
    if (config === 'direct') continue
    ports.push(base + portOffset(config))
    if (isGatewayConfig(config)) ports.push(base + adminOffset(config))
  }
  return ports
}

async function checkPortsFree(ports: readonly number[]): Promise<void> {
  const busy: number[] = []
  for (const port of ports) if (!(await portIsFree(port))) busy.push(port)
  if (busy.length > 0) throw new Error(`ports already in use on 127.0.0.1: ${busy.join(', ')} (choose another base with PORT_BASE=... or --port-base)`)
}

/** Starts the upstream and a server for every config, and waits until each answers GET / with 1 KiB. */
export async function startTopology(runDir: string, options: CommonOptions, configs: readonly ConfigName[]): Promise<Topology> {
  const base = options.portBase
  await checkPortsFree(portsOf(base, configs))
  const upstreamPort = base + OFFSET.upstream
  const upstream = options.upstream === 'nginx' ? startNginx(runDir, 'upstream-nginx', nginxStaticConf, upstreamPort, 0, options) : startNodeUpstream(runDir, upstreamPort, options)
  await waitForBody(upstream, upstreamPort, BODY_BYTES)
  const otlpSink = configs.some((config) => isGatewayConfig(config) && traceRatio(config) !== undefined) ? await startOtlpSink() : undefined

  const certificate = configs.some(isTls) ? writeBenchCertificate(runDir) : undefined
  const targets = new Map<ConfigName, Target>()
  for (const config of configs) {
    const port = base + (config === 'direct' ? OFFSET.upstream : portOffset(config))
    const tls = isTls(config)
    switch (config) {
      case 'direct':
        targets.set(config, { config, port, server: upstream, logFile: upstream.logFile, tls })
        break
      case 'nginx': {
        const server = startNginx(runDir, 'nginx', nginxProxyConf, port, upstreamPort, options)
        targets.set(config, { config, port, server, logFile: server.logFile, tls })
        break
      }
      case 'nginx-2w': {
        const server = startNginx(runDir, 'nginx-2w', nginxTwoWorkersConf, port, upstreamPort, { ...options, serverCpus: cpusOf(config, options) })
        targets.set(config, { config, port, server, logFile: server.logFile, tls })
        break
      }
      case 'haproxy-2t': {
        const server = startHaproxy(runDir, port, upstreamPort, cpusOf(config, options))
        targets.set(config, { config, port, server, logFile: server.logFile, tls })
        break
      }
      case 'nginx-tls': {
        const server = startNginx(runDir, 'nginx-tls', nginxTlsProxyConf(certificate!), port, upstreamPort, options)
        targets.set(config, { config, port, server, logFile: server.logFile, tls })
        break
      }
      case 'nginx-static': {
        const server = startNginx(runDir, 'nginx-static', nginxStaticConf, port, upstreamPort, options)
        targets.set(config, { config, port, server, logFile: server.logFile, tls })
        break
      }
      case 'undici-proxy': {
        const server = startUndiciProxy(runDir, port, upstreamPort, options)
        targets.set(config, { config, port, server, logFile: server.logFile, tls })
        break
      }
      default: {
        const adminPort = base + adminOffset(config)
        const algorithm = jwtAlgorithm(config)
        const jwt = algorithm === undefined ? undefined : await benchIssuer(runDir, algorithm, config)
        const server = startGateway(runDir, config, port, adminPort, upstreamPort, options, { certificate, jwksFile: jwt?.jwksFile, otlpSink: otlpSink?.url })
        targets.set(config, { config, port, server, adminPort, logFile: server.logFile, tls, ...(jwt === undefined ? {} : { headers: { authorization: `Bearer ${jwt.token}` } }) })
        break
      }
    }
  }
  for (const target of targets.values()) await waitForBody(target.server, target.port, BODY_BYTES, undefined, target.tls, target.headers)
  return { upstream, upstreamPort, targets, otlpSink }
}

function startNodeUpstream(runDir: string, port: number, options: CommonOptions): Started {
  return startBenchUpstream('upstream-node', options.node, port, { cpus: options.serverCpus, logFile: join(runDir, 'upstream-node.log') })
}

/** The bench's node:http upstream (upstream.ts, a 1 KiB body) on 127.0.0.1:`port`. The bench, bench:ab and loadtest:memory share it. */
export function startBenchUpstream(name: string, node: string, port: number, options: StartOptions): Started {
  return startProcess(name, node, [join(DIST_BENCH, 'upstream.js'), String(port)], options)
}

/**
 * The floor (undici-proxy.ts) on 127.0.0.1:`port` in front of the upstream on `upstreamPort`, with
 * `nodeFlags` and, unless `options.env` says otherwise, the gateway's environment: so that only the
 * code differs from the gateway's. The bench, bench:ab and loadtest:memory share it.
 */
export function startFloorProcess(name: string, node: string, nodeFlags: readonly string[], port: number, upstreamPort: number, options: StartOptions): Started {
  return startProcess(name, node, [...nodeFlags, join(DIST_BENCH, 'undici-proxy.js'), String(port), String(upstreamPort)], { ...options, env: options.env ?? gatewayEnv() })
}

/** The floor: runs with the gateway's heap and GC flags (not its profiler's) and environment, so only the code differs. */
function startUndiciProxy(runDir: string, port: number, upstreamPort: number, options: CommonOptions): Started {
  const flags = options.gatewayNodeFlags.filter((flag) => /^--(max-semi-space-size|max-old-space-size|single-threaded-gc)\b/.test(flag))
  return startFloorProcess('undici-proxy', options.node, flags, port, upstreamPort, { cpus: options.serverCpus, logFile: join(runDir, 'undici-proxy.log') })
}

type NginxConf = (prefix: string, port: number, upstreamPort: number) => string

/** nginx as one process (no master, no daemon) with its own prefix, pid, logs and temp dirs under the run dir. */
function startNginx(runDir: string, name: string, conf: NginxConf, port: number, upstreamPort: number, options: CommonOptions): Started {
  const prefix = join(runDir, name)
  for (const dir of ['logs', 'tmp', 'www']) mkdirSync(join(prefix, dir), { recursive: true })
  writeFileSync(join(prefix, 'www', 'index.html'), 'x'.repeat(BODY_BYTES))
  const confFile = join(prefix, 'nginx.conf')
  writeFileSync(confFile, conf(prefix, port, upstreamPort))
  const nginx = findTool('nginx') ?? 'nginx'
  // -e: the error log from the very start (before the conf is read), so nothing is written to /var/log.
  return startProcess(name, nginx, ['-p', prefix, '-c', confFile, '-e', join(prefix, 'logs', 'error.log')], {
    cpus: options.serverCpus,
    logFile: join(runDir, `${name}.log`),
  })
}

/** `workers` above 1 needs nginx's master process (with master_process off, nginx runs one process whatever worker_processes says). */
const nginxCommon = (prefix: string, workers = 1): string => `# written by loadtest/bench/topology.ts
daemon off;
master_process ${workers > 1 ? 'on' : 'off'};
worker_processes ${workers};
pid ${prefix}/logs/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path ${prefix}/tmp/body;
    proxy_temp_path ${prefix}/tmp/proxy;
    fastcgi_temp_path ${prefix}/tmp/fastcgi;
    uwsgi_temp_path ${prefix}/tmp/uwsgi;
    scgi_temp_path ${prefix}/tmp/scgi;
`

/** The reference proxy: one worker, keep-alive pool to the upstream, HTTP/1.1 without `Connection`. */
const nginxProxyConf: NginxConf = (prefix, port, upstreamPort) => `${nginxCommon(prefix)}
    upstream app {
        server 127.0.0.1:${upstreamPort};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:${port} backlog=4096;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`

/** nginx-2w: the reference proxy with 2 worker processes (and its master), for the 2-core comparison. */
export const nginxTwoWorkersConf: NginxConf = (prefix, port, upstreamPort) => nginxProxyConf(prefix, port, upstreamPort).replace(nginxCommon(prefix), nginxCommon(prefix, 2))

/**
 * haproxy-2t: HAProxy with 2 threads in one process, as a proxy like nginx's: keep-alive to the
 * client and a reused pool to the upstream (http-reuse always), no logging.
 */
export function haproxyConf(port: number, upstreamPort: number): string {
  return `# written by loadtest/bench/topology.ts
global
  nbthread 2
  maxconn 8192
  tune.bufsize 16384

defaults
  mode http
  timeout connect 1s
  timeout client 75s
  timeout server 30s
  timeout http-keep-alive 75s
  http-reuse always

frontend bench
  bind 127.0.0.1:${port} backlog 4096
  default_backend app

backend app
  server app 127.0.0.1:${upstreamPort} maxconn 128
`
}

function startHaproxy(runDir: string, port: number, upstreamPort: number, cpus: string): Started {
  const confFile = join(runDir, 'haproxy-2t.cfg')
  writeFileSync(confFile, haproxyConf(port, upstreamPort))
  // -db: in the foreground, no daemon; its process is the one measured.
  return startProcess('haproxy-2t', findTool('haproxy') ?? 'haproxy', ['-db', '-f', confFile], { cpus, logFile: join(runDir, 'haproxy-2t.log') })
}

/**
 * nginx-tls: the reference proxy terminating TLS with the benchmark's certificate. TLS 1.2 and 1.3
 * as the gateway offers them; nginx's defaults otherwise (its ciphers, session tickets on, no
 * session cache), so keep-alive clients pay one handshake per connection.
 */
const nginxTlsProxyConf = (certificate: CertificateFiles): NginxConf => (prefix, port, upstreamPort) =>
  nginxProxyConf(prefix, port, upstreamPort).replace(
    `listen 127.0.0.1:${port} backlog=4096;`,
    `listen 127.0.0.1:${port} ssl backlog=4096;
        ssl_certificate ${certificate.cert};
        ssl_certificate_key ${certificate.key};
        ssl_protocols TLSv1.2 TLSv1.3;`,
  )

/** The alternative upstream (--upstream nginx), and nginx-static: a static 1 KiB file, the upstream's body. */
const nginxStaticConf: NginxConf = (prefix, port) => `${nginxCommon(prefix)}
    default_type text/plain;
    sendfile on;
    open_file_cache max=16 inactive=60s;
    server {
        listen 127.0.0.1:${port} backlog=4096;
        root ${prefix}/www;
        location / { }
    }
}
`

/** The default chain measured by gateway-default: what config/examples/resilience.yaml recommends, with a longer deadline. */
const DEFAULT_CHAIN = {
  timeout: { request: '30s' },
  concurrency: { max: 1024, queue: 256 },
  breaker: {},
  retry: { attempts: 3 },
}

/**
 * gateway-cache: the default chain plus a response cache. The upstream's answer has no freshness of its
 * own, so `defaultTtl` (the RFC's heuristic freshness) keeps it fresh for the whole run: every request
 * after the first is a hit.
 */
const CACHE_CHAIN = { ...DEFAULT_CHAIN, cache: { defaultTtl: '1h' } }

const BENCH_ISSUER = 'https://issuer.bench.waypost'
const BENCH_AUDIENCE = 'bench'

/**
 * gateway-jwt-*: the default chain plus JWT verification. The key set is a local JWKS file (loaded
 * once: the key stays cached, no fetch during the run) and every request carries the same token,
 * so what is measured is the per-request verification (signature, claims, identity headers).
 */
const jwtChain = (jwksFile: string, algorithm: 'RS256' | 'ES256', cacheEntries?: number, withDefaultChain = true) => ({
  auth: { jwt: { jwksFile, issuer: BENCH_ISSUER, audience: BENCH_AUDIENCE, algorithms: [algorithm], ...(cacheEntries === undefined ? {} : { cacheEntries }) } },
  ...(withDefaultChain ? DEFAULT_CHAIN : {}),
})

/** A key pair for one JWT config: the public half in a JWKS file in the run dir, a token signed with the private half. */
async function benchIssuer(runDir: string, algorithm: 'RS256' | 'ES256', config: string): Promise<{ jwksFile: string; token: string }> {
  const { publicKey, privateKey } = await generateKeyPair(algorithm)
  const kid = `bench-${algorithm.toLowerCase()}`
  const jwksFile = join(runDir, `jwks-${config}.json`)
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: algorithm, use: 'sig' }] }))
  const token = await new SignJWT({ sub: 'bench-client', roles: ['bench'], scope: 'read' })
    .setProtectedHeader({ alg: algorithm, kid })
    .setIssuer(BENCH_ISSUER)
    .setAudience(BENCH_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime('24h')
    .sign(privateKey)
  return { jwksFile, token }
}

/**
 * The gateway's policy file for a config: one catch-all route; gateway-default adds the default
 * policy chain and the access log, gateway-cache the same with a cache, gateway-tls the same as
 * gateway-default behind a TLS listener (`listen.tls`, the certificate and key files), the JWT configs
 * the same with JWT verification, gateway-trace-1 and gateway-trace-100 the same with tracing
 * sampled at 1% and 100%, exported to `otlpSink`.
 */
/** What a gateway config needs beyond its name: the TLS listener's files, the JWT configs' keys, the OTLP sink. */
export interface GatewayExtras {
  readonly certificate?: CertificateFiles
  readonly jwksFile?: string
  readonly otlpSink?: string
}

export function gatewayConfig(config: GatewayConfigName, port: number, adminPort: number, upstreamPort: number, extras: GatewayExtras = {}): string {
  const { certificate, jwksFile, otlpSink } = extras
  const addition = isPolicyConfig(config) ? POLICY_ADDITIONS[config] : undefined
  const tls = config === 'gateway-tls' || addition?.tls === true
  if (tls && certificate === undefined) throw new Error(`${config} needs the benchmark certificate`)
  const ratio = traceRatio(config)
  if (ratio !== undefined && otlpSink === undefined) throw new Error(`${config} needs an OTLP sink`)
  const algorithm = jwtAlgorithm(config)
  if (algorithm !== undefined && jwksFile === undefined) throw new Error(`${config} needs a JWKS file`)
  // The policy configs: gateway-bare plus one thing; the others: the default chain (and what their name says), with the access log.
  const chain =
    addition !== undefined
      ? { ...addition.policies, ...(addition.jwt === undefined ? {} : jwtChain(jwksFile!, 'RS256', addition.jwt.cacheEntries, false)) }
      : config === 'gateway-bare'
        ? undefined
        : config === 'gateway-cache'
          ? CACHE_CHAIN
          : algorithm !== undefined
            ? jwtChain(jwksFile!, algorithm)
            : DEFAULT_CHAIN
  const accessLog = addition !== undefined ? addition.accessLog === true : config !== 'gateway-bare'
  const doc = {
    listen: { address: `127.0.0.1:${port}`, ...(tls ? { tls: { cert: certificate!.cert, key: certificate!.key } } : {}) },
    admin: { address: `127.0.0.1:${adminPort}` },
    log: { level: 'info', access: accessLog },
    // Stop at once on SIGTERM: nothing to wait for between runs (and --cpu-prof is written sooner).
    drain: { delay: '0s', timeout: '2s' },
    upstreams: { app: { url: `http://127.0.0.1:${upstreamPort}`, connections: 128 } },
    // gateway-default-2w: gateway-default in 2 worker processes (docs/operations/workers.md).
    ...(config === 'gateway-default-2w' ? { workers: 2 } : {}),
    ...(chain === undefined || Object.keys(chain).length === 0 ? {} : { defaults: { policies: chain } }),
    ...(ratio === undefined ? {} : { tracing: { enabled: true, endpoint: otlpSink, sampler: { ratio } } }),
    routes: [{ name: 'all', upstream: 'app' }],
  }
  return `# ${config}: written by loadtest/bench/topology.ts\n${stringify(doc)}`
}

/**
 * The environment the gateway and the floor run with: as deployed (core/node-flags.ts), under the
 * caller's own, minus settings that would override the gateway's file (or switch tracing on).
 */
export function gatewayEnv(): NodeJS.ProcessEnv {
  const env = withGatewayEnvironment(process.env)
  for (const key of Object.keys(env)) if (key.startsWith('WAYPOST_') || key.startsWith('OTEL_')) delete env[key]
  return env
}

/** The deployed variables (core/node-flags.ts) as the gateway and the floor get them: `MALLOC_ARENA_MAX=1`. */
export function deployedEnvironment(): Record<string, string> {
  const env = gatewayEnv()
  return Object.fromEntries(Object.keys(GATEWAY_ENVIRONMENT).map((name) => [name, env[name] ?? '']))
}

/** `deployedEnvironment()` for a log line: `MALLOC_ARENA_MAX=1`. */
export function deployedEnvironmentText(): string {
  return assignments(deployedEnvironment()).join(' ')
}

function startGateway(runDir: string, config: GatewayConfigName, port: number, adminPort: number, upstreamPort: number, options: CommonOptions, extras: GatewayExtras): Started {
  const configFile = join(runDir, `${config}.yaml`)
  writeFileSync(configFile, gatewayConfig(config, port, adminPort, upstreamPort, extras))
  const env = gatewayEnv()
  // stdout (the "ready" line and, for gateway-default, one access-log line per request) goes to a file.
  return launchGateway(config, configFile, {
    node: options.node,
    nodeFlags: options.gatewayNodeFlags,
    cpus: cpusOf(config, options),
    logFile: join(runDir, `${config}.log`),
    env,
    cwd: runDir,
  })
}
