// Reading a request body into memory, up to a limit: retry keeps a copy to send it more than once,
// and the buffer policy reads it whole before any upstream socket is taken. A bigger body is handed
// back to its stream untouched (what was read is unshifted) and goes upstream streaming.
import type { IncomingMessage } from 'node:http'
import type { AbortListener, ExchangeSignal } from './exchange.js'

/**
 * Resolves with the whole body when it fits in `limit` bytes, or undefined when it does not (the
 * stream is then paused with nothing lost). Rejects when the client goes away or the body fails.
 */
export function readReplayableBody(incoming: IncomingMessage, limit: number, signal: ExchangeSignal): Promise<Buffer | undefined> {
  const declared = Number(incoming.headers['content-length'])
  if (declared > limit) return Promise.resolve(undefined)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const stop = (): void => {
      incoming.off('data', onData)
      incoming.off('end', onEnd)
      incoming.off('error', onError)
      signal.unsubscribe(listener)
    }
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      size += chunk.length
      if (size <= limit) return
      stop()
      incoming.pause()
      incoming.unshift(chunks.length === 1 ? chunk : Buffer.concat(chunks, size))
      resolve(undefined)
    }
    const onEnd = (): void => {
      stop()
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
    }
    const onError = (error: Error): void => {
      stop()
      reject(error)
    }
    const listener: AbortListener = {
      onAbort(reason) {
        stop()
        reject(reason)
      },
    }
    incoming.on('data', onData)
    incoming.on('end', onEnd)
    incoming.on('error', onError)
    signal.subscribe(listener)
  })
}
