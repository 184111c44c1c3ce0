// A destination for a stream of JSON lines apart from the log (the audit trail; other event streams
// may share it): `stdout`, through the log's own stream so that lines never interleave mid-line with
// pino's, or a file, opened for appending (O_APPEND: whole lines, even with several writers) and
// written synchronously, so a line is in the file before whatever it records goes on. Events on
// these streams are rare (a reload, an admin call, a signal), never one per request.
import { closeSync, fstatSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

/** What the stdout destination writes through: the logger's stream (pino.symbols.streamSym). */
export interface LineStream {
  write(text: string): unknown
}

export interface JsonLinesSink {
  /** `stdout` or the file's absolute path. */
  readonly output: string
  /** The last line already in the file when it was opened (to continue a chain); undefined for stdout or an empty file. */
  readonly lastLine: string | undefined
  /** Writes one line; `line` holds no newline. */
  write(line: string): void
  close(): void
}

/** The tail read to find a file's last line: lines are short, but a long one is not cut in two. */
const TAIL_BYTES = 64 * 1024

/** Opens `output` (`stdout`, or a file path, relative to the working directory); throws with the cause when the file cannot be opened. */
export function openJsonLines(output: string, stdout: LineStream): JsonLinesSink {
  if (output === 'stdout') {
    return { output, lastLine: undefined, write: (line) => void stdout.write(`${line}\n`), close: () => undefined }
  }
  const path = resolve(output)
  mkdirSync(dirname(path), { recursive: true })
  // Read and append: the last line continues the chain; 0o640, the stream may hold addresses.
  const fd = openSync(path, 'a+', 0o640)
  let closed = false
  return {
    output: path,
    lastLine: lastLineOf(fd),
    write(line) {
      if (closed) return
      writeSync(fd, `${line}\n`)
    },
    close() {
      if (closed) return
      closed = true
      closeSync(fd)
    },
  }
}

function lastLineOf(fd: number): string | undefined {
  const size = fstatSync(fd).size
  if (size === 0) return undefined
  const length = Math.min(size, TAIL_BYTES)
  const buffer = Buffer.alloc(length)
  readSync(fd, buffer, 0, length, size - length)
  const lines = buffer.toString('utf8').split('\n').filter((line) => line !== '')
  return lines.at(-1)
}
