// Structured JSON logs with pino, written asynchronously so the request path never blocks on stdout.
// `pretty` sends the same lines through pino-pretty for a person at a terminal.
import { pino, type Logger, type LevelWithSilent, type LoggerOptions } from 'pino'
import type { LogRedaction } from './redaction.js'

export type { Logger }
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export const LOG_FORMATS = ['json', 'pretty'] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

const OPTIONS = { base: { service: 'waypost' } }

/** pino's options: the level, and the redaction hook on every line (see redaction.ts). */
export function loggerOptions(level: LevelWithSilent, redaction: LogRedaction | undefined): LoggerOptions {
  return { ...OPTIONS, level, ...(redaction === undefined ? {} : { hooks: redaction.pinoHooks() as LoggerOptions['hooks'] }) }
}

export async function createLogger(level: LevelWithSilent = 'info', format: LogFormat = 'json', redaction?: LogRedaction): Promise<Logger> {
  if (format === 'pretty') return pino(loggerOptions(level, redaction), await prettyStream())
  // Asynchronous writes; the access log (the only line per request) batches its own lines.
  const destination = pino.destination({ dest: 1, sync: false })
  return pino(loggerOptions(level, redaction), destination)
}

/** pino-pretty as a stream in this thread: it reads the JSON lines (the access log's batches too) and prints them for people. */
async function prettyStream(): Promise<NodeJS.WritableStream> {
  let pretty: (options: Record<string, unknown>) => NodeJS.WritableStream
  try {
    // A development dependency: loaded only when asked for, so an image without it still runs JSON.
    pretty = ((await import('pino-pretty')) as unknown as { default: typeof pretty }).default
  } catch {
    throw new Error('log.format: pretty needs the pino-pretty package (npm install pino-pretty), or use json')
  }
  return pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service', singleLine: true, sync: true })
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
