// The sidecar that `waypost inject` adds: one container spec and the pod-level settings it needs,
// the same as sidecar-manifests/base/deployment.yaml writes by hand.
export const SIDECAR_NAME = 'waypost'
export const CONFIG_VOLUME = 'waypost-config'
export const CONFIG_DIR = '/etc/waypost'

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
}

/** Room for the app's own exit after the gateway's drain. */
const GRACE_MARGIN_SECONDS = 10

/** The least terminationGracePeriodSeconds that lets the gateway finish its drain. */
export function neededGraceSeconds(options: InjectOptions): number {
  return Math.ceil((options.drainDelayMs + options.drainTimeoutMs) / 1000) + GRACE_MARGIN_SECONDS
}

/**
 * A native sidecar (an init container with restartPolicy: Always, Kubernetes 1.29+): the app's
 * containers start once its startup probe passes, it is stopped after them, and it does not keep
 * a Job's pod running. No preStop: it drains on SIGTERM itself.
 */
export function sidecarContainer(options: InjectOptions): Record<string, unknown> {
  const probe = (path: string, extra: Record<string, number>) => ({ httpGet: { path, port: options.adminPort }, ...extra })
  return {
    name: SIDECAR_NAME,
    image: options.image,
    restartPolicy: 'Always',
    env: [
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
    resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { memory: '128Mi' } },
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

export function configVolume(options: InjectOptions): Record<string, unknown> {
  return { name: CONFIG_VOLUME, configMap: { name: options.configMap } }
}
