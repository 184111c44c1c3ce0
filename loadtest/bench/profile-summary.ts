// Summarises a V8 CPU profile (node --cpu-prof): the functions with the most self time and the
// most inclusive time (self + everything they called), as % of the non-idle samples. Also a
// sampling heap profile (bench/alloc-profile.ts): the functions that allocate the most, per
// request when given the number of requests.
// usage: node dist/loadtest/bench/profile-summary.js FILE.cpuprofile [--top 25]
//        node dist/loadtest/bench/profile-summary.js FILE.heapprofile [--top 25] [--requests N]
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { fmt, table } from './util.js'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
}

function shortUrl(url: string): string {
  if (url === '') return ''
  const path = url.replace(/^file:\/\//, '')
  const modules = path.lastIndexOf('/node_modules/')
  if (modules !== -1) return path.slice(modules + '/node_modules/'.length)
  const dist = path.indexOf('/dist/')
  if (dist !== -1) return path.slice(dist + 1)
  return path
}

function keyOf(node: { callFrame: ProfileNode['callFrame'] }): string {
  const { functionName, url, lineNumber } = node.callFrame
  const name = functionName === '' ? '(anonymous)' : functionName
  return url === '' ? name : `${name} ${shortUrl(url)}:${lineNumber + 1}`
}

export function summarizeProfile(profile: Profile, top: number): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  // Hits per node: from `samples` when present (exact), else from hitCount.
  const hits = new Map<number, number>()
  if (profile.samples !== undefined) for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1)
  else for (const node of profile.nodes) hits.set(node.id, node.hitCount ?? 0)

  const self = new Map<string, number>()
  const inclusive = new Map<string, number>()
  let total = 0
  let idle = 0
  for (const [id, count] of hits) {
    const node = byId.get(id)!
    const key = keyOf(node)
    if (key === '(idle)') {
      idle += count
      continue
    }
    total += count
    self.set(key, (self.get(key) ?? 0) + count)
    // Each function on the stack once, however deep the recursion.
    const seen = new Set<string>()
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = keyOf(byId.get(at)!)
      if (k === '(root)' || seen.has(k)) continue
      seen.add(k)
      inclusive.set(k, (inclusive.get(k) ?? 0) + count)
    }
  }
  const seconds = (profile.endTime - profile.startTime) / 1e6
  const rank = (map: Map<string, number>, title: string): string => {
    const rows = [...map].sort((a, b) => b[1] - a[1]).slice(0, top)
    return table([[title, '% of busy', 'samples'], ...rows.map(([key, count]) => [key, fmt((count / total) * 100, 1), String(count)])])
  }
  return [
    `profile: ${fmt(seconds, 1)} s, ${total + idle} samples, ${fmt((idle / Math.max(1, total + idle)) * 100, 1)}% idle; percentages below are of the ${total} busy samples`,
    '',
    rank(self, 'top self time'),
    '',
    rank(inclusive, 'top inclusive time'),
  ].join('\n')
}

/** A sampling heap profile (HeapProfiler.stopSampling): a call tree whose nodes carry bytes allocated. */
interface HeapNode {
  callFrame: ProfileNode['callFrame']
  selfSize: number
  children: HeapNode[]
}

export function summarizeAllocations(head: HeapNode, top: number, requests: number | undefined): string {
  const self = new Map<string, number>()
  let total = 0
  const walk = (node: HeapNode): void => {
    if (node.selfSize > 0) {
      const key = keyOf(node)
      self.set(key, (self.get(key) ?? 0) + node.selfSize)
      total += node.selfSize
    }
    for (const child of node.children) walk(child)
  }
  walk(head)
  const per = requests === undefined ? 1 : requests
  const unit = requests === undefined ? 'KiB' : 'bytes/request'
  const amount = (bytes: number): string => (requests === undefined ? fmt(bytes / 1024, 0) : fmt(bytes / per, 0))
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, top)
  return [
    `allocations sampled: ${amount(total)} ${unit} in all`,
    '',
    table([['top allocating functions (self)', unit, '%'], ...rows.map(([key, bytes]) => [key, amount(bytes), fmt((bytes / total) * 100, 1)])]),
  ].join('\n')
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, requests: { type: 'string' } } })
if (positionals.length !== 1) {
  console.error('usage: profile-summary.js FILE.cpuprofile|FILE.heapprofile [--top 25] [--requests N]')
  process.exit(2)
}
const parsed = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile | { head: HeapNode }
console.log(
  'head' in parsed
    ? summarizeAllocations(parsed.head, Number(values.top), values.requests === undefined ? undefined : Number(values.requests))
    : summarizeProfile(parsed, Number(values.top)),
)
