// One measurement = one load-generator run, bracketed by CPU readings: the CPU time of the server
// processes (by process group), of the load generator (reaped children of this process), and of
// the whole machine, whose difference is what OTHER jobs used meanwhile ("foreign" CPU). On a
// shared machine, a run is first delayed until the CPUs are quiet.
import { CLK_TCK, NCPU, groupTicks, machineTicks, selfAndReapedChildrenTicks } from './procfs.js'
import { performance } from 'node:perf_hooks'
import { log, sleep } from '../lib/log.js'

export interface Measured<T> {
  result: T
  /** CPU seconds used by each watched process group during the run. */
  cpuSeconds: number[]
  /** CPU seconds of the load generator (children of this process that exited during the run) and of this process. */
  loadgenCpuSeconds: number
  /**
   * Share (%) of all CPUs that the benchmark did not get during the run: used by processes outside
   * it, or stolen by the hypervisor (on a virtual machine). Includes stealPct.
   */
  foreignPct: number
  stealPct: number
  seconds: number
}

export async function measure<T>(pgids: readonly number[], run: () => Promise<T>): Promise<Measured<T>> {
  const before = pgids.map(groupTicks)
  const machine0 = machineTicks()
  const self0 = selfAndReapedChildrenTicks()
  const t0 = performance.now()
  const result = await run()
  const seconds = (performance.now() - t0) / 1000
  const after = pgids.map(groupTicks)
  const machine1 = machineTicks()
  const self1 = selfAndReapedChildrenTicks()
  const ours = after.reduce((sum, ticks, i) => sum + ticks - before[i]!, 0) + (self1 - self0)
  const total = machine1.total - machine0.total
  const steal = machine1.steal - machine0.steal
  const others = Math.max(0, machine1.busy - machine0.busy - ours)
  return {
    result,
    cpuSeconds: after.map((ticks, i) => (ticks - before[i]!) / CLK_TCK),
    loadgenCpuSeconds: (self1 - self0) / CLK_TCK,
    foreignPct: total > 0 ? ((others + steal) / total) * 100 : 0,
    stealPct: total > 0 ? (steal / total) * 100 : 0,
    seconds,
  }
}

/**
 * Waits (at most `maxSeconds`) until the machine is no more than `maxBusyPct` % busy (steal included) over a 0.3 s
 * window -- our own servers are idle between runs, so what is busy then is someone else.
 * Returns the seconds waited.
 */
export async function waitQuiet(maxSeconds: number, maxBusyPct: number): Promise<number> {
  const t0 = performance.now()
  let busy = 0
  while ((performance.now() - t0) / 1000 < maxSeconds) {
    const a = machineTicks()
    await sleep(300)
    const b = machineTicks()
    busy = b.total > a.total ? ((b.busy - a.busy + b.steal - a.steal) / (b.total - a.total)) * 100 : 0
    if (busy <= maxBusyPct) break
  }
  const waited = (performance.now() - t0) / 1000
  if (waited > 1) log(`    waited ${waited.toFixed(1)} s for other processes to go quiet (last 0.3 s: ${busy.toFixed(0)}% of ${NCPU} CPUs busy)`)
  return waited
}
