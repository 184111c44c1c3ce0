// The audit trail: who changed what, as an append-only stream of JSON lines apart from the log
// (the policy file's `audit.output`: stdout or a file). Every config applied or rejected, every
// mutating admin call (with the caller's address, refused ones too), every signal, and the
// gateway's start and stop. Each event has a sequence number and the sha256 of the line before it,
// so a line removed, changed or inserted breaks the chain (verifyAuditChain); the event log of
// later phases builds on it. A file's chain continues across restarts from its last line.
import { createHash } from 'node:crypto'
import { resolve } from 'node:path'
import { openJsonLines, type JsonLinesSink, type LineStream } from './json-lines.js'

export type AuditEvent =
  | { readonly event: 'gateway.started'; readonly pid: number; readonly version: string; readonly node: string }
  | { readonly event: 'gateway.stopped'; readonly drained: boolean }
  | { readonly event: 'config.applied'; readonly version: number; readonly hash: string; readonly source: string; readonly summary: { readonly added: readonly string[]; readonly removed: readonly string[]; readonly changed: readonly string[] } }
  | { readonly event: 'config.rejected'; readonly source: string; readonly errors: readonly string[] }
  | {
      readonly event: 'admin'
      readonly method: string
      readonly path: string
      /** The query string, with secret parameters redacted; '' when none. */
      readonly query: string
      readonly remote: string
      /** How the caller was let in: loopback, the admin token, or refused. */
      readonly caller: 'loopback' | 'token' | 'refused'
      readonly status: number
    }
  | { readonly event: 'signal'; readonly signal: string; readonly action: 'reload' | 'drain' | 'exit' }

/** One line of the trail as written: the event's fields after these. */
export interface AuditRecord {
  readonly log: 'audit'
  readonly seq: number
  readonly time: string
  /** sha256 (hex) of the line before this one; null for the first line of a chain. */
  readonly prev: string | null
  readonly event: AuditEvent['event']
}

export function lineHash(line: string): string {
  return createHash('sha256').update(line).digest('hex')
}

export class AuditTrail {
  private sink: JsonLinesSink | undefined
  private seq = 0
  private prev: string | null = null

  /** `worker`: this process's index among several (docs/operations/workers.md), written on every line. */
  constructor(private readonly worker?: number) {}

  /** Where events go now (`stdout` or a file's path); undefined when the trail is off. */
  get output(): string | undefined {
    return this.sink?.output
  }

  /** The last sequence number written. */
  get sequence(): number {
    return this.seq
  }

  /**
   * Sends events to `output` from now on (undefined: nowhere); throws when the file cannot be opened,
   * leaving the current destination in place. A file that already holds a trail continues its chain.
   */
  open(output: string | undefined, stdout: LineStream): void {
    if (output === undefined) {
      this.close()
      return
    }
    const current = this.sink
    if (current !== undefined && current.output === (output === 'stdout' ? output : resolve(output))) return
    const sink = openJsonLines(output, stdout)
    this.close()
    this.sink = sink
    const last = sink.lastLine
    if (last !== undefined) {
      this.prev = lineHash(last)
      this.seq = sequenceOf(last) ?? this.seq
    }
  }

  record(event: AuditEvent): AuditRecord | undefined {
    const sink = this.sink
    if (sink === undefined) return undefined
    const record = { log: 'audit' as const, seq: this.seq + 1, time: new Date().toISOString(), prev: this.prev, ...(this.worker === undefined ? {} : { worker: this.worker }), ...event }
    const line = JSON.stringify(record)
    sink.write(line)
    this.seq = record.seq
    this.prev = lineHash(line)
    return record
  }

  close(): void {
    this.sink?.close()
    this.sink = undefined
  }
}

function sequenceOf(line: string): number | undefined {
  try {
    const seq = (JSON.parse(line) as { seq?: unknown }).seq
    return typeof seq === 'number' && Number.isInteger(seq) ? seq : undefined
  } catch {
    return undefined
  }
}

export type ChainCheck = { readonly ok: true; readonly events: number } | { readonly ok: false; readonly line: number; readonly problem: string }

/**
 * Checks a trail's lines (1-based `line` in the answer): each line's `prev` is the sha256 of the
 * line before it and its `seq` one more. The first line may link to anything (an earlier file).
 */
export function verifyAuditChain(lines: readonly string[]): ChainCheck {
  let previous: string | undefined
  let previousSeq: number | undefined
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!
    let record: { seq?: unknown; prev?: unknown }
    try {
      record = JSON.parse(line) as typeof record
    } catch {
      return { ok: false, line: i + 1, problem: 'not JSON' }
    }
    if (typeof record.seq !== 'number') return { ok: false, line: i + 1, problem: 'no sequence number' }
    if (previous !== undefined) {
      if (record.prev !== lineHash(previous)) return { ok: false, line: i + 1, problem: 'prev is not the hash of the line before' }
      if (record.seq !== previousSeq! + 1) return { ok: false, line: i + 1, problem: `seq ${record.seq} follows ${previousSeq}` }
    }
    previous = line
    previousSeq = record.seq
  }
  return { ok: true, events: lines.length }
}
