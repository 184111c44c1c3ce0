// Keeps a copy of a streaming body while it flows to the client: each chunk goes to the client's
// sink first (never delayed, backpressure untouched) and into memory while the total stays within
// the limit. Past the limit the copy is dropped and the body simply streams through.
import type { BodySink, ResponseHeaders, StreamingBody } from '../policy.js'

/** A sink for bodies nobody reads (a background revalidation): only the copy matters. */
const DISCARD: BodySink = {
  write: () => true,
  end: () => undefined,
  fail: () => undefined,
}

export class CapturingBody implements StreamingBody, BodySink {
  private chunks: Buffer[] | null = []
  private bytes = 0
  private sink: BodySink = DISCARD
  private settled = false

  /** `settle` runs once: with the whole body when it ended within `limit`, else with undefined. */
  constructor(
    private readonly source: StreamingBody,
    private readonly limit: number,
    private readonly settle: (body: Buffer | undefined) => void,
  ) {
    // However the body ends (even cancelled before anyone piped it), the waiters are released.
    source.onDone(() => this.finish(undefined))
  }

  /** Reads the body only to keep it (nobody else wants it). */
  drain(): void {
    this.source.pipe(this)
  }

  // ---- StreamingBody: what the layers above and the client see
  pipe(sink: BodySink): void {
    this.sink = sink
    this.source.pipe(this)
  }

  resume(): void {
    this.source.resume()
  }

  cancel(reason: Error): void {
    this.chunks = null
    this.source.cancel(reason)
  }

  onDone(listener: () => void): void {
    this.source.onDone(listener)
  }

  // ---- BodySink: what the upstream body writes into
  write(chunk: Buffer): boolean {
    const chunks = this.chunks
    if (chunks !== null) {
      this.bytes += chunk.length
      if (this.bytes <= this.limit) chunks.push(chunk)
      else {
        this.chunks = null
        // It will not be kept: release the waiters now rather than when this client has read it all.
        this.finish(undefined)
        // Nobody reads it and it will not be kept: stop downloading.
        if (this.sink === DISCARD) {
          this.source.cancel(new Error('too big to cache'))
          return false
        }
      }
    }
    return this.sink.write(chunk)
  }

  end(trailers: ResponseHeaders): void {
    this.sink.end(trailers)
    const chunks = this.chunks
    this.chunks = null
    this.finish(chunks === null ? undefined : Buffer.concat(chunks, this.bytes))
  }

  fail(error: Error): void {
    this.chunks = null
    this.sink.fail(error)
    this.finish(undefined)
  }

  private finish(body: Buffer | undefined): void {
    if (this.settled) return
    this.settled = true
    this.settle(body)
  }
}
