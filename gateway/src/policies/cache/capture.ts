// Keeps a copy of a streaming body while it flows to the client: each chunk goes to the client's
// sink first (never delayed, backpressure untouched) and into memory while the copy stays within
// maxObjectSize and all copies being made stay within their shared budget. Past either, the copy is
// dropped and the body simply streams through.
import type { BodySink, ResponseHeaders, StreamingBody } from '../../core/exchange.js'

/**
 * Bytes that a route's unfinished copies may hold together. Each copy is bounded by maxObjectSize,
 * but many concurrent misses could otherwise hold that many times over, outside maxSize.
 */
export class CopyBudget {
  private held = 0

  constructor(private readonly limit: number) {}

  take(bytes: number): boolean {
    if (this.held + bytes > this.limit) return false
    this.held += bytes
    return true
  }

  give(bytes: number): void {
    this.held -= bytes
  }
}

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

  /** `settle` runs once: with the whole body when it ended within `limit` and `budget`, else with undefined. */
  constructor(
    private readonly source: StreamingBody,
    private readonly limit: number,
    private readonly budget: CopyBudget,
    private readonly settle: (body: Buffer | undefined) => void,
  ) {
    // However the body ends (even cancelled before anyone piped it), the waiters are released.
    source.onDone(() => {
      this.dropCopy()
      this.finish(undefined)
    })
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
    this.dropCopy()
    this.source.cancel(reason)
  }

  onDone(listener: () => void): void {
    this.source.onDone(listener)
  }

  // ---- BodySink: what the upstream body writes into
  write(chunk: Buffer): boolean {
    const chunks = this.chunks
    if (chunks !== null) {
      if (this.bytes + chunk.length <= this.limit && this.budget.take(chunk.length)) {
        this.bytes += chunk.length
        chunks.push(chunk)
      } else {
        this.dropCopy()
        // It will not be kept: release the waiters now rather than when this client has read it all.
        this.finish(undefined)
        // Nobody reads it and it will not be kept: stop downloading.
        if (this.sink === DISCARD) {
          this.source.cancel(new Error('not kept: over maxObjectSize or the copy budget'))
          return false
        }
      }
    }
    return this.sink.write(chunk)
  }

  end(trailers: ResponseHeaders): void {
    this.sink.end(trailers)
    const chunks = this.chunks
    const body = chunks === null ? undefined : Buffer.concat(chunks, this.bytes)
    // The store counts it from here on (or it is gone).
    this.dropCopy()
    this.finish(body)
  }

  fail(error: Error): void {
    this.dropCopy()
    this.sink.fail(error)
    this.finish(undefined)
  }

  /** Lets go of the copy and gives its bytes back to the budget. */
  private dropCopy(): void {
    if (this.chunks === null) return
    this.chunks = null
    this.budget.give(this.bytes)
  }

  private finish(body: Buffer | undefined): void {
    if (this.settled) return
    this.settled = true
    this.settle(body)
  }
}
