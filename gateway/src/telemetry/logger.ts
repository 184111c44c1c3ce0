// Structured JSON logs with pino, written asynchronously so the request path never blocks on stdout.
import { pino, type Logger, type LevelWithSilent } from 'pino'

export type { Logger }
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export function createLogger(level: LevelWithSilent = 'info'): Logger {
  const destination = pino.destination({ dest: 1, sync: false, minLength: 4096 })
  const logger = pino({ level, base: { service: 'waypost' }, timestamp: pino.stdTimeFunctions.isoTime }, destination)
  return logger
}

/** Writes what is buffered before the process exits. */
export function flushLogger(logger: Logger): void {
  try {
    logger.flush()
  } catch {
    // Flushing an already closed destination is harmless at exit.
  }
}
