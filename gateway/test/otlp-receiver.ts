// An OTLP/HTTP trace receiver for the tests, on 127.0.0.1: it accepts what a collector's OTLP/HTTP
// receiver accepts on POST /v1/traces (JSON bodies, gzip or not), answers as one does, and keeps
// every span, flattened with its resource. `mode: 'silent'` accepts connections and requests but
// never answers: the collector that hangs.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { gunzipSync } from 'node:zlib'
import type { IExportTraceServiceResponse } from '@opentelemetry/otlp-transformer'

type AnyValue = { stringValue?: string; intValue?: number | string; doubleValue?: number; boolValue?: boolean }
interface KeyValue {
  key: string
  value: AnyValue
}

/** The OTLP/JSON ExportTraceServiceRequest, the parts the tests read. */
interface ExportTraceServiceRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: KeyValue[] }
    scopeSpans?: Array<{
      scope?: { name?: string; version?: string }
      spans?: Array<{
        traceId: string
        spanId: string
        parentSpanId?: string
        name: string
        kind: number
        startTimeUnixNano: string | number
        endTimeUnixNano: string | number
        attributes?: KeyValue[]
        events?: Array<{ name: string; attributes?: KeyValue[] }>
        status?: { code?: number; message?: string }
      }>
    }>
  }>
}

export type AttributeValue = string | number | boolean | undefined

/** OTLP span kinds (SpanKind in the proto, 1-based). */
export const SPAN_KIND = { internal: 1, server: 2, client: 3 } as const

export interface ReceivedSpan {
  readonly traceId: string
  readonly spanId: string
  /** '' for a root span. */
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly attributes: Record<string, AttributeValue>
  readonly events: Array<{ name: string; attributes: Record<string, AttributeValue> }>
  /** 0 unset, 1 ok, 2 error. */
  readonly statusCode: number
  readonly statusMessage: string
  readonly resource: Record<string, AttributeValue>
  readonly startNanos: bigint
  readonly endNanos: bigint
}

function valueOf(value: AnyValue): AttributeValue {
  if (value.stringValue !== undefined) return value.stringValue
  if (value.intValue !== undefined) return Number(value.intValue) // int64 may come as a string (OTLP/JSON)
  if (value.doubleValue !== undefined) return value.doubleValue
  return value.boolValue
}

function attributesOf(list: KeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {}
  for (const { key, value } of list ?? []) out[key] = valueOf(value)
  return out
}

export interface OtlpReceiver {
  readonly url: string
  /** Every span received so far, in arrival order. */
  readonly spans: ReceivedSpan[]
  /** Export requests received (answered or not). */
  readonly requests: number
  /** Resolves once `predicate` holds for the spans received, or rejects after `timeoutMs`. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>
  close(): Promise<void>
}

export async function startOtlpReceiver(options: { mode?: 'answer' | 'silent' } = {}): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const waiters: Array<() => void> = []
  const sockets = new Set<Socket>()
  let requests = 0

  const receive = (request: IncomingMessage, response: ServerResponse, body: Buffer): void => {
    if (request.method !== 'POST' || request.url !== '/v1/traces') {
      response.writeHead(404).end()
      return
    }
    if (!(request.headers['content-type'] ?? '').startsWith('application/json')) {
      response.writeHead(415, { 'content-type': 'text/plain' }).end('this receiver takes OTLP/JSON')
      return
    }
    let decoded: ExportTraceServiceRequest
    try {
      decoded = JSON.parse((request.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString('utf8')) as ExportTraceServiceRequest
    } catch (error) {
      response.writeHead(400, { 'content-type': 'text/plain' }).end(`not OTLP/JSON: ${(error as Error).message}`)
      return
    }
    for (const resourceSpans of decoded.resourceSpans ?? []) {
      const resource = attributesOf(resourceSpans.resource?.attributes)
      for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
        for (const span of scopeSpans.spans ?? []) {
          spans.push({
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId ?? '',
            name: span.name,
            kind: span.kind,
            attributes: attributesOf(span.attributes),
            events: (span.events ?? []).map((event) => ({ name: event.name, attributes: attributesOf(event.attributes) })),
            statusCode: span.status?.code ?? 0,
            statusMessage: span.status?.message ?? '',
            resource,
            startNanos: BigInt(span.startTimeUnixNano),
            endNanos: BigInt(span.endTimeUnixNano),
          })
        }
      }
    }
    const answer: IExportTraceServiceResponse = {}
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
    for (const wake of waiters.slice()) wake()
  }

  const server = createServer((request, response) => {
    requests++
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      if (options.mode === 'silent') return // read it all, answer never
      receive(request, response, Buffer.concat(chunks))
    })
  })
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    get requests() {
      return requests
    },
    waitFor(predicate, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        if (predicate(spans)) return resolve(spans)
        const check = (): void => {
          if (!predicate(spans)) return
          cleanup()
          resolve(spans)
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`timed out waiting for spans; have ${spans.length}: ${spans.map((span) => `${span.name}(${span.kind})`).join(', ')}`))
        }, timeoutMs)
        const cleanup = (): void => {
          clearTimeout(timer)
          waiters.splice(waiters.indexOf(check), 1)
        }
        waiters.push(check)
      })
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const socket of sockets) socket.destroy()
      await closed
    },
  }
}
