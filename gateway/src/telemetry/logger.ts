// Structured JSON logs with pino, written asynchronously so the request path never blocks on stdout.
import { pino, type Logger, type LevelWithSilent } from 'pino'

export type { Logger }
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export function createLogger(level: LevelWithSilent = 'info'): Logger {
  // Asynchronous writes; the access log (the only line per request) batches its own lines.
  const destination = pino.destination({ dest: 1, sync: false })
  return pino({ level, base: { service: 'waypost' } }, destination)
}

/** Writes what is buffered, synchronously, before the process exits. */
export function flushLogger(logger: Logger): void {
  const stream = (logger as unknown as Record<symbol, { flushSync?: () => void } | undefined>)[pino.symbols.streamSym]
  try {
    if (typeof stream?.flushSync === 'function') stream.flushSync()
    else logger.flush()
  } catch {
    // Flushing an already closed or not yet opened destination is harmless at exit.
  }
}
