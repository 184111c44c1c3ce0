// The sidecar that `waypost inject` adds: one container spec and the pod-level settings it needs,
// the same as sidecar-manifests/base/deployment.yaml writes by hand, and the documents it may write
// beside the workloads (the admin-port NetworkPolicy, a starter policy ConfigMap).
import type { GatewayConfig } from '../config/schema.js'
import { CacheConfig } from '../policies/cache/cache.js'
import { toBytes } from '../core/units.js'
import { withDefaults } from '../core/schema-defaults.js'
import { GATEWAY_ENVIRONMENT, IMAGE_COMMAND, IMAGE_NODE } from '../core/node-flags.js'

export const SIDECAR_NAME = 'waypost'
export const CONFIG_VOLUME = 'waypost-config'
export const CONFIG_DIR = '/etc/waypost'

/**
 * The gateway's ports in a pod. Not 8080/9901 (the defaults of `waypost run` on a laptop): 8080 is
 * the commonest app port of all, so a sidecar there would clash with the app it fronts. The 15000s
 * are where meshes put their sidecars; these two are not among Istio's (15000-15021, 15090).
 */
export const DEFAULT_PORT = 15080
export const DEFAULT_ADMIN_PORT = 15901
/** The namespace whose pods may reach the admin port (metrics scrapes). */
export const DEFAULT_ADMIN_FROM = 'monitoring'

export interface InjectOptions {
  image: string
  /** The ConfigMap holding `waypost.yaml`. */
  configMap: string
  /** The gateway's proxy port (WAYPOST_LISTEN) and admin port (WAYPOST_ADMIN). */
  port: number
  adminPort: number
  /** The app's container port, when the pod declares several. */
  appPort?: number
  /** The policy file's drain.delay and drain.timeout, in milliseconds. */
  drainDelayMs: number
  drainTimeoutMs: number
  /** Before Kubernetes 1.29: the gateway as the first of the ordinary containers, not a native sidecar. */
  classic?: boolean
  /** Write a NetworkPolicy per workload that keeps the admin port (and the app's own port) closed. Default true. */
  networkPolicy?: boolean
  /** The namespace admitted to the admin port by that NetworkPolicy. */
  adminFrom?: string
  /** The policy the sidecar will run, when given: it sizes the memory limit, and is the ConfigMap's content. */
  policy?: { text: string; config: GatewayConfig }
  /** Write the ConfigMap `configMap` too: the policy's text, or a starter policy for the app's port. */
  writeConfigMap?: boolean
}

/** Room for the app's own exit after the gateway's drain. */
const GRACE_MARGIN_SECONDS = 10

/** The least terminationGracePeriodSeconds that lets the gateway finish its drain. */
export function neededGraceSeconds(options: InjectOptions): number {
  return Math.ceil((options.drainDelayMs + options.drainTimeoutMs) / 1000) + GRACE_MARGIN_SECONDS
}

const MIB = 1024 * 1024
/**
 * What the gateway needs without a cache, from `npm run loadtest:memory` on Node 24 (the image's),
 * docs/performance.md#memory: RSS after the bench's load is 125-137 MiB in most samples, so that
 * is the request. The limit holds the highest sample (154 MiB with a young generation of 2 x 4
 * MiB, the heap's sawtooth caught high; up to 8 MiB more at 2 x 8) plus 5,000 idle keep-alive
 * connections at 12-13 KiB each (59-65 MiB), with some room: 240 MiB.
 */
export const BASE_REQUEST_MIB = 136
export const BASE_LIMIT_MIB = 240

/**
 * Memory for the gateway: the base, plus each route's cache. A route's cache holds up to maxSize
 * and, while responses are being copied in, up to maxSize more (policies/cache/store.ts), so the
 * limit adds twice each maxSize and the request once.
 */
export function memoryResources(config: GatewayConfig | undefined): { requestMiB: number; limitMiB: number; cacheBytes: number; cachedRoutes: number } {
  let cacheBytes = 0
  let cachedRoutes = 0
  const defaults = config?.defaults?.policies?.cache
  for (const route of config?.routes ?? []) {
    const own = route.policies?.cache
    // Merged as the compiler merges sections: the route's fields over the defaults'; `false` switches it off.
    if (own === false || (own === undefined && (defaults === undefined || defaults === false))) continue
    const section = withDefaults(CacheConfig, { ...(defaults === false ? {} : defaults), ...own })
    cacheBytes += toBytes(section.maxSize!)
    cachedRoutes++
  }
  return {
    requestMiB: BASE_REQUEST_MIB + Math.ceil(cacheBytes / MIB),
    limitMiB: BASE_LIMIT_MIB + Math.ceil((2 * cacheBytes) / MIB),
    cacheBytes,
    cachedRoutes,
  }
}

/**
 * The gateway's container. Native (Kubernetes 1.29+): an init container with restartPolicy: Always,
 * so the app's containers start once its startup probe passes, it is stopped after them, and it
 * does not keep a Job's pod running; no preStop: it drains on SIGTERM itself. Classic: the first
 * ordinary container, whose postStart hook holds the next container's start until /ready answers.
 */
export function sidecarContainer(options: InjectOptions): Record<string, unknown> {
  const probe = (path: string, extra: Record<string, number>) => ({ httpGet: { path, port: options.adminPort }, ...extra })
  const memory = memoryResources(options.policy?.config)
  return {
    name: SIDECAR_NAME,
    image: options.image,
    // The image's ENTRYPOINT, CMD and malloc setting, written out so they are visible where the
    // memory limit they were measured with is set.
    command: [...IMAGE_COMMAND],
    args: ['run'],
    ...(options.classic === true ? {} : { restartPolicy: 'Always' }),
    env: [
      ...Object.entries(GATEWAY_ENVIRONMENT).map(([name, value]) => ({ name, value })),
      { name: 'WAYPOST_CONFIG', value: `${CONFIG_DIR}/waypost.yaml` },
      { name: 'WAYPOST_LISTEN', value: `0.0.0.0:${options.port}` },
      { name: 'WAYPOST_ADMIN', value: `0.0.0.0:${options.adminPort}` },
    ],
    ports: [
      { name: 'waypost-http', containerPort: options.port },
      { name: 'waypost-admin', containerPort: options.adminPort },
    ],
    startupProbe: probe('/ready', { periodSeconds: 1, failureThreshold: 30 }),
    readinessProbe: probe('/ready', { periodSeconds: 5, failureThreshold: 1 }),
    livenessProbe: probe('/live', { periodSeconds: 10, timeoutSeconds: 2, failureThreshold: 3 }),
    ...(options.classic === true ? { lifecycle: { postStart: { exec: { command: readyWait(options.adminPort) } } } } : {}),
    resources: { requests: { cpu: '100m', memory: `${memory.requestMiB}Mi` }, limits: { memory: `${memory.limitMiB}Mi` } },
    securityContext: {
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    // The directory, not a subPath: the gateway sees the ConfigMap's `..data` swap and reloads.
    volumeMounts: [{ name: CONFIG_VOLUME, mountPath: CONFIG_DIR, readOnly: true }],
  }
}

/**
 * The classic sidecar's postStart hook: polls the gateway's own /ready for up to 60 s (a failed
 * hook restarts the container). The image has no shell, but it has node (as overlays/pre-1.29 does).
 */
function readyWait(adminPort: number): string[] {
  const script =
    'const deadline = Date.now() + 60000; ' +
    `const poll = () => fetch('http://127.0.0.1:${adminPort}/ready').then((response) => { if (response.ok) process.exit(0); throw new Error(String(response.status)) })` +
    '.catch(() => Date.now() > deadline ? process.exit(1) : setTimeout(poll, 250)); poll()'
  return [IMAGE_NODE, '-e', script]
}

export function configVolume(options: InjectOptions): Record<string, unknown> {
  return { name: CONFIG_VOLUME, configMap: { name: options.configMap } }
}

/**
 * Ingress to the injected pods: the gateway's port from anywhere, its admin port (metrics, but also
 * POST /reload) only from `adminFrom`, and the pod's other declared ports as before. The app's own
 * port is in no rule, so other pods cannot reach the app around the gateway even when it listens on
 * the pod IP. Port numbers, not names: some CNIs ignore named ports of init containers.
 */
export function networkPolicy(name: string, namespace: string | undefined, podLabels: Record<string, string>, otherPorts: number[], options: InjectOptions): Record<string, unknown> {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name, ...(namespace === undefined ? {} : { namespace }), labels: { 'app.kubernetes.io/component': 'waypost' } },
    spec: {
      podSelector: { matchLabels: podLabels },
      policyTypes: ['Ingress'],
      ingress: [
        { ports: [options.port, ...otherPorts].map((port) => ({ port, protocol: 'TCP' })) },
        {
          from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': options.adminFrom ?? DEFAULT_ADMIN_FROM } } }],
          ports: [{ port: options.adminPort, protocol: 'TCP' }],
        },
      ],
    },
  }
}

/** A policy to start from: every request to the app on the pod's loopback, with a deadline and one retry. */
export function starterPolicy(appPort: number, options: InjectOptions): string {
  return `# A starter policy written by \`waypost inject --write-config-map\`: every request goes to the app
# on the pod's loopback. Edit it and \`kubectl apply\` it again: the gateway reloads it in place.
# Check it first with \`npx waypost validate FILE\`; every field: docs/configuration/policy-file.md.
listen:
  address: 0.0.0.0:${options.port}   # WAYPOST_LISTEN in the sidecar wins; written so the file says what runs
admin:
  address: 0.0.0.0:${options.adminPort}
drain:
  # terminationGracePeriodSeconds was sized for these two: change them with --drain-delay/--drain-timeout.
  delay: ${formatMs(options.drainDelayMs)}
  timeout: ${formatMs(options.drainTimeoutMs)}
upstreams:
  app:
    url: http://127.0.0.1:${appPort}   # the app's port; let the app listen on 127.0.0.1 only
    idleTimeout: 4s
    connectTimeout: 1s
defaults:
  policies:
    timeout: { request: 10s }
routes:
  - name: default
    match: { path: { prefix: / } }
    upstream: app
    policies:
      retry: { attempts: 2 }
`
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}

export function policyConfigMap(name: string, namespace: string | undefined, text: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, ...(namespace === undefined ? {} : { namespace }), labels: { 'app.kubernetes.io/component': 'waypost' } },
    data: { 'waypost.yaml': text },
  }
}

/**
 * A warning when the image cannot be pulled as named: Waypost is published in no registry, so an
 * image without a registry part (`waypost:0.1.0`) is either a local tag (kind/minikube may have it
 * loaded) or a Docker Hub name that does not exist.
 */
export function imageWarning(image: string, isDefault: boolean): string | undefined {
  if (image.includes('/')) return undefined
  const how = `build and push it (docker build -t REGISTRY/${image} . && docker push REGISTRY/${image}) and pass --image REGISTRY/${image}, or load it into the nodes (kind load docker-image ${image}; minikube image load ${image})`
  return isDefault
    ? `warning: the default image ${image} is a local tag that no registry serves: ${how}`
    : `warning: the image ${image} names no registry, so nodes look for docker.io/library/${image.split(':')[0]}, which is not Waypost: ${how}`
}
