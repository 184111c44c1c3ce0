// Offline validation of Kubernetes objects against the API's OpenAPI schemas (kubernetes-models:
// one class per kind, whose validate() runs the compiled schema). It checks types, required
// fields and enums; like the models, it does not reject unknown fields, so tests that care about a
// field also assert it by name.
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1'
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1'
import { CronJob, Job } from 'kubernetes-models/batch/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1'

export type KubernetesObject = { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown }; [field: string]: unknown }

interface ModelClass {
  new (data: KubernetesObject): { validate(): void }
}

const models: Record<string, ModelClass> = {}
for (const model of [ConfigMap, Secret, Service, Deployment, StatefulSet, DaemonSet, Job, CronJob, PodDisruptionBudget, NetworkPolicy, ServiceMonitor, PrometheusRule]) {
  // Every class carries its own apiVersion and kind as statics.
  const { apiVersion, kind } = model as unknown as { apiVersion: string; kind: string }
  models[`${apiVersion}/${kind}`] = model as unknown as ModelClass
}

/**
 * cert-manager's Certificate (cert-manager.io/v1): its CRD schema is not in kubernetes-models, so a
 * minimal structural check stands in for it, written from the CRD's required fields and enums. It
 * checks less than the real schema (and, like the models, allows unknown fields).
 */
function certificateProblems(object: KubernetesObject, name: string): string[] {
  const problems: string[] = []
  const spec = object.spec as Record<string, unknown> | undefined
  const isString = (value: unknown): value is string => typeof value === 'string' && value !== ''
  const isStrings = (value: unknown): boolean => Array.isArray(value) && value.length > 0 && value.every(isString)
  if (!isString(object.metadata?.name)) problems.push(`${name}: metadata.name is required`)
  if (typeof spec !== 'object' || spec === null) return [...problems, `${name}: spec is required`]
  if (!isString(spec.secretName)) problems.push(`${name}: spec.secretName is required`)
  const issuer = spec.issuerRef as Record<string, unknown> | undefined
  if (!isString(issuer?.name)) problems.push(`${name}: spec.issuerRef.name is required`)
  if (issuer?.kind !== undefined && !['Issuer', 'ClusterIssuer'].includes(String(issuer.kind))) problems.push(`${name}: spec.issuerRef.kind: expected Issuer or ClusterIssuer`)
  const identities = ['commonName', 'dnsNames', 'uris', 'emailAddresses', 'ipAddresses', 'literalSubject'].filter((field) => spec[field] !== undefined)
  if (identities.length === 0) problems.push(`${name}: spec needs at least one of commonName, dnsNames, uris, emailAddresses, ipAddresses`)
  for (const field of ['dnsNames', 'uris', 'emailAddresses', 'ipAddresses', 'usages']) {
    if (spec[field] !== undefined && !isStrings(spec[field])) problems.push(`${name}: spec.${field}: expected a list of strings`)
  }
  for (const field of ['duration', 'renewBefore']) {
    if (spec[field] !== undefined && !/^(\d+(\.\d+)?(h|m|s|ms))+$/.test(String(spec[field]))) problems.push(`${name}: spec.${field}: expected a Go duration such as 2160h`)
  }
  const usages = new Set(['signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement', 'data encipherment', 'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any', 'server auth', 'client auth', 'code signing', 'email protection', 's/mime', 'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing', 'microsoft sgc', 'netscape sgc'])
  for (const usage of (spec.usages as unknown[] | undefined) ?? []) if (!usages.has(String(usage))) problems.push(`${name}: spec.usages: unknown usage "${String(usage)}"`)
  const key = spec.privateKey as Record<string, unknown> | undefined
  if (key?.algorithm !== undefined && !['RSA', 'ECDSA', 'Ed25519'].includes(String(key.algorithm))) problems.push(`${name}: spec.privateKey.algorithm: expected RSA, ECDSA or Ed25519`)
  if (key?.rotationPolicy !== undefined && !['Never', 'Always'].includes(String(key.rotationPolicy))) problems.push(`${name}: spec.privateKey.rotationPolicy: expected Never or Always`)
  if (key?.algorithm === 'ECDSA' && key.size !== undefined && ![256, 384, 521].includes(Number(key.size))) problems.push(`${name}: spec.privateKey.size: ECDSA takes 256, 384 or 521`)
  return problems
}

/** The schema's complaints about one object (empty when valid); an unknown kind is a complaint too. */
export function schemaProblems(object: KubernetesObject): string[] {
  const name = `${String(object.kind)} ${String(object.metadata?.name)}`
  if (object.apiVersion === 'cert-manager.io/v1' && object.kind === 'Certificate') return certificateProblems(object, name)
  const model = models[`${String(object.apiVersion)}/${String(object.kind)}`]
  if (model === undefined) return [`${name}: no schema for ${String(object.apiVersion)} ${String(object.kind)}`]
  try {
    new model(object).validate()
    return []
  } catch (error) {
    return [`${name}: ${(error as Error).message}`]
  }
}
