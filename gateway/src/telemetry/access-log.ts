// The access log: one JSON line per exchange, in the same shape and to the same destination as
// pino's lines. Written by hand because it is the one log line on the hot path: every field is
// known, and all but three (path, user agent-free error text, request id) need no escaping, so
// this costs a fraction of pino's generic serializer.
import { pino, type Logger } from 'pino'
import type { LogRedaction } from './redaction.js'
import { rememberLast } from '../core/remember-last.js'

export interface AccessRecord {
  readonly reqId: string
  readonly route: string
  readonly upstream: string
  /** The endpoint of the last attempt; '' when none was made. */
  readonly endpoint: string
  readonly method: string
  /** The authority the request was for (an absolute-form target's, else Host); '' when none. */
  readonly host: string
  readonly path: string
  readonly status: number
  readonly durationMs: number
  /** -1 when no upstream attempt was made. */
  readonly upstreamMs: number
  readonly attempts: number
  /** Each attempt's outcome when there were several; empty otherwise. */
  readonly tries: string
  readonly bytesIn: number
  readonly bytesOut: number
  /** Empty when the upstream answered. */
  readonly reason: string
  /** The response cache's result; empty when the route has no cache or the method skips it. */
  readonly cache: string
  readonly error: string | undefined
  readonly remote: string
  readonly upgrade?: string
  /** The connection's TLS version ("TLSv1.3") and cipher suite; undefined over cleartext. */
  readonly tlsVersion?: string | undefined
  readonly tlsCipher?: string | undefined
  /** The server span's ids (hex), when tracing is on: `trace_id` and `span_id`, the names log collectors correlate on. */
  readonly traceId?: string | undefined
  readonly spanId?: string | undefined
}

interface LineStream {
  write(line: string): unknown
}

const INFO = 30
/**
 * Lines are handed to the log stream in batches of about this many characters... Each batch is one
 * write on libuv's thread pool, whose hand-off costs more than the bytes: 64 KiB batches took the
 * line's cost from about 7 to 3.5 µs against 16 KiB ones (sonic-boom to a file, Node 24; 128 KiB
 * did worse again).
 */
const BATCH_CHARS = 64 * 1024
/** ...or after this long, whichever comes first, so a quiet gateway's lines still show up promptly. */
const BATCH_MS = 100

/**
 * Milliseconds to three decimals, written from integers: printing a fractional double takes V8's
 * shortest-representation conversion, a few times the cost of two small integers.
 */
function millis(value: number): string {
  // Durations are never negative or unbounded; if one ever were, print it as before rather than wrongly.
  if (!(value >= 0 && value < 1e12)) return String(Math.round(value * 1e3) / 1e3)
  const micros = Math.round(value * 1e3)
  const whole = Math.floor(micros / 1e3)
  const fraction = micros - whole * 1e3
  if (fraction === 0) return `${whole}`
  return `${whole}.${fraction < 10 ? '00' : fraction < 100 ? '0' : ''}${fraction}`
}

/**
 * Batching here rather than in the stream: pino's sonic-boom measures its whole pending buffer on
 * every write, which made each access line cost several microseconds; a string append costs a
 * fraction of one. Access lines may therefore land up to BATCH_MS after other log lines.
 */
export class AccessLog {
  private readonly stream: LineStream
  private pending = ''
  private timer: NodeJS.Timeout | undefined
  /** The logger's own fields beside `service`, ready to splice into each line. */
  private readonly bound: string
  /** Date.now() as text: a busy gateway writes several lines per millisecond, and printing a 13-digit number is not free. */
  private readonly timeText = rememberLast((now: number) => String(now))
  /** Most lines name the same host and endpoint: their JSON is kept from the last line (a Host may hold a quote). */
  private readonly hostJson = rememberLast((host: string) => JSON.stringify(host))
  private readonly endpointJson = rememberLast((endpoint: string) => JSON.stringify(endpoint))

  constructor(
    private readonly logger: Logger,
    /** Error text may quote a URL or a header: scrubbed like every other line. */
    private readonly redaction?: LogRedaction,
  ) {
    this.stream = (logger as unknown as Record<symbol, LineStream>)[pino.symbols.streamSym]!
    // A child logger's fields (a worker's `worker`), as pino would write them on each line.
    this.bound = Object.entries(logger.bindings())
      .filter(([name]) => name !== 'service')
      .map(([name, value]) => `,${JSON.stringify(name)}:${JSON.stringify(value)}`)
      .join('')
  }

  /** Hands every pending line to the log stream. */
  readonly flush = (): void => {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.pending === '') return
    const batch = this.pending
    this.pending = ''
    this.stream.write(batch)
  }

  get enabled(): boolean {
    return this.logger.isLevelEnabled('info')
  }

  write(entry: AccessRecord): void {
    // Route and upstream names are schema-checked, reason and tries are ours, method is an HTTP token,
    // remote is an IP address, the request id is one requestIdFor() accepted or made (letters,
    // digits and `_.:@/+=-`): only the path, endpoint and error text can hold a quote.
    let line = `{"level":${INFO},"time":${this.timeText(Date.now())},"service":"waypost"${this.bound},"reqId":"${entry.reqId}","route":"${entry.route}","upstream":"${entry.upstream}","method":"${entry.method}","host":${this.hostJson(entry.host)},"path":${JSON.stringify(entry.path)},"status":${entry.status},"durationMs":${millis(entry.durationMs)}`
    // An origin the config validated or DNS produced, but a host name may still hold odd characters.
    if (entry.endpoint !== '') line += `,"endpoint":${this.endpointJson(entry.endpoint)}`
    if (entry.upstreamMs >= 0) line += `,"upstreamMs":${millis(entry.upstreamMs)}`
    line += `,"attempts":${entry.attempts},"bytesIn":${entry.bytesIn},"bytesOut":${entry.bytesOut}`
    if (entry.tries !== '') line += `,"tries":"${entry.tries}"`
    if (entry.reason !== '') line += `,"reason":"${entry.reason}"`
    if (entry.cache !== '') line += `,"cache":"${entry.cache}"`
    if (entry.error !== undefined) line += `,"error":${JSON.stringify(this.redaction?.scrubText(entry.error) ?? entry.error)}`
    if (entry.upgrade !== undefined) line += `,"upgrade":${JSON.stringify(entry.upgrade)}`
    // OpenSSL's names: letters, digits, `.`, `_` and `-`.
    if (entry.tlsVersion !== undefined) line += `,"tlsVersion":"${entry.tlsVersion}","tlsCipher":"${entry.tlsCipher ?? ''}"`
    // Ids the SDK made: lower-case hex, nothing to escape.
    if (entry.traceId !== undefined) line += `,"trace_id":"${entry.traceId}","span_id":"${entry.spanId}"`
    this.pending += `${line},"remote":"${entry.remote}","msg":"access"}\n`
    if (this.pending.length >= BATCH_CHARS) this.flush()
    else this.timer ??= setTimeout(this.flush, BATCH_MS).unref()
  }
}
