// `waypost inject`: multi-document YAML in, the same YAML out with the sidecar added to every
// Deployment, StatefulSet, DaemonSet, Job and CronJob, and the Services selecting them sent to the
// gateway's port. Edits go through the yaml package's Document API, so comments, key order and
// every field it does not touch stay as written; other documents are passed through as they are.
import { parseAllDocuments, isSeq, type Document } from 'yaml'
import { SIDECAR_NAME, CONFIG_VOLUME, configVolume, neededGraceSeconds, sidecarContainer, type InjectOptions } from './sidecar.js'

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
interface Container { name?: string; ports?: ContainerPort[] }
interface PodSpec { hostNetwork?: boolean; containers?: Container[]; initContainers?: Container[]; volumes?: Array<{ name?: string }>; terminationGracePeriodSeconds?: number }
interface Manifest { kind?: unknown; metadata?: { name?: unknown }; spec?: { selector?: Record<string, string>; ports?: ServicePort[] } }
interface ServicePort { name?: string; port?: number; targetPort?: number | string }

/** A workload's pods, as far as Services need to know them. */
interface Workload { label: string; labels: Record<string, string>; appPort: ContainerPort | undefined; appPorts: ContainerPort[] }

export function inject(text: string, options: InjectOptions): InjectResult {
  const documents = parseAllDocuments(text)
  if (!Array.isArray(documents)) return { yaml: text, notes: [] } // an empty stream
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
  documents.forEach((document, index) => {
    const manifest = document.toJS() as Manifest | null
    const path = POD_TEMPLATE[String(manifest?.kind)]
    if (manifest === null || path === undefined) return
    const label = `document ${index + 1} (${String(manifest.kind)} ${String(manifest.metadata?.name)})`
    const workload = injectWorkload(document, manifest, path, label, options, problems, notes)
    if (workload !== undefined) workloads.push(workload)
  })
  documents.forEach((document, index) => {
    const manifest = document.toJS() as Manifest | null
    if (manifest?.kind !== 'Service') return
    retargetService(document, manifest, `document ${index + 1} (Service ${String(manifest.metadata?.name)})`, workloads, options, problems)
  })
  if (problems.length > 0) throw new InjectError(problems)
  const yaml = documents.map((document, index) => {
    const written = document.toString()
    if (written === unchanged[index]) return text.slice(index === 0 ? 0 : documents[index - 1]!.range[2], index === documents.length - 1 ? text.length : document.range[2])
    return index > 0 && !written.startsWith('---') ? `---\n${written}` : written
  })
  return { yaml: yaml.join(''), notes }
}

function injectWorkload(document: Document, manifest: Manifest, template: readonly string[], label: string, options: InjectOptions, problems: string[], notes: string[]): Workload | undefined {
  const pod = template.reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], manifest) as { metadata?: { labels?: Record<string, string> }; spec?: PodSpec } | undefined
  if (pod?.spec === undefined) {
    problems.push(`${label}: no pod template at ${[...template, 'spec'].join('.')}`)
    return undefined
  }
  const podSpec = pod.spec
  const containers = podSpec.containers ?? []
  const appPorts = containers.flatMap((container) => container.ports ?? [])
  const workload: Workload = { label, labels: pod.metadata?.labels ?? {}, appPorts, appPort: pickAppPort(appPorts, options) }
  const injected = [...containers, ...(podSpec.initContainers ?? [])].some((container) => container.name === SIDECAR_NAME)
  if (injected) return workload // idempotent: a second run changes nothing
  const refuse = (message: string): undefined => void problems.push(`${label}: ${message}`)
  if (podSpec.hostNetwork === true) return refuse("the pod uses hostNetwork: the gateway's ports would be the node's, shared by every such pod")
  const clash = appPorts.find((port) => port.containerPort === options.port || port.containerPort === options.adminPort)
  if (clash !== undefined) return refuse(`a container already uses port ${clash.containerPort}; choose other gateway ports with --port / --admin-port`)
  if ((podSpec.volumes ?? []).some((volume) => volume.name === CONFIG_VOLUME)) return refuse(`a volume is already named "${CONFIG_VOLUME}" but there is no "${SIDECAR_NAME}" container`)
  if (options.appPort !== undefined && workload.appPort === undefined) return refuse(`no container declares --app-port ${options.appPort}; ports: ${describePorts(appPorts)}`)

  const specPath = [...template, 'spec']
  prepend(document, [...specPath, 'initContainers'], sidecarContainer(options))
  append(document, [...specPath, 'volumes'], configVolume(options))
  const grace = podSpec.terminationGracePeriodSeconds ?? 30 // the Kubernetes default
  if (grace < neededGraceSeconds(options)) document.setIn([...specPath, 'terminationGracePeriodSeconds'], neededGraceSeconds(options))
  notes.push(
    workload.appPort === undefined
      ? `${label}: injected; point the policy file's upstream at the app's port: url: http://127.0.0.1:<app port>`
      : `${label}: injected; in ConfigMap ${options.configMap}, the upstream is the app: url: http://127.0.0.1:${workload.appPort.containerPort}`,
  )
  return workload
}

/** The app's port: the one --app-port names, or the only one the pod declares. */
function pickAppPort(ports: ContainerPort[], options: InjectOptions): ContainerPort | undefined {
  if (options.appPort !== undefined) return ports.find((port) => port.containerPort === options.appPort)
  const candidates = ports.filter((port) => port.containerPort !== options.port && port.containerPort !== options.adminPort)
  return candidates.length === 1 ? candidates[0] : undefined
}

/** Sends the Service's port that targeted the app to the gateway's port instead. */
function retargetService(document: Document, service: Manifest, label: string, workloads: Workload[], options: InjectOptions, problems: string[]): void {
  const selector = service.spec?.selector
  if (selector === undefined || Object.keys(selector).length === 0) return
  const selected = workloads.filter((workload) => Object.entries(selector).every(([key, value]) => workload.labels[key] === value))
  if (selected.length === 0) return
  const ports = service.spec?.ports ?? []
  const targets = (port: ServicePort): number | string | undefined => port.targetPort ?? port.port
  if (ports.some((port) => targets(port) === options.port)) return // already sent to the gateway
  for (const workload of selected) {
    const appPort = workload.appPort
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
    document.setIn(['spec', 'ports', matching[0]!.index, 'targetPort'], options.port)
  }
}

function describePorts(ports: ContainerPort[]): string {
  return ports.length === 0 ? 'none declared' : ports.map((port) => port.containerPort).join(', ')
}

function prepend(document: Document, path: string[], value: unknown): void {
  const list = document.getIn(path, true)
  if (isSeq(list)) list.items.unshift(document.createNode(value))
  else document.setIn(path, document.createNode([value]))
}

function append(document: Document, path: string[], value: unknown): void {
  const list = document.getIn(path, true)
  if (isSeq(list)) list.items.push(document.createNode(value))
  else document.setIn(path, document.createNode([value]))
}
