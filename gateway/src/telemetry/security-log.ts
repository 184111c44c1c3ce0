// The security log: a JSON-lines stream of its own, apart from the operational log, for the events
// a security reviewer reads (authentication failures, authorization denials, admin actions,
// certificate changes). Never filtered by `log.level`: an operator who quiets the gateway to `warn`
// still keeps this record. It goes to stdout (beside the other lines, marked `"log":"security"`) or
// to a file of its own (`securityLog.path`). What goes in is decided by the callers, and none of
// them pass a credential: tokens, keys, cookies and Authorization values never reach this stream.
import { pino, type Logger } from 'pino'

export type SecurityEventType = 'authentication-failure' | 'authorization-denied' | 'admin-action' | 'certificate'

export interface SecurityEvent {
  readonly event: SecurityEventType
  /** What happened, as a short machine-readable word: `expired`, `invalid-signature`, `no-rule-allowed`, `reload`... */
  readonly reason: string
  readonly requestId?: string
  readonly route?: string
  /** The identity's kind and subject, when one is known ('' when anonymous). */
  readonly kind?: string
  readonly subject?: string
  /** The authorization rule that decided (a deny rule's name, or `default`). */
  readonly rule?: string
  /** The client address (behind listen.trustedProxies, the forwarded one). */
  readonly remote?: string
  /** Which authentication method failed (jwt, apiKey, introspection), which admin endpoint was called... */
  readonly method?: string
  readonly path?: string
  /** Admin actions: the outcome (HTTP status of the admin answer). */
  readonly status?: number
  /** Certificate changes: what the listener now serves or trusts (subject, fingerprint, notAfter). */
  readonly certificate?: { readonly subject: string; readonly fingerprint: string; readonly notAfter: string }
}

/** Where events are recorded; what policies and the admin server see of the security log. */
export interface SecurityEvents {
  record(event: SecurityEvent): void
}

interface StreamHolder {
  write(line: string): unknown
}

/** `stdout`, or a file path; one destination at a time, swapped when a reload changes it. */
export class SecurityLog implements SecurityEvents {
  private target = 'stdout'
  private logger: Logger
  private file: ReturnType<typeof pino.destination> | undefined

  constructor(private readonly main: Logger) {
    this.logger = this.stdoutLogger()
  }

  /** The destination the plan in force names; reopened only when it changed. */
  configure(path: string | undefined): void {
    const target = path ?? 'stdout'
    if (target === this.target) return
    const previousFile = this.file
    if (target === 'stdout') {
      this.file = undefined
      this.logger = this.stdoutLogger()
    } else {
      // Appended to, created (with its directory) when missing; written asynchronously like the main log.
      this.file = pino.destination({ dest: target, append: true, mkdir: true, sync: false })
      this.file.on('error', (error: Error) => this.main.error({ err: error.message, path: target }, 'security log: cannot write'))
      this.logger = pino({ level: 'info', base: { service: 'waypost', ...this.main.bindings() }, timestamp: pino.stdTimeFunctions.isoTime }, this.file)
    }
    this.target = target
    if (previousFile !== undefined) closeDestination(previousFile)
  }

  record(event: SecurityEvent): void {
    this.logger.info(event, 'security')
  }

  /** Writes what is buffered, for exits. */
  flush(): void {
    try {
      if (this.file !== undefined) this.file.flushSync()
    } catch {
      // Not yet open, or already closed: nothing to lose.
    }
  }

  close(): void {
    this.flush()
    if (this.file !== undefined) closeDestination(this.file)
    this.file = undefined
  }

  /** The main log's own stream (stdout, or a test's sink), its level ignored, each line marked. */
  private stdoutLogger(): Logger {
    const stream = (this.main as unknown as Record<symbol, StreamHolder>)[pino.symbols.streamSym]!
    return pino({ level: 'info', base: { service: 'waypost', ...this.main.bindings(), log: 'security' }, timestamp: pino.stdTimeFunctions.isoTime }, stream)
  }
}

function closeDestination(destination: ReturnType<typeof pino.destination>): void {
  try {
    destination.flushSync()
  } catch {
    // An unopened destination throws on flush; it has nothing to flush.
  }
  destination.end()
}

/** For code that runs without a gateway around it (the layer harness, `waypost validate`). */
export const NO_SECURITY_LOG: SecurityEvents = { record: () => undefined }
