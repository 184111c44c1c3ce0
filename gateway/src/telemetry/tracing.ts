// OpenTelemetry tracing: a server span per exchange, a client span per upstream attempt (a retry
// is a sibling attempt), policy decisions as events on the server span, exported by OTLP/HTTP
// through a bounded batch queue. Loaded only when tracing is on (server/gateway.ts imports it on
// demand), so a gateway without tracing never loads the SDK.
//
// No global is registered (tracer provider, context manager, propagator): contexts are passed
// explicitly from the server span to its attempts, so no AsyncLocalStorage runs on any promise,
// two gateways in one process (the tests) each keep their own, and nothing instruments undici.
// Propagation is written into the upstream's header list by the dispatch (proxy/dispatch.ts):
// exactly one `traceparent`, the attempt's, replacing the caller's (see opentelemetry-js-contrib#2796
// for what undici auto-instrumentation does instead).
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { Logger } from 'pino'
import { defaultTextMapGetter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Context, type Span, type SpanContext, type Tracer } from '@opentelemetry/api'
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from '@opentelemetry/core'
import { B3Propagator } from '@opentelemetry/propagator-b3'
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, RandomIdGenerator, TraceIdRatioBasedSampler, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { defaultResource, detectResources, envDetector, hostDetector, processDetector, resourceFromAttributes } from '@opentelemetry/resources'
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions'
import type { AttemptTrace, Exchange, TraceAttributes } from '../core/exchange.js'
import { packageVersion } from '../core/version.js'
import { displayUrl, type ServerOutcome, type ServerSpanStart, type ServerTrace, type Tracing, type TracingSettings } from './tracing-config.js'

/** The methods HTTP semantic conventions name; any other is `_OTHER` (its own name in `http.request.method_original`). */
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'QUERY'])

/** Trace-context fields the gateway writes itself on the upstream request when tracing is on. */
const TRACE_HEADERS = new Set(['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled'])

/** How the caller sent B3, so the upstream gets it back in kind (Zipkin and Istio apps read B3 only). */
const enum B3Form {
  None,
  Single,
  Multi,
}

/** At most one export-failure warning per this long (with a count of what failed meanwhile). */
const EXPORT_WARNING_INTERVAL_MS = 60_000

const w3c = new W3CTraceContextPropagator()
const b3 = new B3Propagator()
const ids = new RandomIdGenerator()

function flagsHex(context: SpanContext): string {
  return (context.traceFlags & 0xff).toString(16).padStart(2, '0')
}

/** `traceparent` (W3C Trace Context): version 00, trace id, span id, flags. */
function traceparentOf(context: SpanContext): string {
  return `00-${context.traceId}-${context.spanId}-${flagsHex(context)}`
}

/** The caller's trace context: W3C `traceparent` wins over B3 when both came. */
function extract(headers: IncomingHttpHeaders): { parent: Context; b3: B3Form } {
  const form = headers.b3 !== undefined ? B3Form.Single : headers['x-b3-traceid'] !== undefined ? B3Form.Multi : B3Form.None
  if (headers.traceparent === undefined && form === B3Form.None) return { parent: ROOT_CONTEXT, b3: form }
  let parent = ROOT_CONTEXT
  if (form !== B3Form.None) parent = b3.extract(parent, headers, defaultTextMapGetter)
  if (headers.traceparent !== undefined) parent = w3c.extract(parent, headers, defaultTextMapGetter)
  return { parent, b3: form }
}

/** Host and port of an authority ("api.example.com:8443", "[::1]:8080" gives "::1"); port undefined when absent. */
function hostAndPort(authority: string): { host: string; port: number | undefined } {
  const colon = authority.lastIndexOf(':')
  let host = authority
  let port: number | undefined
  if (colon !== -1 && !authority.endsWith(']')) {
    const number = Number(authority.slice(colon + 1))
    if (Number.isInteger(number) && number > 0) {
      host = authority.slice(0, colon)
      port = number
    }
  }
  return { host: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host, port }
}

/** Host and port of an endpoint address ("http://10.0.0.7:8080"). */
function endpointHostAndPort(endpoint: string): { host: string; port: number | undefined } {
  const scheme = endpoint.indexOf('://')
  const { host, port } = hostAndPort(scheme === -1 ? endpoint : endpoint.slice(scheme + 3))
  return { host, port: port ?? (endpoint.startsWith('https:') ? 443 : 80) }
}

/** The request path without its query (query strings can hold secrets; no span records them). */
function withoutQuery(path: string): string {
  const query = path.indexOf('?')
  return query === -1 ? path : path.slice(0, query)
}

/** Logs export failures: the first at once, then at most one line a minute with how many batches failed. */
class LoggingExporter implements SpanExporter {
  private failures = 0
  private lastWarning = -Infinity

  constructor(
    private readonly inner: SpanExporter,
    private readonly log: Logger,
    private readonly endpoint: string,
  ) {}

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.inner.export(spans, (result) => {
      if (result.code !== ExportResultCode.SUCCESS) this.failed(spans.length, result.error)
      else if (this.failures > 0) {
        this.log.info({ endpoint: this.endpoint, failedBatches: this.failures }, 'trace export recovered')
        this.failures = 0
      }
      done(result)
    })
  }

  private failed(spans: number, error: Error | undefined): void {
    this.failures++
    const now = performance.now()
    if (now - this.lastWarning < EXPORT_WARNING_INTERVAL_MS) return
    this.lastWarning = now
    this.log.warn({ endpoint: this.endpoint, spans, failedBatches: this.failures, err: error?.message }, 'trace export failed: spans dropped (requests are not affected)')
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown()
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve()
  }
}

class OtelTracing implements Tracing {
  readonly tracer: Tracer
  /** The endpoint as logged. */
  private readonly endpoint: string

  constructor(
    readonly settings: TracingSettings,
    private readonly provider: BasicTracerProvider,
    private readonly log: Logger,
  ) {
    this.tracer = provider.getTracer('waypost', packageVersion())
    this.endpoint = displayUrl(settings.endpoint)
  }

  serverSpan(request: IncomingMessage, start: ServerSpanStart): ServerTrace {
    const { parent, b3: form } = extract(request.headers)
    const method = request.method ?? 'GET'
    const known = KNOWN_METHODS.has(method)
    const name = start.route === undefined ? (known ? method : 'HTTP') : `${known ? method : 'HTTP'} ${start.route}`
    const span = this.tracer.startSpan(name, { kind: SpanKind.SERVER }, parent)
    // Attributes only for spans that are kept: at 1% sampling the other 99% cost an id and no more.
    if (span.isRecording()) {
      const { host, port } = hostAndPort(start.authority)
      const attributes: Record<string, string | number> = {
        [ATTR_HTTP_REQUEST_METHOD]: known ? method : '_OTHER',
        [ATTR_URL_SCHEME]: start.scheme,
        [ATTR_URL_PATH]: start.path,
        [ATTR_SERVER_ADDRESS]: host,
        [ATTR_NETWORK_PROTOCOL_VERSION]: request.httpVersion,
        [ATTR_CLIENT_ADDRESS]: start.peer,
        'waypost.request_id': start.requestId,
      }
      if (!known) attributes[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = method
      if (port !== undefined) attributes[ATTR_SERVER_PORT] = port
      if (start.route !== undefined) attributes[ATTR_HTTP_ROUTE] = start.route
      if (start.upstream !== undefined) attributes['waypost.upstream'] = start.upstream
      const userAgent = request.headers['user-agent']
      if (userAgent !== undefined) attributes[ATTR_USER_AGENT_ORIGINAL] = userAgent
      span.setAttributes(attributes)
    }
    return new ServerSpan(this.tracer, span, form, this.settings.traceResponse)
  }

  async shutdown(): Promise<void> {
    const timeoutMs = this.settings.flushTimeoutMs
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs)
      timer.unref()
    })
    const flushed = this.provider.shutdown().then(
      () => false,
      (error: unknown) => {
        this.log.warn({ err: (error as Error).message, endpoint: this.endpoint }, 'trace export at shutdown failed: the last spans are lost')
        return false
      },
    )
    const late = await Promise.race([flushed, timedOut])
    clearTimeout(timer)
    if (late) this.log.warn({ timeoutMs, endpoint: this.endpoint }, 'trace flush timed out at shutdown: the last spans are lost')
  }
}

class ServerSpan implements ServerTrace {
  readonly traceId: string
  readonly spanId: string
  readonly traceResponse: string | undefined
  /** The context the attempts are children of, made at the first (a cache hit or a local answer has none). */
  private context: Context | undefined
  /** The last header list seen and the same without trace-context fields (a retry resends the same list). */
  private source: readonly string[] | undefined
  private stripped: string[] = []

  constructor(
    private readonly tracer: Tracer,
    readonly span: Span,
    readonly b3: B3Form,
    traceResponse: boolean,
  ) {
    const context = span.spanContext()
    this.traceId = context.traceId
    this.spanId = context.spanId
    this.traceResponse = traceResponse ? traceparentOf(context) : undefined
  }

  event(name: string, attributes?: TraceAttributes): void {
    this.span.addEvent(name, attributes)
  }

  startAttempt(exchange: Exchange, upstream: string): AttemptTrace {
    const server = this.span
    // The child of a span that is not sampled is not sampled either, with every sampler Waypost
    // configures (parent-based, or by trace id, which is the parent's): it needs only an id to
    // propagate, not a trip through the SDK. So 99% of attempts at 1% sampling cost a span id.
    if (!server.isRecording()) {
      const context = { traceId: this.traceId, spanId: ids.generateSpanId(), traceFlags: TraceFlags.NONE, traceState: server.spanContext().traceState }
      return new UpstreamAttempt(this, trace.wrapSpanContext(context), '')
    }
    const attempt = exchange.attempt
    if (attempt > 0) {
      // The retry layer has written the previous attempt's outcome at the end of `tries` ("503,connect-refused").
      const tries = exchange.record.tries
      server.addEvent('waypost.retry', { 'waypost.retry.attempt': attempt, 'waypost.retry.reason': tries.slice(tries.lastIndexOf(',') + 1) })
    }
    const request = exchange.request
    const method = request.method
    const known = KNOWN_METHODS.has(method)
    const span = this.tracer.startSpan(known ? method : 'HTTP', { kind: SpanKind.CLIENT }, (this.context ??= trace.setSpan(ROOT_CONTEXT, server)))
    const attributes: Record<string, string | number> = { [ATTR_HTTP_REQUEST_METHOD]: known ? method : '_OTHER', 'waypost.upstream': upstream }
    if (!known) attributes[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = method
    if (attempt > 0) attributes[ATTR_HTTP_REQUEST_RESEND_COUNT] = attempt
    span.setAttributes(attributes)
    return new UpstreamAttempt(this, span, withoutQuery(request.path))
  }

  /** `headers` without the caller's trace-context fields; the same array for the same list. */
  strip(headers: readonly string[]): string[] {
    if (headers !== this.source) {
      this.source = headers
      const out: string[] = []
      for (let i = 0; i < headers.length; i += 2) {
        const name = headers[i]!
        if (!TRACE_HEADERS.has(name.toLowerCase())) out.push(name, headers[i + 1]!)
      }
      this.stripped = out
    }
    return this.stripped
  }

  end(outcome: ServerOutcome): void {
    const span = this.span
    if (span.isRecording()) {
      const status = outcome.status
      const attributes: Record<string, string | number> = { [ATTR_HTTP_RESPONSE_STATUS_CODE]: status, 'waypost.attempts': outcome.attempts }
      if (outcome.reason !== '') attributes['waypost.reason'] = outcome.reason
      if (outcome.cache !== '') attributes['waypost.cache.result'] = outcome.cache
      // A server span is in error for 5xx only (a 4xx is the client's); a response cut short says why too.
      if (status >= 500 || !outcome.finished) attributes[ATTR_ERROR_TYPE] = outcome.reason !== '' ? outcome.reason : outcome.finished ? String(status) : 'client-gone'
      span.setAttributes(attributes)
      if (status >= 500) span.setStatus(outcome.error === undefined ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.ERROR, message: outcome.error })
    }
    span.end()
  }
}

class UpstreamAttempt implements AttemptTrace {
  private ended = false

  constructor(
    private readonly server: ServerSpan,
    private readonly span: Span,
    private readonly path: string,
  ) {}

  headers(headers: readonly string[]): string[] {
    const out = this.server.strip(headers).slice()
    const context = this.span.spanContext()
    out.push('traceparent', traceparentOf(context))
    const state = context.traceState?.serialize()
    if (state !== undefined && state !== '') out.push('tracestate', state)
    const form = this.server.b3
    if (form === B3Form.None) return out
    const sampled = (context.traceFlags & 1) === 1 ? '1' : '0'
    if (form === B3Form.Single) out.push('b3', `${context.traceId}-${context.spanId}-${sampled}-${this.server.spanId}`)
    else out.push('x-b3-traceid', context.traceId, 'x-b3-spanid', context.spanId, 'x-b3-parentspanid', this.server.spanId, 'x-b3-sampled', sampled)
    return out
  }

  sentTo(endpoint: string): void {
    if (!this.span.isRecording()) return
    const { host, port } = endpointHostAndPort(endpoint)
    const attributes: Record<string, string | number> = { [ATTR_SERVER_ADDRESS]: host, [ATTR_URL_FULL]: endpoint + this.path }
    if (port !== undefined) attributes[ATTR_SERVER_PORT] = port
    this.span.setAttributes(attributes)
  }

  answered(status: number): void {
    const span = this.span
    if (!span.isRecording()) return
    span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
    // A client span is in error from 400 on (HTTP semantic conventions).
    if (status >= 400) {
      span.setAttribute(ATTR_ERROR_TYPE, String(status))
      span.setStatus({ code: SpanStatusCode.ERROR })
    }
  }

  failed(reason: string, error: unknown): void {
    const span = this.span
    if (span.isRecording()) {
      span.setAttribute(ATTR_ERROR_TYPE, reason)
      span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) })
    }
    this.end()
  }

  end(): void {
    if (this.ended) return
    this.ended = true
    this.span.end()
  }
}

/** Starts the SDK for `settings`: nothing is sent until the first span ends, and nothing ever blocks on the collector. */
export function startTracing(settings: TracingSettings, log: Logger): Tracing {
  const exporter = new LoggingExporter(new OTLPTraceExporter({ url: settings.endpoint, timeoutMillis: settings.exportTimeoutMs }), log, displayUrl(settings.endpoint))
  const root = new TraceIdRatioBasedSampler(settings.sampler.ratio)
  const resource = defaultResource()
    .merge(detectResources({ detectors: [hostDetector, processDetector, envDetector] }))
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: settings.serviceName, [ATTR_SERVICE_VERSION]: packageVersion() }))
  const provider = new BasicTracerProvider({
    resource,
    sampler: settings.sampler.parentBased ? new ParentBasedSampler({ root }) : root,
    spanProcessors: [new BatchSpanProcessor(exporter, { maxQueueSize: settings.maxQueueSize, maxExportBatchSize: Math.min(512, settings.maxQueueSize), scheduledDelayMillis: settings.scheduleDelayMs })],
  })
  return new OtelTracing(settings, provider, log)
}
