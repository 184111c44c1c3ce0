// `waypost inject`: multi-document YAML in, the same YAML out with the sidecar added to every
// Deployment, StatefulSet, DaemonSet, Job and CronJob, and the Services selecting them sent to the
// gateway's port. Edits go through the yaml package's Document API, so comments, key order and
// every field it does not touch stay as written; other documents are passed through as they are.
// New documents (a NetworkPolicy per workload, the policy ConfigMap on request) come after them.
import { parseAllDocuments, stringify, isAlias, isMap, isScalar, isSeq, type Document } from 'yaml'
import {
  SIDECAR_NAME,
  CONFIG_VOLUME,
  configVolume,
  memoryResources,
  neededGraceSeconds,
  networkPolicy,
  policyConfigMap,
  sidecarContainer,
  starterPolicy,
  type InjectOptions,
} from './sidecar.js'

/** Where each workload kind keeps its pod template. */
const POD_TEMPLATE: Record<string, readonly string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
}

/** What `inject` could not handle, one line per document, naming it. */
export class InjectError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'))
  }
}

export interface InjectResult {
  yaml: string
  /** What the user should know: the app port to write in the policy file, what was left alone. */
  notes: string[]
}

interface ContainerPort { name?: string; containerPort?: number }
interface Container { name?: string; ports?: ContainerPort[]; lifecycle?: { preStop?: { exec?: { command?: unknown[] }; sleep?: { seconds?: number } } } }
interface PodSpec { hostNetwork?: boolean; containers?: Container[]; initContainers?: Container[]; volumes?: Array<{ name?: string }>; terminationGracePeriodSeconds?: number }
interface Manifest { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown }; spec?: { selector?: Record<string, string> | null; ports?: ServicePort[] }; items?: unknown[] }
interface ServicePort { name?: string; port?: number; targetPort?: number | string }

/** A workload's pods, as far as Services need to know them. */
interface Workload {
  label: string
  labels: Record<string, string>
  appPort: ContainerPort | undefined
  appPorts: ContainerPort[]
  /** It had the sidecar before this run. */
  alreadyInjected: boolean
  name: string
  kind: string
  namespace: string | undefined
  /** Every other port a container of the pod declares (a metrics port, another sidecar's). */
  otherPorts: number[]
}

/** A manifest of the input, and where it sits in its document (inside a `kind: List`, under items.N). */
interface Located { manifest: Manifest; at: Array<string | number>; label: string }

/** Every manifest of a document: the document itself, or the items of a `kind: List` (what `kubectl get -o yaml` prints). */
function manifestsOf(document: Document, index: number): Located[] {
  const manifest = document.toJS() as Manifest | null
  if (manifest === null || typeof manifest !== 'object') return []
  const name = (m: Manifest): string => `${String(m.kind)} ${String(m.metadata?.name)}`
  if (manifest.kind !== 'List' || !Array.isArray(manifest.items)) return [{ manifest, at: [], label: `document ${index + 1} (${name(manifest)})` }]
  return manifest.items.flatMap((item, position) =>
    item !== null && typeof item === 'object' ? [{ manifest: item as Manifest, at: ['items', position], label: `document ${index + 1} item ${position + 1} (${name(item as Manifest)})` }] : [],
  )
}

export function inject(text: string, options: InjectOptions): InjectResult {
  // YAML 1.1, as kubectl reads manifests: `0644` is octal, `yes` a boolean, and they print back the same way.
  const documents = parseAllDocuments(text, { version: '1.1' })
  if (!Array.isArray(documents) || documents.length === 0) return { yaml: text, notes: [] } // an empty stream, or only comments
  const problems: string[] = []
  const notes: string[] = []
  const workloads: Workload[] = []
  documents.forEach((document, index) => {
    if (document.errors.length > 0) problems.push(`document ${index + 1}: YAML syntax: ${document.errors[0]!.message.split('\n')[0]}`)
  })
  if (problems.length > 0) throw new InjectError(problems)
  // What each document would print as if unchanged: a document still printing the same is
  // copied from the input byte for byte, so its formatting survives too.
  const unchanged = documents.map((document) => document.toString())
  const located = documents.map(manifestsOf)
  documents.forEach((document, index) => {
    for (const { manifest, at, label } of located[index]!) {
      const path = POD_TEMPLATE[String(manifest.kind)]
      if (path === undefined) continue
      const workload = injectWorkload(document, manifest, at, path, label, options, problems, notes)
      if (workload !== undefined) workloads.push(workload)
    }
  })
  documents.forEach((document, index) => {
    for (const { manifest, at, label } of located[index]!) if (manifest.kind === 'Service') retargetService(document, manifest, at, label, workloads, options, problems)
  })
  const existing = new Set(located.flat().map(({ manifest }) => objectKey(manifest.kind, manifest.metadata?.namespace, manifest.metadata?.name)))
  const injected = workloads.filter((workload) => !workload.alreadyInjected)
  const added = newDocuments(injected, existing, options, problems, notes)
  if (options.policy !== undefined && injected.length > 0) {
    const memory = memoryResources(options.policy.config)
    notes.push(
      memory.cachedRoutes === 0
        ? `memory: request ${memory.requestMiB}Mi, limit ${memory.limitMiB}Mi (the policy caches nothing)`
        : `memory: request ${memory.requestMiB}Mi, limit ${memory.limitMiB}Mi: the gateway's own plus the cache of ${memory.cachedRoutes} route${memory.cachedRoutes === 1 ? '' : 's'} (${Math.ceil(memory.cacheBytes / (1024 * 1024))} MiB of maxSize, held up to twice while responses are copied in)`,
    )
  }
  if (problems.length > 0) throw new InjectError(problems)
  const yaml = documents.map((document, index) => {
    const written = document.toString()
    if (written === unchanged[index]) return text.slice(index === 0 ? 0 : documents[index - 1]!.range[2], index === documents.length - 1 ? text.length : document.range[2])
    return index > 0 && !written.startsWith('---') ? `---\n${written}` : written
  })
  const tail = yaml.length > 0 && !yaml[yaml.length - 1]!.endsWith('\n') ? '\n' : ''
  return { yaml: yaml.join('') + tail + added.map((document) => `---\n${stringify(document, { blockQuote: 'literal', lineWidth: 0 })}`).join(''), notes }
}

function objectKey(kind: unknown, namespace: unknown, name: unknown): string {
  return `${String(kind)}/${typeof namespace === 'string' ? namespace : ''}/${String(name)}`
}

/**
 * The documents written beside the workloads injected in this run: a NetworkPolicy for each (unless
 * --no-network-policy), and with --write-config-map the policy ConfigMap, one per namespace. One the
 * input already has (a second run, or written by hand) is not written again.
 */
function newDocuments(injected: Workload[], existing: Set<string>, options: InjectOptions, problems: string[], notes: string[]): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = []
  const add = (document: Record<string, unknown>): void => {
    const metadata = document.metadata as { name: string; namespace?: string }
    const key = objectKey(document.kind, metadata.namespace, metadata.name)
    if (existing.has(key)) return
    existing.add(key)
    out.push(document)
  }
  if (options.networkPolicy !== false) {
    const written: Array<Record<string, unknown>> = []
    for (const workload of injected) {
      if (Object.keys(workload.labels).length === 0) {
        notes.push(`${workload.label}: its pods have no labels, so no NetworkPolicy can select them: the admin port ${options.adminPort} is open to the cluster`)
        continue
      }
      const policy = (name: string): Record<string, unknown> => networkPolicy(name, workload.namespace, workload.labels, workload.otherPorts, options)
      const same = (document: Record<string, unknown>): boolean => JSON.stringify(document.spec) === JSON.stringify(policy('').spec) && (document.metadata as { namespace?: string }).namespace === workload.namespace
      // Pods of two workloads with the same labels and ports (a Deployment and a Job of one app) need one policy.
      if (written.some(same)) continue
      const name = `${workload.name}-waypost`
      const taken = written.some((document) => (document.metadata as { name: string }).name === name && (document.metadata as { namespace?: string }).namespace === workload.namespace)
      const document = policy(taken ? `${workload.name}-${workload.kind.toLowerCase()}-waypost` : name)
      written.push(document)
      add(document)
    }
  }
  if (options.writeConfigMap === true) {
    for (const namespace of new Set(injected.map((workload) => workload.namespace))) {
      const here = injected.filter((workload) => workload.namespace === namespace)
      let text = options.policy?.text
      if (text === undefined) {
        const ports = new Set(here.map((workload) => workload.appPort?.containerPort))
        const port = ports.size === 1 ? [...ports][0] : undefined
        if (port === undefined) {
          const described = here.map((workload) => `${workload.label}: ${workload.appPort?.containerPort ?? 'unknown'}`).join('; ')
          problems.push(`--write-config-map: one starter policy needs one app port, and the workloads sharing ConfigMap ${options.configMap} have ${ports.size > 1 ? 'several' : 'none known'} (${described}); pass --app-port, --config FILE, or inject them separately`)
          continue
        }
        text = starterPolicy(port, options)
      }
      add(policyConfigMap(options.configMap, namespace, text))
    }
  }
  return out
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function injectWorkload(document: Document, manifest: Manifest, at: Array<string | number>, template: readonly string[], label: string, options: InjectOptions, problems: string[], notes: string[]): Workload | undefined {
  const refuse = (message: string): undefined => void problems.push(`${label}: ${message}`)
  const pod = template.reduce<unknown>((node, key) => (isObject(node) ? node[key] : undefined), manifest) as { metadata?: { labels?: Record<string, string> }; spec?: unknown } | undefined
  if (!isObject(pod) || !isObject(pod.spec)) return refuse(`no pod template at ${[...template, 'spec'].join('.')}`)
  const podSpec = pod.spec as PodSpec
  for (const key of ['containers', 'initContainers', 'volumes'] as const) {
    if (podSpec[key] !== undefined && podSpec[key] !== null && !Array.isArray(podSpec[key])) return refuse(`${[...template, 'spec', key].join('.')} is not a list`)
  }
  const specPath = [...at, ...template, 'spec']
  const containers = podSpec.containers ?? []
  const initContainers = podSpec.initContainers ?? []
  const declared = containers.flatMap((container) => container.ports ?? [])
  // An app that declares no port but was named with --app-port listens there all the same.
  const appPorts = declared.length === 0 && options.appPort !== undefined ? [{ containerPort: options.appPort }] : declared
  const alreadyInjected = [...containers, ...initContainers].some((container) => container.name === SIDECAR_NAME)
  const appPort = pickAppPort(appPorts, options)
  const otherPorts = [...containers, ...initContainers]
    .flatMap((container) => container.ports ?? [])
    .map((port) => port.containerPort)
    .filter((port): port is number => typeof port === 'number' && port !== appPort?.containerPort && port !== options.port && port !== options.adminPort)
  const workload: Workload = {
    label,
    labels: isObject(pod.metadata?.labels) ? pod.metadata.labels : {},
    appPorts,
    appPort,
    alreadyInjected,
    name: String(manifest.metadata?.name),
    kind: String(manifest.kind),
    namespace: typeof manifest.metadata?.namespace === 'string' ? manifest.metadata.namespace : undefined,
    otherPorts: [...new Set(otherPorts)],
  }
  if (alreadyInjected) return workload // idempotent: a second run changes nothing
  if (options.classic === true && isBatch(manifest)) {
    return refuse('with --classic the gateway is an ordinary container, which keeps running after the job is done, so the Job never completes: inject Jobs only on Kubernetes 1.29+ (without --classic)')
  }
  const shared = sharedStructure(document, specPath, options.classic === true)
  if (shared !== undefined) return refuse(shared)
  if (podSpec.hostNetwork === true) return refuse("the pod uses hostNetwork: the gateway's ports would be the node's, shared by every such pod")
  const clash = [...containers, ...initContainers].flatMap((container) => container.ports ?? []).find((port) => port.containerPort === options.port || port.containerPort === options.adminPort)
  if (clash !== undefined) return refuse(`a container already uses port ${clash.containerPort}; choose other gateway ports with --port / --admin-port`)
  if ((podSpec.volumes ?? []).some((volume) => volume.name === CONFIG_VOLUME)) return refuse(`a volume is already named "${CONFIG_VOLUME}" but there is no "${SIDECAR_NAME}" container`)
  if (options.appPort !== undefined && workload.appPort === undefined) return refuse(`no container declares --app-port ${options.appPort}; ports: ${describePorts(appPorts)}`)

  prepend(document, [...specPath, options.classic === true ? 'containers' : 'initContainers'], sidecarContainer(options))
  append(document, [...specPath, 'volumes'], configVolume(options))
  // The app's preStop runs before the gateway is even told to stop (it stops after the app): both fit in the grace period.
  const appPreStop = Math.max(0, ...containers.map(preStopSeconds))
  const needed = neededGraceSeconds(options) + appPreStop
  const grace = podSpec.terminationGracePeriodSeconds ?? 30 // the Kubernetes default
  if (grace < needed) document.setIn([...specPath, 'terminationGracePeriodSeconds'], needed)
  const port = workload.appPort === undefined ? '<app port>' : String(workload.appPort.containerPort)
  notes.push(
    workload.appPort === undefined
      ? `${label}: injected; point the policy file's upstream at the app's port: url: http://127.0.0.1:<app port>`
      : `${label}: injected; in ConfigMap ${options.configMap}, the upstream is the app: url: http://127.0.0.1:${port}`,
  )
  // Whatever reaches the app's port directly skips every policy: say how to close it.
  notes.push(
    `${label}: let the app listen on 127.0.0.1:${port} only, so clients cannot reach it around the gateway` +
      (options.networkPolicy === false ? '' : ` (the NetworkPolicy written beside it also keeps port ${port} closed to other pods)`),
  )
  if (options.classic === true) {
    const drainSeconds = Math.ceil((options.drainDelayMs + options.drainTimeoutMs) / 1000)
    notes.push(`${label}: --classic: the app and the gateway get SIGTERM together, so give the app a preStop sleep of at least ${drainSeconds}s (drain.delay + drain.timeout): it must outlive the exchanges the gateway still finishes`)
  } else if (!containers.some((container) => container.lifecycle?.preStop !== undefined) && !isBatch(manifest)) {
    notes.push(`${label}: the app has no preStop: give it one (e.g. sleep 5) so it keeps serving while the Service stops sending it traffic`)
  }
  return workload
}

function isBatch(manifest: Manifest): boolean {
  return manifest.kind === 'Job' || manifest.kind === 'CronJob'
}

/** Seconds a container's preStop hook waits: `sleep: {seconds}`, or `sleep N` in an exec command; 0 when unknown. */
function preStopSeconds(container: Container): number {
  const preStop = container.lifecycle?.preStop
  if (preStop === undefined || preStop === null) return 0
  if (typeof preStop.sleep?.seconds === 'number') return preStop.sleep.seconds
  const command = Array.isArray(preStop.exec?.command) ? preStop.exec.command.map(String).join(' ') : ''
  const sleep = /(?:^|[\s;&|/])sleep\s+(\d+)(?:s\b|\b)/.exec(command)
  return sleep === null ? 0 : Number(sleep[1])
}

/**
 * Anchors shared through aliases (`*pod`) or merge keys (`<<:`) on the path we edit: an edit would
 * replace the alias, or add keys that hide the merged ones, so the output would lose what the input
 * meant. Returns the reason to refuse, or undefined.
 */
function sharedStructure(document: Document, specPath: Array<string | number>, classic: boolean): string | undefined {
  const edited = classic ? 'containers' : 'initContainers'
  const paths = [...specPath.map((_, i) => specPath.slice(0, i + 1)), [...specPath, edited], [...specPath, 'volumes'], [...specPath, 'terminationGracePeriodSeconds']]
  for (const path of paths) {
    const node = document.getIn(path, true)
    if (isAlias(node)) return `${path.join('.')} is an alias (*${node.source}): write it out in full before injecting`
    if (isMap(node) && node.items.some((pair) => isMergeKey(pair.key))) return `${path.join('.')} uses a merge key (<<): write it out in full before injecting`
  }
  return undefined
}

/** `<<` (YAML 1.1 merge): the yaml package gives it as a symbol. */
function isMergeKey(key: unknown): boolean {
  if (!isScalar(key)) return false
  const value = key.value
  return value === '<<' || (typeof value === 'symbol' && value.description === '<<')
}

/** The app's port: the one --app-port names, or the only one the pod declares. */
function pickAppPort(ports: ContainerPort[], options: InjectOptions): ContainerPort | undefined {
  if (options.appPort !== undefined) return ports.find((port) => port.containerPort === options.appPort)
  const candidates = ports.filter((port) => port.containerPort !== options.port && port.containerPort !== options.adminPort)
  return candidates.length === 1 ? candidates[0] : undefined
}

/** Sends the Service's port that targeted the app to the gateway's port instead. */
function retargetService(document: Document, service: Manifest, at: Array<string | number>, label: string, workloads: Workload[], options: InjectOptions, problems: string[]): void {
  const selector = service.spec?.selector
  if (!isObject(selector) || Object.keys(selector).length === 0) return
  const selected = workloads.filter((workload) => Object.entries(selector).every(([key, value]) => workload.labels[key] === value))
  if (selected.length === 0) return
  const ports = Array.isArray(service.spec?.ports) ? service.spec.ports.filter(isObject) as ServicePort[] : []
  const targets = (port: ServicePort): number | string | undefined => port.targetPort ?? port.port
  if (ports.some((port) => targets(port) === options.port)) {
    // Sent to the gateway by an earlier run; but if a pod had no gateway before this run, the app itself may listen there.
    const fresh = selected.find((workload) => !workload.alreadyInjected)
    if (fresh !== undefined) problems.push(`${label}: already targets port ${options.port}, the gateway's port, but ${fresh.label} had no gateway: the app may listen there; choose another gateway port with --port`)
    return
  }
  for (const workload of selected) {
    // A Service naming one of the pod's ports settles which one is the app's when the pod has several.
    const appPort = workload.appPort ?? singleTarget(workload.appPorts, ports.map(targets))
    const matching = ports
      .map((port, index) => ({ port, index }))
      .filter(({ port }) => appPort !== undefined && (targets(port) === appPort.containerPort || (appPort.name !== undefined && targets(port) === appPort.name)))
    if (matching.length === 0 && ports.length === 1 && workload.appPorts.length <= 1) matching.push({ port: ports[0]!, index: 0 })
    if (matching.length !== 1) {
      problems.push(
        appPort === undefined
          ? `${label}: selects ${workload.label}, whose app port is ambiguous (${describePorts(workload.appPorts)}); pass --app-port`
          : `${label}: has ${ports.length} ports and ${matching.length === 0 ? 'none targets' : 'several target'} the app port ${appPort.containerPort}; retarget it by hand or pass --app-port`,
      )
      return
    }
    // A number, not the sidecar's port name: Services resolve named ports of init containers only from Kubernetes 1.32.
    document.setIn([...at, 'spec', 'ports', matching[0]!.index, 'targetPort'], options.port)
  }
}

/** The one declared port that the Service's targets name (by number or name), if exactly one. */
function singleTarget(ports: ContainerPort[], targets: Array<number | string | undefined>): ContainerPort | undefined {
  const named = ports.filter((port) => targets.some((target) => target === port.containerPort || (port.name !== undefined && target === port.name)))
  return named.length === 1 ? named[0] : undefined
}

function describePorts(ports: ContainerPort[]): string {
  return ports.length === 0 ? 'none declared' : ports.map((port) => port.containerPort).join(', ')
}

function prepend(document: Document, path: Array<string | number>, value: unknown): void {
  const list = document.getIn(path, true)
  if (isSeq(list)) list.items.unshift(document.createNode(value))
  else document.setIn(path, document.createNode([value]))
}

function append(document: Document, path: Array<string | number>, value: unknown): void {
  const list = document.getIn(path, true)
  if (isSeq(list)) list.items.push(document.createNode(value))
  else document.setIn(path, document.createNode([value]))
}
