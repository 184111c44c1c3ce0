// A worker process's side of node:cluster (docs/operations/workers.md): it runs an ordinary Gateway
// and tells its supervisor (server/cluster.ts) where its admin listener is, answers its requests for
// the metrics as data, and reloads when the supervisor relays a SIGHUP.
import type { Gateway, WorkerRole } from './gateway.js'
import type { WorkerMetrics } from '../telemetry/metrics.js'

/** The variable the supervisor passes each worker's role in (JSON of WorkerRole). */
export const WORKER_ROLE_VARIABLE = 'WAYPOST_WORKER_ROLE'

/** The supervisor's messages to a worker. */
export type ToWorker = { readonly type: 'waypost:metrics'; readonly id: number } | { readonly type: 'waypost:reload'; readonly source: string }

/** A worker's messages to its supervisor. */
export type FromWorker =
  | { readonly type: 'waypost:ready'; readonly admin: string; readonly listen: string; readonly plain: string | undefined }
  | { readonly type: 'waypost:metrics'; readonly id: number; readonly metrics?: WorkerMetrics; readonly error?: string }

/**
 * This process's role when node:cluster started it as a worker with a role from its supervisor;
 * undefined otherwise, whatever the environment says. node:cluster is loaded only when the variable
 * is there: a single process never loads it.
 */
export async function workerRoleOf(env: NodeJS.ProcessEnv): Promise<WorkerRole | undefined> {
  const text = env[WORKER_ROLE_VARIABLE]
  if (text === undefined || text === '') return undefined
  const { default: cluster } = await import('node:cluster')
  if (!cluster.isWorker) return undefined
  return JSON.parse(text) as WorkerRole
}

function send(message: FromWorker): void {
  // The channel closes when the supervisor is gone; main.ts's 'disconnect' handler stops the worker then.
  if (process.connected) process.send?.(message)
}

/** Once the gateway serves: tells the supervisor, and answers its messages from then on. */
export function reportToSupervisor(gateway: Gateway): void {
  process.on('message', (message: ToWorker) => {
    if (message.type === 'waypost:metrics') {
      gateway.metrics.snapshot().then(
        (metrics) => send({ type: 'waypost:metrics', id: message.id, metrics }),
        (error: unknown) => send({ type: 'waypost:metrics', id: message.id, error: (error as Error).message }),
      )
    } else if (message.type === 'waypost:reload') {
      gateway.signalReceived('SIGHUP', 'reload')
      void gateway.reload(message.source)
    }
  })
  const plain = gateway.address('plain')
  send({ type: 'waypost:ready', admin: gateway.address('admin'), listen: gateway.address('proxy'), plain: plain === '' ? undefined : plain })
}
