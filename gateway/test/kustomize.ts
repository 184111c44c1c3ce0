// `kubectl kustomize` is not installed here, so the tests build sidecar-manifests/ with this
// subset of it: `resources` (files and directories with a kustomization.yaml) and `patches` from
// files, either JSON patches (RFC 6902: add, remove, replace, move; with a `target`) or strategic
// merge patches (maps merge, `null` deletes a field, lists of containers, initContainers, volumes,
// env, volumeMounts and ports merge by their Kubernetes merge keys, `$patch: delete` removes a list
// element, other lists are replaced). Anything else in a kustomization throws, so an overlay never
// silently means something else here than in kubectl.
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments, parse } from 'yaml'
import type { KubernetesObject } from './kubernetes-schema.js'

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type JsonObject = { [key: string]: Json }

interface ConfigMapGenerator {
  name: string
  files?: string[]
  options?: { disableNameSuffixHash?: boolean; labels?: Record<string, string> }
}

interface Kustomization {
  resources?: string[]
  patches?: Array<{ path?: string; target?: { group?: string; version?: string; kind?: string; name?: string } }>
  configMapGenerator?: ConfigMapGenerator[]
}

const SUPPORTED = new Set(['apiVersion', 'kind', 'resources', 'patches', 'configMapGenerator'])
const SUPPORTED_GENERATOR = new Set(['name', 'files', 'options'])
const SUPPORTED_GENERATOR_OPTIONS = new Set(['disableNameSuffixHash', 'labels'])
/** The merge keys Kubernetes declares (x-kubernetes-patch-merge-key) for the lists our patches touch. */
const MERGE_KEYS: Record<string, string> = { containers: 'name', initContainers: 'name', volumes: 'name', env: 'name', volumeMounts: 'mountPath', ports: 'containerPort' }

/** Every object the kustomization in `dir` produces, in order. */
export function kustomize(dir: string): KubernetesObject[] {
  const kustomization = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization
  const unsupported = Object.keys(kustomization).filter((key) => !SUPPORTED.has(key))
  if (unsupported.length > 0) throw new Error(`${dir}: kustomize fields this test builder does not know: ${unsupported.join(', ')}`)
  const objects: KubernetesObject[] = []
  for (const resource of kustomization.resources ?? []) {
    const path = join(dir, resource)
    if (statSync(path).isDirectory()) objects.push(...kustomize(path))
    else objects.push(...readObjects(path))
  }
  for (const generator of kustomization.configMapGenerator ?? []) objects.push(generatedConfigMap(dir, generator))
  for (const patch of kustomization.patches ?? []) {
    if (patch.path === undefined) throw new Error(`${dir}: only patches from files are supported`)
    const body = parse(readFileSync(join(dir, patch.path), 'utf8')) as Json
    if (Array.isArray(body)) {
      const targets = objects.filter((object) => matches(object, patch.target))
      if (patch.target === undefined || targets.length === 0) throw new Error(`${dir}/${patch.path}: a JSON patch needs a target that matches`)
      for (const target of targets) applyJsonPatch(target as JsonObject, body as JsonObject[])
    } else {
      const patchObject = body as KubernetesObject
      const target = objects.find((object) => object.kind === patchObject.kind && object.metadata?.name === patchObject.metadata?.name)
      if (target === undefined) throw new Error(`${dir}/${patch.path}: no ${String(patchObject.kind)} ${String(patchObject.metadata?.name)} to patch`)
      mergeObject(target as JsonObject, body as JsonObject)
    }
  }
  return objects
}

/** A ConfigMap from files, as kustomize makes it: each file's name is its key. */
function generatedConfigMap(dir: string, generator: ConfigMapGenerator): KubernetesObject {
  const unsupported = [...Object.keys(generator).filter((key) => !SUPPORTED_GENERATOR.has(key)), ...Object.keys(generator.options ?? {}).filter((key) => !SUPPORTED_GENERATOR_OPTIONS.has(key))]
  if (unsupported.length > 0) throw new Error(`${dir}: configMapGenerator fields this test builder does not know: ${unsupported.join(', ')}`)
  if (generator.options?.disableNameSuffixHash !== true) throw new Error(`${dir}: configMapGenerator ${generator.name}: only disableNameSuffixHash: true is supported (the name hash is not reproduced)`)
  const data: Record<string, string> = {}
  for (const file of generator.files ?? []) data[file.split('/').at(-1)!] = readFileSync(join(dir, file), 'utf8')
  const labels = generator.options.labels
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: generator.name, ...(labels === undefined ? {} : { labels }) }, data } as KubernetesObject
}

export function readObjects(file: string): KubernetesObject[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((document) => {
    if (document.errors.length > 0) throw new Error(`${file}: ${document.errors[0]!.message}`)
    return document.toJS() as KubernetesObject
  })
}

export function isKustomization(dir: string): boolean {
  return existsSync(join(dir, 'kustomization.yaml'))
}

function matches(object: KubernetesObject, target: NonNullable<Kustomization['patches']>[number]['target']): boolean {
  if (target === undefined) return false
  const apiVersion = target.group === undefined || target.group === '' ? target.version : `${target.group}/${target.version}`
  return (target.kind === undefined || object.kind === target.kind) && (target.name === undefined || object.metadata?.name === target.name) && (target.version === undefined || object.apiVersion === apiVersion)
}

function mergeObject(base: JsonObject, patch: JsonObject): void {
  for (const [key, value] of Object.entries(patch)) {
    const current = base[key]
    if (value === null) delete base[key]
    else if (Array.isArray(value) && Array.isArray(current) && MERGE_KEYS[key] !== undefined) base[key] = mergeList(current, value, MERGE_KEYS[key]!)
    else if (isObject(value) && isObject(current)) mergeObject(current, value)
    else base[key] = value
  }
}

function mergeList(base: Json[], patch: Json[], mergeKey: string): Json[] {
  const out = base.slice()
  for (const element of patch) {
    if (!isObject(element)) throw new Error(`strategic merge: expected objects in a list merged by ${mergeKey}`)
    const directive = element.$patch
    const { $patch: _directive, ...fields } = element
    const index = out.findIndex((existing) => isObject(existing) && existing[mergeKey] === element[mergeKey])
    if (directive === 'delete') {
      if (index !== -1) out.splice(index, 1)
    } else if (directive !== undefined) throw new Error(`strategic merge: unsupported $patch: ${String(directive)}`)
    else if (index === -1) out.push(fields)
    else mergeObject(out[index] as JsonObject, fields)
  }
  return out
}

function applyJsonPatch(document: JsonObject, operations: JsonObject[]): void {
  for (const operation of operations) {
    const path = String(operation.path)
    switch (operation.op) {
      case 'add':
        insert(document, path, operation.value!)
        break
      case 'remove':
        take(document, path)
        break
      case 'replace':
        take(document, path)
        insert(document, path, operation.value!)
        break
      case 'move':
        insert(document, path, take(document, String(operation.from)))
        break
      default:
        throw new Error(`JSON patch: unsupported op ${String(operation.op)}`)
    }
  }
}

/** The parent container of a JSON pointer and its last segment. */
function locate(document: JsonObject, pointer: string): { parent: Json; key: string } {
  const segments = pointer.split('/').slice(1).map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'))
  const key = segments.pop()
  let parent: Json = document
  for (const segment of segments) {
    const next: Json | undefined = Array.isArray(parent) ? parent[Number(segment)] : isObject(parent) ? parent[segment] : undefined
    if (next === undefined) throw new Error(`JSON patch: no ${pointer}`)
    parent = next
  }
  if (key === undefined) throw new Error('JSON patch: the root cannot be patched')
  return { parent, key }
}

function take(document: JsonObject, pointer: string): Json {
  const { parent, key } = locate(document, pointer)
  if (Array.isArray(parent) && Number(key) < parent.length) return parent.splice(Number(key), 1)[0]!
  if (isObject(parent) && key in parent) {
    const value = parent[key]!
    delete parent[key]
    return value
  }
  throw new Error(`JSON patch: no ${pointer}`)
}

function insert(document: JsonObject, pointer: string, value: Json): void {
  const { parent, key } = locate(document, pointer)
  if (Array.isArray(parent)) parent.splice(key === '-' ? parent.length : Number(key), 0, value)
  else if (isObject(parent)) parent[key] = value
  else throw new Error(`JSON patch: cannot add under ${pointer}`)
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
