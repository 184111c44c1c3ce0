// `waypost inject`: every workload kind gets a native sidecar whose output passes the Kubernetes
// schemas; comments and other documents survive; a second run changes nothing; Services move to
// the gateway's port; what cannot be handled is refused by document, kind and name.
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import type { IContainer, IPodSpec } from 'kubernetes-models/v1'
import { inject, InjectError } from '../src/inject/inject.js'
import type { InjectOptions } from '../src/inject/sidecar.js'
import { schemaProblems, type KubernetesObject } from './kubernetes-schema.js'
import { tempConfig, waypost } from './helpers.js'
import { parseConfig } from '../src/config/load.js'
import { DEFAULT_ADMIN_PORT, DEFAULT_PORT } from '../src/inject/sidecar.js'
import { GATEWAY_ENVIRONMENT, GATEWAY_NODE_FLAGS } from '../src/core/node-flags.js'

const options: InjectOptions = { image: 'registry.example/waypost:1', configMap: 'shop-waypost', port: 15080, adminPort: 15901, drainDelayMs: 5000, drainTimeoutMs: 30_000 }

const podTemplate = (indent: string, extraSpec = '') =>
  `template:
  metadata:
    labels: { app: shop } # the pods
  spec:${extraSpec}
    containers:
      - name: shop
        image: shop:1
        ports:
          - name: web
            containerPort: 3000`
    .split('\n')
    .map((line) => indent + line)
    .join('\n')

const workloads: Record<string, string> = {
  Deployment: `apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: shop }\nspec:\n  selector: { matchLabels: { app: shop } }\n${podTemplate('  ')}\n`,
  StatefulSet: `apiVersion: apps/v1\nkind: StatefulSet\nmetadata: { name: shop }\nspec:\n  serviceName: shop\n  selector: { matchLabels: { app: shop } }\n${podTemplate('  ')}\n`,
  DaemonSet: `apiVersion: apps/v1\nkind: DaemonSet\nmetadata: { name: shop }\nspec:\n  selector: { matchLabels: { app: shop } }\n${podTemplate('  ')}\n`,
  Job: `apiVersion: batch/v1\nkind: Job\nmetadata: { name: shop }\nspec:\n${podTemplate('  ', '\n    restartPolicy: Never')}\n`,
  CronJob: `apiVersion: batch/v1\nkind: CronJob\nmetadata: { name: shop }\nspec:\n  schedule: "*/5 * * * *"\n  jobTemplate:\n    spec:\n${podTemplate('      ', '\n    restartPolicy: OnFailure')}\n`,
}
const service = (ports: string) => `apiVersion: v1\nkind: Service\nmetadata: { name: shop }\nspec:\n  selector: { app: shop }\n  ports:\n${ports}\n`

const objects = (yaml: string): KubernetesObject[] => parseAllDocuments(yaml).map((document) => document.toJS() as KubernetesObject)
function podSpecOf(object: KubernetesObject): IPodSpec {
  const spec = object.spec as { template?: { spec: IPodSpec }; jobTemplate?: { spec: { template: { spec: IPodSpec } } } }
  return (spec.template ?? spec.jobTemplate!.spec.template).spec
}
function refusal(input: string, injectOptions = options): string {
  try {
    inject(input, injectOptions)
  } catch (error) {
    if (error instanceof InjectError) return error.message
    throw error
  }
  throw new Error('not refused')
}

for (const [kind, input] of Object.entries(workloads)) {
  t.test(`${kind}: a native sidecar, schema-valid, the rest of the pod unchanged`, async (t) => {
    const output = inject(input, options).yaml
    const [workload] = objects(output)
    t.same(schemaProblems(workload!), [])
    const spec = podSpecOf(workload!)
    const sidecar = spec.initContainers![0] as IContainer
    t.equal(sidecar.name, 'waypost')
    t.equal(sidecar.image, options.image)
    t.equal(sidecar.restartPolicy, 'Always', 'an init container with restartPolicy Always: a native sidecar')
    t.same([sidecar.command, sidecar.args], [['/nodejs/bin/node', ...GATEWAY_NODE_FLAGS, '/app/dist/waypost/main.js'], ['run']], "the image's ENTRYPOINT and CMD, with the gateway's V8 flags")
    t.same(sidecar.startupProbe?.httpGet, { path: '/ready', port: 15901 })
    t.same(sidecar.readinessProbe?.httpGet, { path: '/ready', port: 15901 })
    t.same(sidecar.livenessProbe?.httpGet, { path: '/live', port: 15901 })
    t.same(sidecar.ports?.map((port) => port.containerPort), [15080, 15901])
    t.same(sidecar.env?.find((variable) => variable.name === 'WAYPOST_LISTEN')?.value, '0.0.0.0:15080')
    for (const [name, value] of Object.entries(GATEWAY_ENVIRONMENT)) t.same(sidecar.env?.find((variable) => variable.name === name)?.value, value, `${name}, as the image sets it`)
    t.match(sidecar.securityContext, { runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } })
    t.same(sidecar.volumeMounts, [{ name: 'waypost-config', mountPath: '/etc/waypost', readOnly: true }])
    t.same(spec.volumes, [{ name: 'waypost-config', configMap: { name: 'shop-waypost' } }])
    t.equal(spec.terminationGracePeriodSeconds, 45, 'raised from the default 30s to drain.delay + drain.timeout + 10s')
    t.same(spec.containers.map((container) => container.name), ['shop'])
    const before = podSpecOf(objects(input)[0]!)
    t.equal(spec.restartPolicy, before.restartPolicy, "the pod's restartPolicy is left alone (Never/OnFailure for jobs)")
    t.match(output, '# the pods', 'comments kept')
    t.equal(inject(output, options).yaml, output, 'injecting twice changes nothing')
  })
}

t.test('Jobs complete: the sidecar is an init container, never one of the containers the Job waits for', async (t) => {
  for (const kind of ['Job', 'CronJob']) {
    const spec = podSpecOf(objects(inject(workloads[kind]!, options).yaml)[0]!)
    t.notOk(spec.containers.some((container) => container.name === 'waypost'), kind)
    t.equal(spec.initContainers?.[0]?.restartPolicy, 'Always', kind)
  }
})

t.test('multi-document input: every workload injected, other documents byte for byte, Service retargeted', async (t) => {
  const other = '# not ours\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}   # odd spacing kept\ndata: {a: "1"}\n'
  const input = `${other}---\n${workloads.Deployment}---\n${service('    - name: http\n      port: 80\n      targetPort: web # the app')}---\n${workloads.Job}`
  const { yaml, notes } = inject(input, options)
  t.ok(yaml.startsWith(other), 'the ConfigMap is untouched, formatting included')
  const output = objects(yaml)
  t.same(output.map((object) => object.kind), ['ConfigMap', 'Deployment', 'Service', 'Job', 'NetworkPolicy'], "new documents come last; the Job's pods have the Deployment's labels and ports, so one NetworkPolicy serves both")
  t.same(output.flatMap(schemaProblems), [])
  t.same((output[2]!.spec as { ports: unknown[] }).ports, [{ name: 'http', port: 80, targetPort: 15080 }], "the Service's named target (the app's port) now is the gateway's port")
  t.match(yaml, 'targetPort: 15080 # the app')
  t.match(notes.join('\n'), 'url: http://127.0.0.1:3000', 'the user is told what to write as the upstream')
  t.equal(inject(yaml, options).yaml, yaml, 'idempotent')
})

t.test('Service ports: the one that targets the app is retargeted; ambiguity is refused', async (t) => {
  const twoPorts = service('    - { name: http, port: 80, targetPort: 3000 }\n    - { name: debug, port: 9000, targetPort: 9000 }')
  const output = objects(inject(`${workloads.Deployment}---\n${twoPorts}`, options).yaml)
  t.same((output[1]!.spec as { ports: Array<{ targetPort: number }> }).ports.map((port) => port.targetPort), [15080, 9000])
  const neither = service('    - { name: a, port: 80, targetPort: 4000 }\n    - { name: b, port: 81, targetPort: 4001 }')
  t.match(refusal(`${workloads.Deployment}---\n${neither}`), /^document 2 \(Service shop\): has 2 ports and none targets the app port 3000/)
  const twoAppPorts = workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 3000\n            - containerPort: 3001')
  t.match(refusal(`${twoAppPorts}---\n${service('    - port: 80')}`), /Service shop\): selects document 1 \(Deployment shop\), whose app port is ambiguous \(3000, 3001\); pass --app-port/)
  const picked = objects(inject(`${twoAppPorts}---\n${service('    - { port: 80, targetPort: 3001 }')}`, { ...options, appPort: 3001 }).yaml)
  t.equal((picked[1]!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 15080)
  const unrelated = service('    - { port: 80, targetPort: 3000 }').replace('app: shop', 'app: other')
  t.match(inject(`${workloads.Deployment}---\n${unrelated}`, options).yaml, 'targetPort: 3000', 'a Service selecting other pods is left alone')
})

t.test('refusals name the document, its kind and name; nothing is written', async (t) => {
  const hostNetwork = workloads.Deployment!.replace('  spec:\n', '  spec:\n      hostNetwork: true\n')
  t.match(refusal(`${workloads.DaemonSet}---\n${hostNetwork}`), /^document 2 \(Deployment shop\): the pod uses hostNetwork/)
  t.match(refusal(workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 15080')), /^document 1 \(Deployment shop\): a container already uses port 15080; choose other gateway ports with --port/)
  t.match(refusal(workloads.Deployment!, { ...options, appPort: 4000 }), /no container declares --app-port 4000; ports: 3000/)
  t.match(refusal('a: [\n'), /^document 1: YAML syntax/)
  const unknown = 'apiVersion: example.com/v1\nkind: Widget\nspec: {template: {spec: {containers: []}}}\n'
  t.equal(inject(unknown, options).yaml, unknown, 'an unknown kind passes through untouched')
})

t.test('terminationGracePeriodSeconds: raised when too short for the drain, never lowered', async (t) => {
  const long = workloads.Deployment!.replace('  spec:\n', '  spec:\n      terminationGracePeriodSeconds: 120\n')
  t.equal(podSpecOf(objects(inject(long, options).yaml)[0]!).terminationGracePeriodSeconds, 120)
  const drain = { ...options, drainDelayMs: 10_000, drainTimeoutMs: 60_000 }
  t.equal(podSpecOf(objects(inject(workloads.Deployment!, drain).yaml)[0]!).terminationGracePeriodSeconds, 80)
})

t.test('terminationGracePeriodSeconds also covers the app preStop, which runs before the gateway is stopped', async (t) => {
  const withPreStop = (hook: string) => workloads.Deployment!.replace('          image: shop:1\n', `          image: shop:1\n          lifecycle: { preStop: ${hook} }\n`)
  t.equal(podSpecOf(objects(inject(withPreStop('{ exec: { command: [sh, -c, "sleep 20"] } }'), options).yaml)[0]!).terminationGracePeriodSeconds, 65, '20 + 5 + 30 + 10')
  t.equal(podSpecOf(objects(inject(withPreStop('{ sleep: { seconds: 15 } }'), options).yaml)[0]!).terminationGracePeriodSeconds, 60)
  const notes = inject(workloads.Deployment!, options).notes
  t.match(notes.join('\n'), /the app has no preStop/, 'a Deployment without preStop gets a note')
  t.notMatch(inject(workloads.Job!, options).notes.join('\n'), /preStop/, 'a Job needs none')
})

t.test('odd input: a clear refusal or a careful edit, never a crash', async (t) => {
  t.match(refusal('apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: empty }\nspec: { template: { spec: } }\n'), /^document 1 \(Deployment empty\): no pod template at spec\.template\.spec/)
  t.match(refusal('apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: odd }\nspec: { template: { spec: { containers: web } } }\n'), /spec\.template\.spec\.containers is not a list/)
  const noSelector = 'apiVersion: v1\nkind: Service\nmetadata: { name: s }\nspec:\n  selector:\n  ports: [{ port: 80 }]\n'
  t.equal(inject(`${workloads.Deployment}---\n${noSelector}`, options).yaml.includes(`---\n${noSelector}`), true, 'a Service with an empty selector is left alone')
  const aliased = `pod: &pod\n  containers: [{ name: shop, image: shop:1 }]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: { name: shared }\nspec:\n  template:\n    spec: &spec\n      containers: [{ name: shop, image: shop:1 }]\n    other: *spec\n`
  t.equal(inject(aliased, options).yaml.includes('waypost'), true, 'an anchor on the edit path is fine; the alias is elsewhere')
  const aliasOnPath = 'apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: a }\nx: &pod\n  containers: [{ name: shop, image: shop:1 }]\nspec:\n  template:\n    spec: *pod\n'
  t.match(refusal(aliasOnPath), /^document 1 \(Deployment a\): spec\.template\.spec is an alias \(\*pod\): write it out in full/)
  const volumesAlias = workloads.Deployment!.replace('  spec:\n', '  spec:\n      volumes: *vols\n').replace('metadata: { name: shop }', 'metadata: { name: shop }\nx: &vols [{ name: data, emptyDir: {} }]')
  t.match(refusal(volumesAlias), /spec\.template\.spec\.volumes is an alias \(\*vols\)/)
  const merged = workloads.Deployment!.replace('  spec:\n', '  spec:\n      <<: { volumes: [{ name: data, emptyDir: {} }] }\n')
  t.match(refusal(merged), /spec\.template\.spec uses a merge key \(<<\)/)
  const octal = workloads.Deployment!.replace('  spec:\n', '  spec:\n      volumes: [{ name: data, configMap: { name: c, defaultMode: 0644 } }]\n')
  const octalOut = inject(octal, options).yaml
  t.match(octalOut, 'defaultMode: 0644', 'octal stays octal, as kubectl reads it')
  const asKubectlReadsIt = parseAllDocuments(octalOut, { version: '1.1' })[0]!.toJS() as KubernetesObject
  t.equal((podSpecOf(asKubectlReadsIt).volumes![0]!.configMap as { defaultMode: number }).defaultMode, 0o644)
  t.equal(inject('# only a comment\n', options).yaml, '# only a comment\n')
})

t.test('ports: the gateway port in use by an init container or an undeclared app port is refused', async (t) => {
  const envoy = workloads.Deployment!.replace('  spec:\n', '  spec:\n      initContainers: [{ name: envoy, image: envoy:1, restartPolicy: Always, ports: [{ containerPort: 15901 }] }]\n')
  t.match(refusal(envoy), /a container already uses port 15901/)
  const undeclared = workloads.Deployment!.replace(/ {10}ports:\n {12}- name: web\n {14}containerPort: 3000\n/, '')
  t.match(refusal(`${undeclared}---\n${service('    - { port: 80, targetPort: 15080 }')}`), /Service shop\): already targets port 15080, the gateway's port, but document 1 \(Deployment shop\) had no gateway/)
})

t.test('a Service naming one of several pod ports settles the app port; --app-port also covers pods without ports', async (t) => {
  const twoAppPorts = workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 3000\n            - name: metrics\n              containerPort: 9090')
  const output = objects(inject(`${twoAppPorts}---\n${service('    - { port: 80, targetPort: web }')}`, options).yaml)
  t.equal((output[1]!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 15080)
  const noPorts = workloads.CronJob!.replace(/ {14}ports:\n {16}- name: web\n {18}containerPort: 3000\n/, '')
  const both = inject(`${workloads.Deployment}---\n${noPorts}`, { ...options, appPort: 3000 })
  t.equal(objects(both.yaml).filter((object) => JSON.stringify(object).includes('"name":"waypost"')).length, 2)
})

t.test('kind: List (what kubectl get -o yaml prints): each item is injected', async (t) => {
  const indent = (text: string) => text.trimEnd().split('\n').map((line, i) => (i === 0 ? `  - ${line}` : `    ${line}`)).join('\n')
  const list = `apiVersion: v1\nkind: List\nitems:\n${indent(workloads.Deployment!)}\n${indent(service('    - { port: 80, targetPort: 3000 }'))}\n`
  const [output] = objects(inject(list, options).yaml) as Array<{ items: KubernetesObject[] }>
  t.equal(podSpecOf(output!.items[0]!).initContainers![0]!.name, 'waypost')
  t.equal((output!.items[1]!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 15080)
  t.equal(inject(inject(list, options).yaml, options).yaml, inject(list, options).yaml, 'idempotent')
})

t.test('the command: stdin, stdout, options, exit codes', async (t) => {
  const run = (args: string[], input: string) => waypost(['inject', ...args], { input })
  // Five processes side by side rather than one after another.
  const [ok, refused, usage, badPort, missing] = await Promise.all([
    run(['-', '--image', 'waypost:test', '--config-map', 'shop-policy', '--port', '8081', '--admin-port', '9902', '--drain-delay', '2s', '--drain-timeout', '20s'], workloads.Deployment!),
    run(['-'], workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 15901')),
    run([], ''),
    run(['-', '--port', 'http'], ''),
    run(['/nonexistent.yaml'], ''),
  ])
  t.equal(ok.code, 0, ok.stderr)
  const spec = podSpecOf(objects(ok.stdout)[0]!)
  t.equal(spec.initContainers![0]!.image, 'waypost:test')
  t.same(spec.initContainers![0]!.ports!.map((port) => port.containerPort), [8081, 9902])
  t.same(spec.volumes![0]!.configMap, { name: 'shop-policy' })
  t.equal(spec.terminationGracePeriodSeconds, 32, '2s + 20s + 10s margin')
  t.match(ok.stderr, 'url: http://127.0.0.1:3000')
  t.equal(refused.code, 1)
  t.equal(refused.stdout, '', 'nothing written when refused')
  t.match(refused.stderr, /nothing written:\ndocument 1 \(Deployment shop\): a container already uses port 15901/)
  t.equal(usage.code, 2)
  t.match(badPort.stderr, /--port: expected a port number/)
  t.match(missing.stderr, /cannot read \/nonexistent\.yaml/)
})

const byKind = (yaml: string, kind: string): KubernetesObject[] => objects(yaml).filter((object) => object.kind === kind)
type Policy = { spec: { podSelector: { matchLabels: Record<string, string> }; ingress: Array<{ from?: unknown[]; ports: Array<{ port: number }> }> } }

t.test('default ports: 15080 and 15901, clear of the app ports in common use and of Istio’s', async (t) => {
  t.equal(DEFAULT_PORT, 15080)
  t.equal(DEFAULT_ADMIN_PORT, 15901)
  const common = [80, 443, 3000, 5000, 5678, 8000, 8080, 8081, 8443, 8888, 9000, 9090, 9901]
  const istio = [15000, 15001, 15004, 15006, 15008, 15009, 15010, 15012, 15014, 15017, 15020, 15021, 15053, 15090]
  for (const port of [DEFAULT_PORT, DEFAULT_ADMIN_PORT]) t.notOk([...common, ...istio].includes(port), `${port}`)
  // An app on 8080, the commonest port of all, is injected without --port.
  const on8080 = workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 8080')
  const result = await waypost(['inject', '-', '--image', 'registry.example/waypost:1'], { input: `${on8080}---\n${service('    - { port: 80, targetPort: 8080 }')}` })
  t.equal(result.code, 0, result.stderr)
  const [deployment, svc] = objects(result.stdout)
  const sidecar = podSpecOf(deployment!).initContainers![0]!
  t.same(sidecar.ports!.map((port) => port.containerPort), [15080, 15901])
  t.same(sidecar.readinessProbe?.httpGet, { path: '/ready', port: 15901 })
  t.equal((svc!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 15080)
  t.match(result.stderr, 'url: http://127.0.0.1:8080')
})

t.test('an image no registry serves is warned about', async (t) => {
  const defaulted = await waypost(['inject', '-'], { input: workloads.Deployment! })
  t.equal(defaulted.code, 0)
  t.match(defaulted.stderr, /^warning: the default image waypost:\d+\.\d+\.\d+ is a local tag that no registry serves: build and push it .* and pass --image REGISTRY\/waypost:/m)
  const bare = await waypost(['inject', '-', '--image', 'waypost:test'], { input: workloads.Deployment! })
  t.match(bare.stderr, /^warning: the image waypost:test names no registry, so nodes look for docker\.io\/library\/waypost/m)
  const pushed = await waypost(['inject', '-', '--image', 'registry.example/team/waypost:1'], { input: workloads.Deployment! })
  t.notMatch(pushed.stderr, /warning/, 'an image with a registry: no warning')
})

t.test('a NetworkPolicy per workload: the gateway port open, the admin port only from the monitoring namespace, the app port closed', async (t) => {
  const withMetrics = workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 3000\n            - name: metrics\n              containerPort: 9090').replace('metadata: { name: shop }', 'metadata: { name: shop, namespace: store }')
  const { yaml, notes } = inject(`${withMetrics}---\n${service('    - { port: 80, targetPort: web }')}`, { ...options, appPort: 3000 })
  const [policy] = byKind(yaml, 'NetworkPolicy') as unknown as Array<Policy & KubernetesObject>
  t.same(schemaProblems(policy!), [])
  t.match(policy!.metadata, { name: 'shop-waypost', namespace: 'store' })
  t.same(policy!.spec.podSelector.matchLabels, { app: 'shop' }, "the pods' labels")
  const open = policy!.spec.ingress.filter((rule) => rule.from === undefined).flatMap((rule) => rule.ports.map((port) => port.port))
  t.same(open, [15080, 9090], 'from anywhere: the gateway and the pod’s other ports, as before')
  const admin = policy!.spec.ingress.find((rule) => rule.from !== undefined)!
  t.same(admin.from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }])
  t.same(admin.ports.map((port) => port.port), [15901])
  t.notOk(policy!.spec.ingress.some((rule) => rule.ports.some((port) => port.port === 3000)), 'the app port is in no rule: nothing reaches the app around the gateway')
  t.match(notes.join('\n'), /let the app listen on 127\.0\.0\.1:3000 only, so clients cannot reach it around the gateway \(the NetworkPolicy written beside it also keeps port 3000 closed/)
  t.equal(inject(yaml, { ...options, appPort: 3000 }).yaml, yaml, 'a second run writes it no second time')
  const other = byKind(inject(withMetrics, { ...options, adminFrom: 'observability' }).yaml, 'NetworkPolicy')[0] as unknown as Policy
  t.match(other.spec.ingress[1]!.from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'observability' } } }], '--admin-from')
  t.same(byKind(inject(withMetrics, { ...options, networkPolicy: false }).yaml, 'NetworkPolicy'), [], '--no-network-policy')
  const unlabelled = inject(workloads.Deployment!.replace(/^ *labels: \{ app: shop \} # the pods\n/m, ''), options)
  t.same(byKind(unlabelled.yaml, 'NetworkPolicy'), [])
  t.match(unlabelled.notes.join('\n'), /its pods have no labels, so no NetworkPolicy can select them: the admin port 15901 is open to the cluster/)
  const handWritten = 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: shop-waypost }\nspec: { podSelector: {} }\n'
  t.equal(byKind(inject(`${workloads.Deployment}---\n${handWritten}`, options).yaml, 'NetworkPolicy').length, 1, 'one the input has already is kept, not written again')
})

t.test('--write-config-map: a starter policy for the app port, valid, schema-valid, once per namespace', async (t) => {
  const { yaml } = inject(workloads.Deployment!, { ...options, writeConfigMap: true })
  const [configMap] = byKind(yaml, 'ConfigMap') as Array<KubernetesObject & { data: Record<string, string> }>
  t.same(schemaProblems(configMap!), [])
  t.equal(configMap!.metadata!.name, 'shop-waypost', 'named --config-map, as the volume is')
  const loaded = parseConfig(configMap!.data['waypost.yaml']!, 'starter.yaml')
  t.ok(loaded.ok, JSON.stringify(loaded.ok ? [] : loaded.errors))
  if (loaded.ok) {
    t.same(loaded.warnings, [])
    t.equal(loaded.config.upstreams.app!.url, 'http://127.0.0.1:3000', 'the app port')
    t.equal(loaded.config.listen?.address, '0.0.0.0:15080')
    t.equal(loaded.config.admin?.address, '0.0.0.0:15901')
    t.same(loaded.config.drain, { delay: '5s', timeout: '30s' }, 'the drain the grace period was sized for')
  }
  t.match(configMap!.data['waypost.yaml'], /^# A starter policy/, 'says what it is')
  t.equal(inject(yaml, { ...options, writeConfigMap: true }).yaml, yaml, 'idempotent')
  const twoPorts = `${workloads.Deployment}---\n${workloads.StatefulSet!.replace('containerPort: 3000', 'containerPort: 4000').replace('name: shop', 'name: other')}`
  t.match(refusal(twoPorts, { ...options, writeConfigMap: true }), /--write-config-map: one starter policy needs one app port, and the workloads sharing ConfigMap shop-waypost have several \(.*3000.*4000\)/)
  t.same(byKind(inject(workloads.Deployment!, options).yaml, 'ConfigMap'), [], 'not without the flag')
})

t.test('--config: the policy is checked, its drain sizes the grace period, its caches the memory limit, and it is the ConfigMap', async (t) => {
  const policyText = `upstreams:
  app: { url: "http://127.0.0.1:3000" }
drain: { delay: 10s, timeout: 50s }
defaults:
  policies:
    cache: { maxSize: 32MiB }
routes:
  - name: api
    match: { path: { prefix: /api } }
    upstream: app
    policies: { cache: false }
  - name: pages
    match: { path: { prefix: /pages } }
    upstream: app
  - name: files
    upstream: app
    policies: { cache: { maxSize: 100MiB } }
`
  const file = tempConfig(policyText)
  const result = await waypost(['inject', '-', '--config', file, '--write-config-map', '--image', 'registry.example/waypost:1'], { input: workloads.Deployment! })
  t.equal(result.code, 0, result.stderr)
  const [deployment] = byKind(result.stdout, 'Deployment')
  const spec = podSpecOf(deployment!)
  t.same(spec.initContainers![0]!.resources, { requests: { cpu: '100m', memory: '268Mi' }, limits: { memory: '504Mi' } }, '136Mi + 132 MiB of caches requested; 240Mi + twice 132 MiB as the limit')
  t.equal(spec.terminationGracePeriodSeconds, 70, "the file's drain: 10s + 50s + 10s")
  t.match(result.stderr, /memory: request 268Mi, limit 504Mi: the gateway's own plus the cache of 2 routes \(132 MiB of maxSize/)
  const [configMap] = byKind(result.stdout, 'ConfigMap') as Array<KubernetesObject & { data: Record<string, string> }>
  t.equal(configMap!.data['waypost.yaml'], policyText, 'the file, as written')

  const plain = await waypost(['inject', '-', '--config', tempConfig('upstreams:\n  app: { url: "http://127.0.0.1:3000" }\nroutes:\n  - { name: a, upstream: app }\n')], { input: workloads.Deployment! })
  t.same(podSpecOf(objects(plain.stdout)[0]!).initContainers![0]!.resources, { requests: { cpu: '100m', memory: '136Mi' }, limits: { memory: '240Mi' } }, 'no cache: the base')
  const invalid = await waypost(['inject', '-', '--config', tempConfig('routes: 5\n')], { input: workloads.Deployment! })
  t.equal(invalid.code, 1)
  t.equal(invalid.stdout, '')
  t.match(invalid.stderr, /nothing written: --config .* is not a valid policy:\n.*upstreams: required field is missing/)
  const both = await waypost(['inject', '-', '--config', file, '--drain-delay', '1s'], { input: workloads.Deployment! })
  t.equal(both.code, 2)
  t.match(both.stderr, /with --config, drain: comes from the policy file/)
})

t.test('--classic (before Kubernetes 1.29): the first ordinary container, holding the app until ready; Jobs refused', async (t) => {
  const classic = { ...options, classic: true }
  const { yaml, notes } = inject(workloads.Deployment!, classic)
  const [deployment] = objects(yaml)
  t.same(schemaProblems(deployment!), [])
  const spec = podSpecOf(deployment!)
  t.same(spec.containers.map((container) => container.name), ['waypost', 'shop'], 'first: containers start in order')
  t.equal(spec.initContainers, undefined, 'no init container')
  const sidecar = spec.containers[0]!
  t.equal(sidecar.restartPolicy, undefined, 'restartPolicy is for init containers only')
  const hook = sidecar.lifecycle?.postStart?.exec?.command ?? []
  t.equal(hook[0], '/nodejs/bin/node')
  t.match(hook[2], "fetch('http://127.0.0.1:15901/ready')", 'postStart polls its own /ready, holding the next container')
  t.same(sidecar.readinessProbe?.httpGet, { path: '/ready', port: 15901 })
  t.equal(spec.terminationGracePeriodSeconds, 45)
  t.match(notes.join('\n'), /--classic: the app and the gateway get SIGTERM together, so give the app a preStop sleep of at least 35s/)
  t.equal(inject(yaml, classic).yaml, yaml, 'idempotent')
  t.equal(inject(yaml, options).yaml, yaml, 'a classic sidecar counts as injected for a native run too')
  for (const kind of ['Job', 'CronJob']) t.match(refusal(workloads[kind]!, classic), /with --classic the gateway is an ordinary container, which keeps running after the job is done, so the Job never completes/, kind)
  const command = await waypost(['inject', '-', '--classic', '--image', 'registry.example/waypost:1'], { input: workloads.StatefulSet! })
  t.equal(command.code, 0, command.stderr)
  t.equal(podSpecOf(objects(command.stdout)[0]!).containers[0]!.name, 'waypost')
})
