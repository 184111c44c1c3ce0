// What the kernel says about our processes and the machine: CPU time (utime + stime from
// /proc/PID/stat), resident memory (VmRSS from /proc/PID/status), and how busy all CPUs are
// (/proc/stat), to tell runs disturbed by other jobs on a shared machine.
import { readFileSync, readdirSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { availableParallelism } from 'node:os'

/** Clock ticks per second of the times in /proc (almost always 100). */
export const CLK_TCK = ((): number => {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isFinite(value) && value > 0 ? value : 100
  } catch {
    return 100
  }
})()

export const NCPU = availableParallelism()

interface Stat {
  pid: number
  pgrp: number
  /** utime + stime, in ticks: every thread of the process. */
  ticks: number
  /** cutime + cstime: children that have exited and been waited for. */
  childTicks: number
}

function readStat(pid: number | 'self'): Stat | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined // the process has gone
  }
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ")".
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // fields[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17, pgrp 5.
  return {
    pid: pid === 'self' ? process.pid : pid,
    pgrp: Number(fields[2]),
    ticks: Number(fields[11]) + Number(fields[12]),
    childTicks: Number(fields[13]) + Number(fields[14]),
  }
}

/** PIDs of every process in the process group `pgid`. */
export function groupPids(pgid: number): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid)) continue
    if (pid === pgid) {
      pids.push(pid)
      continue
    }
    const stat = readStat(pid)
    if (stat?.pgrp === pgid) pids.push(pid)
  }
  return pids
}

/** CPU time (ticks) used so far by the live processes of a group. */
export function groupTicks(pgid: number): number {
  let sum = 0
  for (const pid of groupPids(pgid)) sum += readStat(pid)?.ticks ?? 0
  return sum
}

/** Resident set size (KiB) summed over the processes of a group. */
export function groupRssKiB(pgid: number): number {
  let sum = 0
  for (const pid of groupPids(pgid)) {
    try {
      const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (match !== null) sum += Number(match[1])
    } catch {
      // gone
    }
  }
  return sum
}

/** CPU ticks of this process and of its children that have exited (the load generators). */
export function selfAndReapedChildrenTicks(): number {
  const stat = readStat('self')
  return stat === undefined ? 0 : stat.ticks + stat.childTicks
}

/**
 * Ticks over all CPUs since boot: busy (user + nice + system + irq + softirq: a process's stime
 * includes the interrupt time charged while it runs, so both sides must count it), steal (taken by
 * the hypervisor for other virtual machines) and total.
 */
export function machineTicks(): { busy: number; steal: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal
  const busy = v[0]! + v[1]! + v[2]! + v[5]! + v[6]!
  const steal = v[7] ?? 0
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy, steal, total }
}
