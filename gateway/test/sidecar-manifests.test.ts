// sidecar-manifests/: every kustomization builds (with the test builder in kustomize.ts), every
// object passes the Kubernetes schemas offline, and the lifecycle promises hold: native sidecar,
// probes, drain timings, security, the app reachable only through the gateway.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawn } from 'node:child_process'
import { parse } from 'yaml'
import type { IDeployment } from 'kubernetes-models/apps/v1'
import type { IContainer } from 'kubernetes-models/v1'
import { parseConfig } from '../src/config/load.js'
import { toMs } from '../src/core/units.js'
import { kustomize, isKustomization } from './kustomize.js'
import { schemaProblems, type KubernetesObject } from './kubernetes-schema.js'
import { catchAllConfig, spawnGateway, tempConfig } from './helpers.js'
import { inject } from '../src/inject/inject.js'
import { DEFAULT_ADMIN_PORT, DEFAULT_PORT, memoryResources } from '../src/inject/sidecar.js'
import { GATEWAY_ENVIRONMENT, IMAGE_COMMAND } from '../src/core/node-flags.js'

const manifests = fileURLToPath(new URL('../../sidecar-manifests/', import.meta.url))
const builds = ['base', 'monitoring', 'overlays/pre-1.29', 'overlays/tls']
const built = new Map(builds.map((dir) => [dir, kustomize(join(manifests, dir))]))

function find<T>(objects: KubernetesObject[], kind: string, name?: string): T {
  const found = objects.find((object) => object.kind === kind && (name === undefined || object.metadata?.name === name))
  if (found === undefined) throw new Error(`no ${kind} ${name ?? ''}`)
  return found as T
}
const podSpec = (objects: KubernetesObject[]) => find<IDeployment>(objects, 'Deployment', 'hello').spec!.template.spec!
const container = (containers: IContainer[] | undefined, name: string): IContainer => containers!.find((each) => each.name === name)!

/** The policy file embedded in the ConfigMap, through the gateway's own loader. */
function policy(objects: KubernetesObject[]) {
  const configMap = find<{ data: Record<string, string> }>(objects, 'ConfigMap', 'hello-waypost')
  const result = parseConfig(configMap.data['waypost.yaml']!, 'hello-waypost/waypost.yaml')
  if (!result.ok) throw new Error(`the ConfigMap's policy file is invalid: ${JSON.stringify(result.errors)}`)
  return result.config
}

t.test('every kustomization builds and every object passes the Kubernetes schemas', async (t) => {
  const dirs = readdirSync(manifests, { recursive: true, withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => relative(manifests, join(entry.parentPath, entry.name)))
  t.same(dirs.filter((dir) => isKustomization(join(manifests, dir))).sort(), builds.slice().sort(), 'every kustomization is built here')
  for (const [dir, objects] of built) {
    t.ok(objects.length > 0, `${dir} has objects`)
    t.same(objects.flatMap(schemaProblems), [], `${dir}: schema-valid`)
  }
  t.same(built.get('base')!.map((object) => object.kind).sort(), ['ConfigMap', 'ConfigMap', 'Deployment', 'NetworkPolicy', 'PodDisruptionBudget', 'Service', 'Service'])
  t.same(built.get('monitoring')!.map((object) => object.kind).sort(), ['ConfigMap', 'PrometheusRule', 'ServiceMonitor'])
})

t.test('every YAML file is a resource or a patch of some kustomization (none left unchecked)', async (t) => {
  const files = readdirSync(manifests, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile() && entry.name.endsWith('.yaml') && entry.name !== 'kustomization.yaml')
  for (const file of files) {
    const kustomization = parse(readFileSync(join(file.parentPath, 'kustomization.yaml'), 'utf8')) as { resources?: string[]; patches?: Array<{ path: string }> }
    const used = [...(kustomization.resources ?? []), ...(kustomization.patches ?? []).map((patch) => patch.path)]
    t.ok(used.includes(file.name), relative(manifests, join(file.parentPath, file.name)))
  }
})

t.test('base: the gateway is a native sidecar with probes on the admin port, started before the app', async (t) => {
  const spec = podSpec(built.get('base')!)
  t.equal(spec.initContainers?.length, 1)
  const gateway = spec.initContainers![0]!
  t.equal(gateway.name, 'waypost')
  t.equal(gateway.restartPolicy, 'Always', 'restartPolicy: Always makes an init container a sidecar')
  // The ports `waypost inject` uses and the image sets (not the app's 8080).
  t.same(gateway.startupProbe?.httpGet, { path: '/ready', port: DEFAULT_ADMIN_PORT })
  t.same(gateway.readinessProbe?.httpGet, { path: '/ready', port: DEFAULT_ADMIN_PORT })
  t.same(gateway.livenessProbe?.httpGet, { path: '/live', port: DEFAULT_ADMIN_PORT })
  t.same(gateway.ports?.map((port) => port.containerPort), [DEFAULT_PORT, DEFAULT_ADMIN_PORT])
  const config = policy(built.get('base')!)
  t.same([config.listen?.address, config.admin?.address], [`0.0.0.0:${DEFAULT_PORT}`, `0.0.0.0:${DEFAULT_ADMIN_PORT}`], 'the policy file says what runs')
  t.same(gateway.volumeMounts, [{ name: 'waypost-config', mountPath: '/etc/waypost', readOnly: true }], 'the directory (a subPath mount never sees ConfigMap updates)')
  t.same(spec.volumes?.find((volume) => volume.name === 'waypost-config')?.configMap, { name: 'hello-waypost' })
  t.notOk(gateway.lifecycle?.preStop, 'no preStop: the gateway drains on SIGTERM, which it gets after the app exited')
  t.same([gateway.command, gateway.args], [IMAGE_COMMAND, ['run']], "the image's ENTRYPOINT and CMD with the gateway's V8 flags (core/node-flags.ts)")
  t.same(gateway.env, Object.entries(GATEWAY_ENVIRONMENT).map(([name, value]) => ({ name, value })), "the image's malloc setting (core/node-flags.ts)")
  const memory = memoryResources(config)
  t.same(gateway.resources?.requests?.memory, `${memory.requestMiB}Mi`, 'the memory request `waypost inject --config` sizes for this policy')
  t.same(gateway.resources?.limits?.memory, `${memory.limitMiB}Mi`, 'and its limit')
})

t.test('base: every container is locked down and has resources', async (t) => {
  const spec = podSpec(built.get('base')!)
  t.same(spec.securityContext?.seccompProfile, { type: 'RuntimeDefault' })
  t.equal(spec.securityContext?.runAsNonRoot, true)
  for (const each of [...spec.initContainers!, ...spec.containers]) {
    t.match(each.securityContext, { runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } }, each.name)
    t.ok(each.resources?.requests?.cpu !== undefined && each.resources?.requests?.memory !== undefined && each.resources?.limits?.memory !== undefined, `${each.name}: resources`)
  }
  const labels = find<IDeployment>(built.get('base')!, 'Deployment').spec!.template.metadata!.labels!
  const budget = find<{ spec: { selector: { matchLabels: Record<string, string> }; maxUnavailable: number } }>(built.get('base')!, 'PodDisruptionBudget')
  t.match(labels, budget.spec.selector.matchLabels, 'the PodDisruptionBudget selects the pods')
  t.equal(budget.spec.maxUnavailable, 1)
  t.equal(spec.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution?.[0]?.podAffinityTerm.topologyKey, 'kubernetes.io/hostname')
  t.equal(spec.topologySpreadConstraints?.[0]?.topologyKey, 'topology.kubernetes.io/zone')
})

t.test('base: the app is reachable only through the gateway', async (t) => {
  const objects = built.get('base')!
  const spec = podSpec(objects)
  const app = container(spec.containers, 'app')
  t.ok(app.command?.includes('127.0.0.1:5678'), 'the app listens on loopback')
  t.notOk(app.ports, 'the app declares no port')
  t.equal(policy(objects).upstreams.app!.url, 'http://127.0.0.1:5678', "the gateway's upstream is the app's loopback port")
  const service = find<{ spec: { ports: Array<{ targetPort: number }> } }>(objects, 'Service', 'hello')
  t.same(service.spec.ports.map((port) => port.targetPort), [DEFAULT_PORT], "the Service targets the gateway's port")
  const networkPolicy = find<{ spec: { ingress: Array<{ ports: Array<{ port: number }> }> } }>(objects, 'NetworkPolicy')
  t.same(networkPolicy.spec.ingress.flatMap((rule) => rule.ports.map((port) => port.port)).sort(), [DEFAULT_PORT, DEFAULT_ADMIN_PORT], 'only the gateway ports are admitted')
})

/** How long a pod may take to stop, at most, for the way its sidecar is run. */
function stopTimeMs(spec: NonNullable<IDeployment['spec']>['template']['spec'], native: boolean, drainMs: number): number {
  const sleep = Number(container(spec!.containers, 'app').lifecycle?.preStop?.exec?.command?.[1]) * 1000
  // Native: the gateway gets SIGTERM only once the app has exited. Classic: both at once.
  return native ? sleep + drainMs : Math.max(sleep, drainMs)
}

t.test('drain settings line up with terminationGracePeriodSeconds in the base and the pre-1.29 overlay', async (t) => {
  for (const [dir, native] of [['base', true], ['overlays/pre-1.29', false]] as const) {
    const objects = built.get(dir)!
    const config = policy(objects)
    const drainMs = toMs(config.drain!.delay!) + toMs(config.drain!.timeout!)
    const spec = podSpec(objects)
    const graceMs = spec!.terminationGracePeriodSeconds! * 1000
    t.ok(graceMs > drainMs, `${dir}: terminationGracePeriodSeconds ${graceMs / 1000}s > drain.delay + drain.timeout ${drainMs / 1000}s`)
    const stopMs = stopTimeMs(spec, native, drainMs)
    t.ok(graceMs >= stopMs + 10_000, `${dir}: ${graceMs / 1000}s leaves at least 10s beyond the preStop sleep and the drain (${stopMs / 1000}s)`)
  }
  const classicSleep = Number(container(podSpec(built.get('overlays/pre-1.29')!).containers, 'app').lifecycle!.preStop!.exec!.command![1])
  const config = policy(built.get('base')!)
  t.equal(classicSleep * 1000, toMs(config.drain!.delay!) + toMs(config.drain!.timeout!), 'classic: the app outlives the drain')
})

t.test('pre-1.29 overlay: a classic sidecar first in containers, holding the app until it is ready', async (t) => {
  const spec = podSpec(built.get('overlays/pre-1.29')!)
  t.notOk(spec.initContainers)
  t.same(spec.containers.map((each) => each.name), ['waypost', 'app'])
  const gateway = spec.containers[0]!
  t.notOk(gateway.restartPolicy)
  const hook = gateway.lifecycle?.postStart?.exec?.command
  t.equal(hook?.[0], '/nodejs/bin/node', "the image's node (no shell in a distroless image)")
  const { restartPolicy: _restartPolicy, ...native } = podSpec(built.get('base')!).initContainers![0]!
  t.same({ ...gateway, lifecycle: undefined }, { ...native, lifecycle: undefined }, 'otherwise the same container as in the base')
})

t.test("pre-1.29 overlay: the postStart hook's script returns once the gateway is ready", async (t) => {
  const gateway = await spawnGateway(tempConfig(catchAllConfig('http://127.0.0.1:9')))
  t.teardown(() => gateway.stop())
  const script = podSpec(built.get('overlays/pre-1.29')!).containers[0]!.lifecycle!.postStart!.exec!.command![2]!
  t.ok(script.includes(`http://127.0.0.1:${DEFAULT_ADMIN_PORT}/ready`))
  const hook = spawn(process.execPath, ['-e', script.replace(`http://127.0.0.1:${DEFAULT_ADMIN_PORT}`, gateway.adminUrl)], { stdio: 'ignore' })
  const code = await new Promise<number | null>((resolve) => hook.once('exit', resolve))
  t.equal(code, 0)
})

t.test('tls overlay: certificates under /etc/waypost/tls from a Secret, in one volume with the policy file', async (t) => {
  const objects = built.get('overlays/tls')!
  const spec = podSpec(objects)
  const volume = spec.volumes!.find((each) => each.name === 'waypost-config')!
  t.notOk(volume.configMap, 'the configMap source moved into the projected volume')
  t.same(volume.projected?.sources?.[0], { configMap: { name: 'hello-waypost' } })
  t.same(volume.projected?.sources?.[1]?.secret?.items?.map((item) => item.path), ['tls/tls.crt', 'tls/tls.key', 'tls/ca.crt'])
  t.same(spec.initContainers![0]!.volumeMounts, podSpec(built.get('base')!).initContainers![0]!.volumeMounts, 'mounted where the base mounts the policy')
  // The policy points listen.tls at the files the Secret's items put under the mount.
  const mount = spec.initContainers![0]!.volumeMounts![0]!.mountPath
  const mounted = volume.projected!.sources![1]!.secret!.items!.map((item) => `${mount}/${item.path}`)
  const tls = policy(objects).listen!.tls!
  t.same([tls.cert, tls.key, tls.clientCa], mounted, 'cert, key and clientCa are the mounted files')
  t.equal(tls.clientAuth, 'require')
  const base = policy(built.get('base')!)
  t.same({ ...policy(objects), listen: undefined }, { ...base, listen: undefined }, 'otherwise the base policy')
  // The Certificate writes the Secret that is mounted.
  const certificate = find<{ spec: { secretName: string; usages: string[] } }>(objects, 'Certificate', 'hello-waypost-tls')
  t.equal(certificate.spec.secretName, volume.projected!.sources![1]!.secret!.name)
  t.ok(certificate.spec.usages.includes('server auth'))
  t.same(
    schemaProblems({ apiVersion: 'cert-manager.io/v1', kind: 'Certificate', metadata: { name: 'x' }, spec: { secretName: 's', duration: '90 days', usages: ['web'], issuerRef: {} } }),
    ['Certificate x: spec.issuerRef.name is required', 'Certificate x: spec needs at least one of commonName, dnsNames, uris, emailAddresses, ipAddresses', 'Certificate x: spec.duration: expected a Go duration such as 2160h', 'Certificate x: spec.usages: unknown usage "web"'],
    "the Certificate's structural check can fail",
  )
})

t.test('tls overlay: the gateway runs its policy and serves mTLS with certificates in the Secret layout', async (t) => {
  const { mkdtempSync, mkdirSync, writeFileSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { writeDevelopmentCertificates } = await import('../src/tls/command.js')
  const { readFileSync: read } = await import('node:fs')
  const dir = mkdtempSync(join(tmpdir(), 'waypost-overlay-'))
  const certs = join(dir, 'certs')
  await writeDevelopmentCertificates({ out: certs })
  mkdirSync(join(dir, 'tls'))
  writeFileSync(join(dir, 'tls', 'tls.crt'), read(join(certs, 'server.crt')))
  writeFileSync(join(dir, 'tls', 'tls.key'), read(join(certs, 'server.key')))
  writeFileSync(join(dir, 'tls', 'ca.crt'), read(join(certs, 'ca.crt')))
  const configMap = find<{ data: Record<string, string> }>(built.get('overlays/tls')!, 'ConfigMap', 'hello-waypost')
  const text = configMap.data['waypost.yaml']!.replaceAll('/etc/waypost/', `${dir}/`)
  const gateway = await spawnGateway(tempConfig(text), { WAYPOST_LISTEN: '127.0.0.1:0', WAYPOST_ADMIN: '127.0.0.1:0' })
  t.teardown(() => gateway.stop())
  t.match(gateway.url, /^https:\/\/127\.0\.0\.1:\d+$/)
  const { Agent, request } = await import('undici')
  const agent = new Agent({ connect: { ca: read(join(certs, 'ca.crt')), cert: read(join(certs, 'client.crt')), key: read(join(certs, 'client.key')), servername: 'localhost' } })
  t.teardown(() => agent.close())
  // The app (127.0.0.1:5678) is not running here: the gateway's own answer (502) proves the handshake and the routing.
  const response = await request(`${gateway.url}/`, { dispatcher: agent })
  t.ok(response.headers['x-request-id'], `answered by the gateway over mTLS (${response.statusCode})`)
  await response.body.dump()
  const { connect } = await import('node:tls')
  const refused = await new Promise<string>((resolve) => {
    const socket = connect({ port: Number(new URL(gateway.url).port), host: '127.0.0.1', ca: read(join(certs, 'ca.crt')), servername: 'localhost' }, () => socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'))
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
    socket.on('close', () => resolve('closed'))
  })
  t.match(refused, /CERTIFICATE_REQUIRED|closed|ECONNRESET/, 'without a client certificate: refused')
})

t.test('monitoring: the rules and the ServiceMonitor use series and ports that exist', async (t) => {
  const sources = fileURLToPath(new URL('../src/', import.meta.url))
  const defined = new Set<string>()
  for (const file of readdirSync(sources, { recursive: true, withFileTypes: true })) {
    if (!file.isFile() || !file.name.endsWith('.ts')) continue
    for (const match of readFileSync(join(file.parentPath, file.name), 'utf8').matchAll(/'(waypost_[a-z_]+)'/g)) defined.add(match[1]!)
  }
  const rule = find<{ spec: { groups: Array<{ rules: Array<{ expr: string }> }> } }>(built.get('monitoring')!, 'PrometheusRule')
  // Series names, not the recording rules' own (level:metric:operation).
  const used = new Set(rule.spec.groups.flatMap((group) => group.rules.flatMap((each) => [...each.expr.matchAll(/(?<![:\w])waypost_[a-z_]+(?!:)/g)].map((match) => match[0].replace(/_(bucket|sum|count)$/, '')))))
  t.ok(used.size >= 5)
  for (const name of used) t.ok(defined.has(name), `${name} is a gateway metric`)
  const monitor = find<{ spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<{ port: string }> } }>(built.get('monitoring')!, 'ServiceMonitor')
  const admin = find<{ metadata: { labels: Record<string, string> }; spec: { ports: Array<{ name: string; targetPort: number }> } }>(built.get('base')!, 'Service', 'hello-waypost-admin')
  t.match(admin.metadata.labels, monitor.spec.selector.matchLabels)
  t.same(admin.spec.ports.map((port) => [port.name, port.targetPort]), [[monitor.spec.endpoints[0]!.port, DEFAULT_ADMIN_PORT]])
})

t.test("`waypost inject --classic`'s postStart hook returns once the gateway is ready, like the overlay's", async (t) => {
  const gateway = await spawnGateway(tempConfig(catchAllConfig('http://127.0.0.1:9')))
  t.teardown(() => gateway.stop())
  const deployment = 'apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: a }\nspec:\n  selector: { matchLabels: { app: a } }\n  template:\n    metadata: { labels: { app: a } }\n    spec:\n      containers: [{ name: a, image: a:1, ports: [{ containerPort: 8080 }] }]\n'
  const options = { image: 'registry.example/waypost:1', configMap: 'a', port: DEFAULT_PORT, adminPort: DEFAULT_ADMIN_PORT, drainDelayMs: 5000, drainTimeoutMs: 30_000, classic: true }
  const injected = parse(inject(deployment, options).yaml.split('\n---\n')[0]!) as IDeployment
  const script = injected.spec!.template.spec!.containers[0]!.lifecycle!.postStart!.exec!.command![2]!
  t.ok(script.includes(`http://127.0.0.1:${DEFAULT_ADMIN_PORT}/ready`))
  const hook = spawn(process.execPath, ['-e', script.replace(`http://127.0.0.1:${DEFAULT_ADMIN_PORT}`, gateway.adminUrl)], { stdio: 'ignore' })
  t.equal(await new Promise<number | null>((resolve) => hook.once('exit', resolve)), 0)
})
