// How a limit meant for the whole gateway is shared out among its worker processes (docs/operations/workers.md).

/**
 * A per-process share of a limit meant for the whole gateway: divided by the number of workers,
 * rounded up, at least 1 (a limit of 3 over 2 workers allows 2 each: at most one more than asked,
 * never a worker that refuses everything).
 */
export function perWorkerShare(limit: number, workers: number): number {
  if (workers <= 1) return limit
  return Math.max(1, Math.ceil(limit / workers))
}
