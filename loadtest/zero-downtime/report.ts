// From samples to the verdict: requests sent / completed / failed by cause and by step, latency
// percentiles, the outage window of step 3 (failures there are expected and counted apart), what
// HAProxy and the gateways logged about the failed requests, and the JSON written to the run dir.
import { createReadStream, writeFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import type { Sample } from './load.js'
import type { OutageWindow, RestartRecord, TimelineEvent } from './steps.js'
import { count, fmt, percentile, percentiles, round, sortedEntries, table, type Percentiles } from './util.js'

/** Requests the long form must carry: the product claims zero errors in at least this many. */
const LONG_FORM_CLAIM = 50_000

export interface RunFacts {
  form: 'short' | 'long'
  rate: number
  durationS: number
  samples: Sample[]
  outage: OutageWindow | undefined
  restarts: RestartRecord[]
  timeline: TimelineEvent[]
  problems: string[]
  reloadPlan: string[]
  sendLagMs: number[]
  maxInFlightSeen: number
  haproxyLog: string
  gatewayLogs: string[]
  dir: string
  loadStartedAt: number
}

/** Steps whose failures make the run fail. Only step 3's outage window is allowed to fail. */
export const STEPS = ['warmup', 'reloads', 'rolling-restart', 'upstream-kill', 'cooldown'] as const

type Verdict = 'ok' | 'failed-unexpected' | 'failed-expected'

/**
 * A failure is expected only when the stub's outage explains it: the request was in flight when the
 * stub was killed or was sent while it was down, AND its failure came promptly (by the time the stub
 * was back plus OUTAGE_GRACE_MS). A request that hangs far past the outage (a timeout 15 s later) is
 * not explained by the stub being down and counts as unexpected.
 */
export const OUTAGE_GRACE_MS = 3000

function judge(sample: Sample, outage: OutageWindow | undefined): Verdict {
  if (sample.ok) return 'ok'
  // By time, not by step label: a request sent just before the label changed can still be in flight at the kill.
  if (outage !== undefined) {
    const inFlightAtKill = sample.sent <= outage.killAt && (Number.isNaN(sample.ended) || sample.ended >= outage.killAt)
    const sentWhileDown = sample.sent >= outage.killAt && sample.sent <= outage.upAt
    const prompt = !Number.isNaN(sample.ended) && sample.ended <= outage.upAt + OUTAGE_GRACE_MS
    if ((inFlightAtKill || sentWhileDown) && prompt) return 'failed-expected'
  }
  return 'failed-unexpected'
}

interface HaproxyLine {
  rid: string
  frontend: string
  server: string
  status: number
  termination: string
  retries: string
  timers: string
  raw: string
}

const HAPROXY_LINE = /^(\S+) (\S+) (\S+)\/(\S+) (-?\d+) (\S{4}) (\+?\d+) (\S+) (\d+)$/

async function readHaproxyLog(file: string): Promise<{ lines: Map<string, HaproxyLine>; retried: number; redispatched: number; terminations: Map<string, number>; statuses: Map<string, number>; serverEvents: string[] }> {
  const lines = new Map<string, HaproxyLine>()
  const terminations = new Map<string, number>()
  const statuses = new Map<string, number>()
  const serverEvents: string[] = []
  let retried = 0
  let redispatched = 0
  for await (const raw of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
    const match = HAPROXY_LINE.exec(raw)
    if (match === null) {
      if (/Server \S+ is (UP|DOWN)|backend .* has no server available/.test(raw)) serverEvents.push(raw)
      continue
    }
    const line: HaproxyLine = { rid: match[1]!, frontend: match[2]!, server: match[4]!, status: Number(match[5]), termination: match[6]!, retries: match[7]!, timers: match[8]!, raw }
    lines.set(line.rid, line)
    count(statuses, String(line.status))
    if (!line.termination.startsWith('--')) count(terminations, line.termination)
    if (line.retries !== '0') retried++
    if (line.retries.startsWith('+')) redispatched++
  }
  return { lines, retried, redispatched, terminations, statuses, serverEvents }
}

interface GatewayLogSummary {
  file: string
  access: number
  statuses: Record<string, number>
  warnings: string[]
}

/** Per gateway log: access lines by status, warnings and errors; and the access lines of the request ids in `wanted`. */
async function readGatewayLog(file: string, wanted: Set<string>, found: Map<string, string[]>): Promise<GatewayLogSummary> {
  const statuses = new Map<string, number>()
  const warnings: string[] = []
  let access = 0
  for await (const raw of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
    if (raw.includes('"msg":"access"')) {
      access++
      const status = /"status":(\d+)/.exec(raw)?.[1] ?? '?'
      count(statuses, status)
      const rid = /"reqId":"([^"]+)"/.exec(raw)?.[1]
      if (rid !== undefined && wanted.has(rid)) found.set(rid, [...(found.get(rid) ?? []), `${file.split('/').pop()}: ${raw}`])
      continue
    }
    const level = Number(/"level":(\d+)/.exec(raw)?.[1] ?? 0)
    if (level >= 40 || (level === 0 && raw.trim() !== '')) warnings.push(raw.length > 300 ? `${raw.slice(0, 300)}...` : raw)
  }
  return { file, access, statuses: Object.fromEntries(sortedEntries(statuses)), warnings }
}

export interface Report {
  verdict: 'PASS' | 'FAIL'
  form: string
  rate: number
  durationS: number
  totals: { due: number; sent: number; completed: number; ok: number; failed: number; failedUnexpected: number; failedExpected: number }
  latency: Percentiles
  failuresByCause: Record<string, number>
  byStep: Array<{ step: string; sent: number; ok: number; failedUnexpected: number; failedExpected: number; causes: Record<string, number>; latency: Percentiles }>
  outage: { killAtS: number; upAtS: number; downMs: number; failedExpected: number; failedOutsideWindow: number } | undefined
  restarts: RestartRecord[]
  reloads: string[]
  problems: string[]
  generator: { sendLagP99Ms: number; sendLagMaxMs: number; maxInFlight: number; achievedRate: number }
  haproxy: { retried: number; redispatched: number; terminations: Record<string, number>; statuses: Record<string, number>; serverEvents: string[] }
  gateways: GatewayLogSummary[]
  failedSamples: Array<Record<string, unknown>>
  /** Per second of the run: requests due, ok, failed, p50/p99 of the ok ones. */
  perSecond: Array<{ s: number; due: number; ok: number; failed: number; p50Ms: number; p99Ms: number }>
  timeline: TimelineEvent[]
}

export async function buildReport(facts: RunFacts): Promise<Report> {
  const { samples, outage } = facts
  const verdicts = samples.map((sample) => judge(sample, outage))
  const t = (ms: number): number => round((ms - facts.loadStartedAt) / 1000, 3)
  const byCause = new Map<string, number>()
  const byStep: Report['byStep'] = []
  for (const step of STEPS) {
    const inStep = samples.map((sample, i) => ({ sample, verdict: verdicts[i]! })).filter(({ sample }) => sample.step === step)
    if (inStep.length === 0) continue
    const causes = new Map<string, number>()
    for (const { sample } of inStep) if (!sample.ok) count(causes, sample.cause ?? '?')
    byStep.push({
      step,
      sent: inStep.filter(({ sample }) => sample.cause !== 'generator-bound').length,
      ok: inStep.filter(({ verdict }) => verdict === 'ok').length,
      failedUnexpected: inStep.filter(({ verdict }) => verdict === 'failed-unexpected').length,
      failedExpected: inStep.filter(({ verdict }) => verdict === 'failed-expected').length,
      causes: Object.fromEntries(sortedEntries(causes)),
      latency: percentiles(inStep.filter(({ sample }) => sample.ok).map(({ sample }) => sample.ended - sample.scheduled)),
    })
  }
  for (const sample of samples) if (!sample.ok) count(byCause, sample.cause ?? '?')

  const failed = samples.filter((sample) => !sample.ok)
  const verdictOf = new Map(samples.map((sample, i) => [sample, verdicts[i]!]))
  const failedUnexpected = verdicts.filter((verdict) => verdict === 'failed-unexpected').length
  const failedExpected = verdicts.filter((verdict) => verdict === 'failed-expected').length
  const sent = samples.filter((sample) => sample.cause !== 'generator-bound').length
  const completed = samples.filter((sample) => sample.status !== 0).length

  // What the load balancer and the gateways saw of the failed requests.
  const haproxy = await readHaproxyLog(facts.haproxyLog)
  const wanted = new Set(failed.map((sample) => `zd-${sample.id}`))
  const found = new Map<string, string[]>()
  const gateways: GatewayLogSummary[] = []
  for (const file of facts.gatewayLogs) gateways.push(await readGatewayLog(file, wanted, found))
  const failedSamples = failed
    .map((sample) => ({ sample, verdict: verdictOf.get(sample)! }))
    .sort((a, b) => (a.verdict === b.verdict ? a.sample.id - b.sample.id : a.verdict === 'failed-unexpected' ? -1 : 1))
    .slice(0, 2000)
    .map(({ sample, verdict }) => ({
      id: `zd-${sample.id}`,
      verdict,
      step: sample.step,
      kind: sample.kind,
      connection: sample.fresh ? 'new' : 'keep-alive',
      sentAtS: t(sample.sent),
      endedAtS: Number.isNaN(sample.ended) ? null : t(sample.ended),
      status: sample.status,
      cause: sample.cause,
      reason: sample.reason,
      server: sample.server,
      detail: sample.detail,
      haproxy: haproxy.lines.get(`zd-${sample.id}`)?.raw,
      gateway: found.get(`zd-${sample.id}`),
    }))

  // The product's claim is zero errors in at least 50,000 requests across the long form's steps.
  const problems = [...facts.problems]
  if (facts.form === 'long' && completed < LONG_FORM_CLAIM) problems.push(`the long form completed ${completed} requests, fewer than the ${LONG_FORM_CLAIM} the zero-downtime claim is made over (raise --rate)`)
  const lag = Float64Array.from(facts.sendLagMs).sort()
  const okLatency = samples.filter((sample) => sample.ok).map((sample) => sample.ended - sample.scheduled)
  const lastEnd = samples.reduce((max, sample) => (Number.isNaN(sample.ended) ? max : Math.max(max, sample.ended)), facts.loadStartedAt)
  return {
    verdict: failedUnexpected === 0 && problems.length === 0 ? 'PASS' : 'FAIL',
    form: facts.form,
    rate: facts.rate,
    durationS: facts.durationS,
    totals: { due: samples.length, sent, completed, ok: samples.length - failed.length, failed: failed.length, failedUnexpected, failedExpected },
    latency: percentiles(okLatency),
    failuresByCause: Object.fromEntries(sortedEntries(byCause)),
    byStep,
    outage:
      outage === undefined
        ? undefined
        : {
            killAtS: t(outage.killAt),
            upAtS: t(outage.upAt),
            downMs: Math.round(outage.upAt - outage.killAt),
            failedExpected,
            failedOutsideWindow: byStep.find((step) => step.step === 'upstream-kill')?.failedUnexpected ?? 0,
          },
    restarts: facts.restarts,
    reloads: facts.reloadPlan,
    problems,
    generator: {
      sendLagP99Ms: round(percentile(lag, 0.99)),
      sendLagMaxMs: round(lag.length === 0 ? NaN : lag[lag.length - 1]!),
      maxInFlight: facts.maxInFlightSeen,
      achievedRate: round(samples.filter((sample) => sample.ok).length / Math.max(1, (lastEnd - facts.loadStartedAt) / 1000), 1),
    },
    haproxy: {
      retried: haproxy.retried,
      redispatched: haproxy.redispatched,
      terminations: Object.fromEntries(sortedEntries(haproxy.terminations)),
      statuses: Object.fromEntries(sortedEntries(haproxy.statuses)),
      serverEvents: haproxy.serverEvents,
    },
    gateways,
    failedSamples,
    perSecond: perSecond(samples, facts.loadStartedAt),
    timeline: facts.timeline,
  }
}

function perSecond(samples: readonly Sample[], start: number): Report['perSecond'] {
  const buckets: Sample[][] = []
  for (const sample of samples) {
    const s = Math.max(0, Math.floor((sample.scheduled - start) / 1000))
    ;(buckets[s] ??= []).push(sample)
  }
  return [...buckets.entries()].map(([s, bucket = []]) => {
    const latency = percentiles(bucket.filter((sample) => sample.ok).map((sample) => sample.ended - sample.scheduled))
    return { s, due: bucket.length, ok: latency.count, failed: bucket.length - latency.count, p50Ms: latency.p50Ms, p99Ms: latency.p99Ms }
  })
}

/** One line per request (NDJSON), for digging into a run: times in ms since the load started. */
export function writeSamples(samples: readonly Sample[], start: number, file: string): void {
  const lines = samples.map((sample) =>
    JSON.stringify({
      id: sample.id,
      step: sample.step,
      kind: sample.kind,
      fresh: sample.fresh,
      scheduled: round(sample.scheduled - start, 2),
      sent: round(sample.sent - start, 2),
      ended: Number.isNaN(sample.ended) ? null : round(sample.ended - start, 2),
      status: sample.status,
      ok: sample.ok,
      cause: sample.cause,
      server: sample.server,
      reason: sample.reason,
    }),
  )
  writeFileSync(file, `${lines.join('\n')}\n`)
}

function causes(record: Record<string, number>): string {
  const entries = Object.entries(record)
  return entries.length === 0 ? '-' : entries.map(([cause, n]) => `${cause}:${n}`).join(' ')
}

export function printReport(report: Report, dir: string): void {
  const out: string[] = []
  const { totals } = report
  out.push('', `== zero-downtime (${report.form} form): ${report.rate} req/s for ${report.durationS.toFixed(0)} s ==`)
  out.push(
    `requests: ${totals.due} due, ${totals.sent} sent, ${totals.completed} completed (an HTTP answer), ${totals.ok} ok, ` +
      `${totals.failed} failed (${totals.failedUnexpected} unexpected, ${totals.failedExpected} expected: stub down)`,
  )
  out.push(`latency of ok requests (scheduled send -> end of body): p50 ${fmt(report.latency.p50Ms, 2)} ms, p95 ${fmt(report.latency.p95Ms, 2)} ms, p99 ${fmt(report.latency.p99Ms, 2)} ms, max ${fmt(report.latency.maxMs, 1)} ms`)
  out.push(`failures by cause: ${causes(report.failuresByCause)}`)
  out.push('')
  const rows: string[][] = [['step', 'sent', 'ok', 'unexpected', 'expected', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'causes']]
  for (const step of report.byStep) {
    rows.push([step.step, String(step.sent), String(step.ok), String(step.failedUnexpected), String(step.failedExpected), fmt(step.latency.p50Ms, 2), fmt(step.latency.p95Ms, 2), fmt(step.latency.p99Ms, 2), fmt(step.latency.maxMs, 1), causes(step.causes)])
  }
  out.push(table(rows))
  out.push('', `step 1, reloads: ${report.reloads.join(', ')}`)
  if (report.restarts.length > 0) {
    out.push('step 2, rolling restarts (ms after SIGTERM):')
    const restartRows = [['gateway', 'round', 'LB DOWN', 'exited', 'code', 'drained', 'new ready', 'LB UP']]
    for (const r of report.restarts) restartRows.push([r.gateway, String(r.round), fmt(r.lbDownMs, 0), fmt(r.exitMs, 0), String(r.exitCode), String(r.drained), fmt(r.readyMs, 0), fmt(r.lbUpMs, 0)])
    out.push(table(restartRows))
  }
  if (report.outage !== undefined) {
    const o = report.outage
    out.push(
      `step 3, stub SIGKILLed at ${o.killAtS.toFixed(2)} s, back at ${o.upAtS.toFixed(2)} s (${o.downMs} ms): ${o.failedExpected} expected failures ` +
        `(in flight at the kill or sent while down, failed by ${OUTAGE_GRACE_MS / 1000} s after the stub was back), ${o.failedOutsideWindow} unexpected in this step`,
    )
  }
  out.push(
    `load balancer: ${report.haproxy.retried} requests retried (${report.haproxy.redispatched} redispatched), statuses ${causes(report.haproxy.statuses)}, abnormal terminations ${causes(report.haproxy.terminations)}`,
  )
  for (const gw of report.gateways) out.push(`  ${gw.file.split('/').pop()}: ${gw.access} access lines, statuses ${causes(gw.statuses)}${gw.warnings.length > 0 ? `, ${gw.warnings.length} warning/error lines` : ''}`)
  out.push(`generator: send lag p99 ${fmt(report.generator.sendLagP99Ms, 2)} ms, max ${fmt(report.generator.sendLagMaxMs, 1)} ms; max in flight ${report.generator.maxInFlight}; ok answers/s ${fmt(report.generator.achievedRate, 1)}`)
  if (report.problems.length > 0) {
    out.push('', 'PROBLEMS:')
    for (const problem of report.problems) out.push(`  - ${problem}`)
  }
  const stalls = report.timeline.filter((event) => event.what.includes('unanswered for 5 s'))
  if (stalls.length > 0) {
    out.push('', 'STALLED REQUESTS (seen while they were stuck):')
    for (const stall of stalls) out.push(`  at ${stall.t.toFixed(1)} s [${stall.step}]: ${stall.what}`)
  }
  const unexpected = report.failedSamples.filter((sample) => sample.verdict === 'failed-unexpected')
  if (unexpected.length > 0) {
    out.push('', `UNEXPECTED FAILURES (first ${Math.min(10, unexpected.length)} of ${totals.failedUnexpected}):`)
    for (const sample of unexpected.slice(0, 10)) {
      out.push(`  ${sample.id} [${String(sample.step)}] ${String(sample.kind)} ${String(sample.connection)} sent ${String(sample.sentAtS)} s -> ${String(sample.cause)} ${sample.reason === undefined ? '' : `(${String(sample.reason)})`} via ${String(sample.server ?? '?')}: ${String(sample.detail ?? '').slice(0, 120)}`)
      if (sample.haproxy !== undefined) out.push(`      haproxy: ${String(sample.haproxy)}`)
      for (const line of (sample.gateway as string[] | undefined) ?? []) out.push(`      gateway: ${line.slice(0, 400)}`)
    }
  }
  out.push('', `run dir: ${dir}`)
  out.push(`verdict: ${report.verdict}${report.verdict === 'FAIL' ? ` (${totals.failedUnexpected} unexpected failures, ${report.problems.length} problems)` : ' (no request failed outside the stub outage)'}`)
  console.log(out.join('\n'))
}

export function writeReport(report: Report, file: string): void {
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`)
}
