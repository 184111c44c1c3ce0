// `waypost inject`: every workload kind gets a native sidecar whose output passes the Kubernetes
// schemas; comments and other documents survive; a second run changes nothing; Services move to
// the gateway's port; what cannot be handled is refused by document, kind and name.
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import type { IContainer, IPodSpec } from 'kubernetes-models/v1'
import { inject, InjectError } from '../src/inject/inject.js'
import type { InjectOptions } from '../src/inject/sidecar.js'
import { schemaProblems, type KubernetesObject } from './kubernetes-schema.js'
import { waypost } from './helpers.js'

const options: InjectOptions = { image: 'registry.example/waypost:1', configMap: 'shop-waypost', port: 8080, adminPort: 9901, drainDelayMs: 5000, drainTimeoutMs: 30_000 }

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
    t.same(sidecar.startupProbe?.httpGet, { path: '/ready', port: 9901 })
    t.same(sidecar.readinessProbe?.httpGet, { path: '/ready', port: 9901 })
    t.same(sidecar.livenessProbe?.httpGet, { path: '/live', port: 9901 })
    t.same(sidecar.ports?.map((port) => port.containerPort), [8080, 9901])
    t.same(sidecar.env?.find((variable) => variable.name === 'WAYPOST_LISTEN')?.value, '0.0.0.0:8080')
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
  t.same(output.map((object) => object.kind), ['ConfigMap', 'Deployment', 'Service', 'Job'])
  t.same(output.flatMap(schemaProblems), [])
  t.same((output[2]!.spec as { ports: unknown[] }).ports, [{ name: 'http', port: 80, targetPort: 8080 }], "the Service's named target (the app's port) now is the gateway's port")
  t.match(yaml, 'targetPort: 8080 # the app')
  t.match(notes.join('\n'), 'url: http://127.0.0.1:3000', 'the user is told what to write as the upstream')
  t.equal(inject(yaml, options).yaml, yaml, 'idempotent')
})

t.test('Service ports: the one that targets the app is retargeted; ambiguity is refused', async (t) => {
  const twoPorts = service('    - { name: http, port: 80, targetPort: 3000 }\n    - { name: debug, port: 9000, targetPort: 9000 }')
  const output = objects(inject(`${workloads.Deployment}---\n${twoPorts}`, options).yaml)
  t.same((output[1]!.spec as { ports: Array<{ targetPort: number }> }).ports.map((port) => port.targetPort), [8080, 9000])
  const neither = service('    - { name: a, port: 80, targetPort: 4000 }\n    - { name: b, port: 81, targetPort: 4001 }')
  t.match(refusal(`${workloads.Deployment}---\n${neither}`), /^document 2 \(Service shop\): has 2 ports and none targets the app port 3000/)
  const twoAppPorts = workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 3000\n            - containerPort: 3001')
  t.match(refusal(`${twoAppPorts}---\n${service('    - port: 80')}`), /Service shop\): selects document 1 \(Deployment shop\), whose app port is ambiguous \(3000, 3001\); pass --app-port/)
  const picked = objects(inject(`${twoAppPorts}---\n${service('    - { port: 80, targetPort: 3001 }')}`, { ...options, appPort: 3001 }).yaml)
  t.equal((picked[1]!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 8080)
  const unrelated = service('    - { port: 80, targetPort: 3000 }').replace('app: shop', 'app: other')
  t.match(inject(`${workloads.Deployment}---\n${unrelated}`, options).yaml, 'targetPort: 3000', 'a Service selecting other pods is left alone')
})

t.test('refusals name the document, its kind and name; nothing is written', async (t) => {
  const hostNetwork = workloads.Deployment!.replace('  spec:\n', '  spec:\n      hostNetwork: true\n')
  t.match(refusal(`${workloads.DaemonSet}---\n${hostNetwork}`), /^document 2 \(Deployment shop\): the pod uses hostNetwork/)
  t.match(refusal(workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 8080')), /^document 1 \(Deployment shop\): a container already uses port 8080; choose other gateway ports with --port/)
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
  t.equal(inject(`${workloads.Deployment}---\n${noSelector}`, options).yaml.endsWith(noSelector), true, 'a Service with an empty selector is left alone')
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
  const envoy = workloads.Deployment!.replace('  spec:\n', '  spec:\n      initContainers: [{ name: envoy, image: envoy:1, restartPolicy: Always, ports: [{ containerPort: 9901 }] }]\n')
  t.match(refusal(envoy), /a container already uses port 9901/)
  const undeclared = workloads.Deployment!.replace(/ {10}ports:\n {12}- name: web\n {14}containerPort: 3000\n/, '')
  t.match(refusal(`${undeclared}---\n${service('    - { port: 80, targetPort: 8080 }')}`), /Service shop\): already targets port 8080, the gateway's port, but document 1 \(Deployment shop\) had no gateway/)
})

t.test('a Service naming one of several pod ports settles the app port; --app-port also covers pods without ports', async (t) => {
  const twoAppPorts = workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 3000\n            - name: metrics\n              containerPort: 9090')
  const output = objects(inject(`${twoAppPorts}---\n${service('    - { port: 80, targetPort: web }')}`, options).yaml)
  t.equal((output[1]!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 8080)
  const noPorts = workloads.CronJob!.replace(/ {14}ports:\n {16}- name: web\n {18}containerPort: 3000\n/, '')
  const both = inject(`${workloads.Deployment}---\n${noPorts}`, { ...options, appPort: 3000 })
  t.equal(objects(both.yaml).filter((object) => JSON.stringify(object).includes('"name":"waypost"')).length, 2)
})

t.test('kind: List (what kubectl get -o yaml prints): each item is injected', async (t) => {
  const indent = (text: string) => text.trimEnd().split('\n').map((line, i) => (i === 0 ? `  - ${line}` : `    ${line}`)).join('\n')
  const list = `apiVersion: v1\nkind: List\nitems:\n${indent(workloads.Deployment!)}\n${indent(service('    - { port: 80, targetPort: 3000 }'))}\n`
  const [output] = objects(inject(list, options).yaml) as Array<{ items: KubernetesObject[] }>
  t.equal(podSpecOf(output!.items[0]!).initContainers![0]!.name, 'waypost')
  t.equal((output!.items[1]!.spec as { ports: Array<{ targetPort: number }> }).ports[0]!.targetPort, 8080)
  t.equal(inject(inject(list, options).yaml, options).yaml, inject(list, options).yaml, 'idempotent')
})

t.test('the command: stdin, stdout, options, exit codes', async (t) => {
  const run = (args: string[], input: string) => waypost(['inject', ...args], { input })
  // Five processes side by side rather than one after another.
  const [ok, refused, usage, badPort, missing] = await Promise.all([
    run(['-', '--image', 'waypost:test', '--config-map', 'shop-policy', '--port', '8081', '--admin-port', '9902', '--drain-delay', '2s', '--drain-timeout', '20s'], workloads.Deployment!),
    run(['-'], workloads.Deployment!.replace('containerPort: 3000', 'containerPort: 9901')),
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
  t.match(refused.stderr, /nothing written:\ndocument 1 \(Deployment shop\): a container already uses port 9901/)
  t.equal(usage.code, 2)
  t.match(badPort.stderr, /--port: expected a port number/)
  t.match(missing.stderr, /cannot read \/nonexistent\.yaml/)
})
