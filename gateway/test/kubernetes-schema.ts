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

/** The schema's complaints about one object (empty when valid); an unknown kind is a complaint too. */
export function schemaProblems(object: KubernetesObject): string[] {
  const name = `${String(object.kind)} ${String(object.metadata?.name)}`
  const model = models[`${String(object.apiVersion)}/${String(object.kind)}`]
  if (model === undefined) return [`${name}: no schema for ${String(object.apiVersion)} ${String(object.kind)}`]
  try {
    new model(object).validate()
    return []
  } catch (error) {
    return [`${name}: ${(error as Error).message}`]
  }
}
