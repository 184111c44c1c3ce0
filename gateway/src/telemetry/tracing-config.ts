// Tracing's settings: the policy file's `tracing:` section and the standard OTEL_* environment
// variables (which win over the file, as WAYPOST_* ones do), resolved once at start. Nothing here
// loads OpenTelemetry: with tracing off the SDK is never imported (telemetry/tracing.ts is loaded
// on demand), and the exchange path checks one `undefined`.
import type { IncomingMessage } from 'node:http'
import { Type, type Static } from '@sinclair/typebox'
import { duration, toMs } from '../core/units.js'
import { withDefaults, type Defaulted } from '../core/schema-defaults.js'
import type { ExchangeTrace } from '../core/exchange.js'

export const TracingConfig = Type.Object(
  {
    enabled: Type.Optional(
      Type.Boolean({
        description:
          'Export traces. Unset: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. `false` keeps tracing off even then (`OTEL_SDK_DISABLED=true` switches it off whatever the file says).',
      }),
    ),
    endpoint: Type.Optional(
      Type.String({
        pattern: '^https?://[^\\s]+$',
        errorMessage: 'expected an http:// or https:// URL',
        description:
          'The OTLP/HTTP collector: a traces URL ("http://collector:4318/v1/traces"), or a base URL without a path, to which `/v1/traces` is added. The OTEL_EXPORTER_OTLP_* variables win. Default http://localhost:4318/v1/traces.',
      }),
    ),
    serviceName: Type.Optional(Type.String({ minLength: 1, default: 'waypost', description: 'The `service.name` of the spans; `OTEL_SERVICE_NAME` wins.' })),
    sampler: Type.Optional(
      Type.Object(
        {
          ratio: Type.Optional(
            Type.Number({ minimum: 0, maximum: 1, default: 1, description: 'Share of new traces sampled (a caller\'s sampled flag is always honoured: parent-based). 0.01 samples 1%.' }),
          ),
        },
        { additionalProperties: false, default: {}, description: 'Parent-based ratio sampling; `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` win.' },
      ),
    ),
    traceResponse: Type.Optional(
      Type.Boolean({ default: false, description: 'Send the client a `traceresponse` header (W3C Trace Context level 2) naming the gateway\'s server span, so a caller can find its trace.' }),
    ),
    flushTimeout: Type.Optional(duration({ default: '2s', description: 'Longest a shutdown waits for the last spans to be exported; an unreachable collector never delays a drain by more.' })),
    maxQueueSize: Type.Optional(
      Type.Integer({ minimum: 1, default: 2048, description: 'Spans held for export at most; beyond it new spans are dropped, never waited for (`OTEL_BSP_MAX_QUEUE_SIZE` wins).' }),
    ),
  },
  {
    additionalProperties: false,
    description: 'OpenTelemetry tracing: a server span per exchange and a client span per upstream attempt, exported by OTLP/HTTP. Read at start only. See docs/operations/tracing.md.',
  },
)
export type TracingConfig = Static<typeof TracingConfig>
type ResolvedTracingConfig = Defaulted<TracingConfig, 'serviceName' | 'sampler' | 'traceResponse' | 'flushTimeout' | 'maxQueueSize'> & {
  sampler: Defaulted<NonNullable<TracingConfig['sampler']>, 'ratio'>
}

/** How new traces and children of remote parents are sampled. */
export interface SamplerSettings {
  /** Follow the caller's sampled flag when there is a caller (parentbased_*). */
  readonly parentBased: boolean
  /** Share of new traces sampled: 1 is always_on, 0 always_off. */
  readonly ratio: number
}

export interface TracingSettings {
  /** The OTLP/HTTP traces URL. */
  readonly endpoint: string
  readonly serviceName: string
  readonly sampler: SamplerSettings
  readonly traceResponse: boolean
  readonly flushTimeoutMs: number
  readonly maxQueueSize: number
  /** How long a finished span may wait for its batch (OTEL_BSP_SCHEDULE_DELAY, default 5000). */
  readonly scheduleDelayMs: number
  /** How long one export may take, its retries included (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT, default 10000). */
  readonly exportTimeoutMs: number
}

/**
 * Tracing resolved: on with its settings, or off and why (`misconfigured` when it was asked for but
 * an endpoint is not a URL); `warnings` name environment values that were ignored.
 */
export type TracingResolution =
  | { readonly on: true; readonly settings: TracingSettings; readonly warnings: string[] }
  | { readonly on: false; readonly why: string; readonly misconfigured: boolean; readonly warnings: string[] }

const TRACES_PATH = 'v1/traces'
const DEFAULT_ENDPOINT = `http://localhost:4318/${TRACES_PATH}`
/** The SDK's default batch delay (OpenTelemetry SDK environment variables spec). */
const DEFAULT_SCHEDULE_DELAY_MS = 5000
const DEFAULT_EXPORT_TIMEOUT_MS = 10_000

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim()
  return trimmed === undefined || trimmed === '' ? undefined : trimmed
}

/** A URL that parses as http(s), else undefined. */
function httpUrl(text: string): URL | undefined {
  try {
    const url = new URL(text)
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : undefined
  } catch {
    return undefined
  }
}

/** A URL fit for a log line: any user name and password replaced (an endpoint may carry them). */
export function displayUrl(text: string): string {
  const url = httpUrl(text)
  if (url === undefined || (url.username === '' && url.password === '')) return text
  url.username = '***'
  url.password = ''
  return url.toString()
}

/** `service.name` out of OTEL_RESOURCE_ATTRIBUTES ("key=value,key=value", values percent-encoded). */
function serviceNameOfResourceAttributes(text: string | undefined): string | undefined {
  if (text === undefined) return undefined
  for (const pair of text.split(',')) {
    const equals = pair.indexOf('=')
    if (equals === -1 || pair.slice(0, equals).trim() !== 'service.name') continue
    try {
      return nonEmpty(decodeURIComponent(pair.slice(equals + 1)))
    } catch {
      return undefined
    }
  }
  return undefined
}

/** OTEL_TRACES_SAMPLER and _ARG (the SDK's spec'd values), else the file's ratio under a parent-based sampler. */
function samplerOf(env: NodeJS.ProcessEnv, fileRatio: number, warnings: string[]): SamplerSettings {
  const name = nonEmpty(env.OTEL_TRACES_SAMPLER)
  if (name === undefined) return { parentBased: true, ratio: fileRatio }
  const argText = nonEmpty(env.OTEL_TRACES_SAMPLER_ARG)
  const ratioArg = (): number => {
    const ratio = argText === undefined ? NaN : Number(argText)
    if (ratio >= 0 && ratio <= 1) return ratio
    warnings.push(`OTEL_TRACES_SAMPLER_ARG="${argText ?? ''}" is not a ratio between 0 and 1: using 1`)
    return 1
  }
  switch (name) {
    case 'always_on':
      return { parentBased: false, ratio: 1 }
    case 'always_off':
      return { parentBased: false, ratio: 0 }
    case 'traceidratio':
      return { parentBased: false, ratio: ratioArg() }
    case 'parentbased_always_on':
      return { parentBased: true, ratio: 1 }
    case 'parentbased_always_off':
      return { parentBased: true, ratio: 0 }
    case 'parentbased_traceidratio':
      return { parentBased: true, ratio: ratioArg() }
    default:
      warnings.push(`OTEL_TRACES_SAMPLER="${name}" is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio: using the file's (ratio ${fileRatio}, parent-based)`)
      return { parentBased: true, ratio: fileRatio }
  }
}

/**
 * Whether tracing is on, and with what: the environment first (OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER,
 * the OTLP endpoints, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_MAX_QUEUE_SIZE), then the file.
 */
export function resolveTracing(section: TracingConfig | undefined, env: NodeJS.ProcessEnv): TracingResolution {
  const warnings: string[] = []
  const config = withDefaults(TracingConfig, section ?? {}) as ResolvedTracingConfig
  if (nonEmpty(env.OTEL_SDK_DISABLED)?.toLowerCase() === 'true') return { on: false, why: 'OTEL_SDK_DISABLED=true', misconfigured: false, warnings }
  const exporter = nonEmpty(env.OTEL_TRACES_EXPORTER)
  if (exporter === 'none') return { on: false, why: 'OTEL_TRACES_EXPORTER=none', misconfigured: false, warnings }
  if (exporter !== undefined && exporter !== 'otlp') warnings.push(`OTEL_TRACES_EXPORTER="${exporter}": Waypost exports by OTLP only`)
  const tracesEndpoint = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  const baseEndpoint = nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT)
  const fromEnv = tracesEndpoint !== undefined || baseEndpoint !== undefined
  if (config.enabled === false) return { on: false, why: 'tracing.enabled is false', misconfigured: false, warnings }
  if (config.enabled !== true && !fromEnv) return { on: false, why: 'no OTEL_EXPORTER_OTLP_ENDPOINT and tracing.enabled is not true', misconfigured: false, warnings }
  // The spec's rules: the signal's own variable is the whole URL; the general one gets /v1/traces.
  let endpoint: string
  if (tracesEndpoint !== undefined) {
    if (httpUrl(tracesEndpoint) === undefined) return { on: false, why: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="${tracesEndpoint}" is not an http(s) URL`, misconfigured: true, warnings }
    endpoint = tracesEndpoint
  } else if (baseEndpoint !== undefined) {
    if (httpUrl(baseEndpoint) === undefined) return { on: false, why: `OTEL_EXPORTER_OTLP_ENDPOINT="${baseEndpoint}" is not an http(s) URL`, misconfigured: true, warnings }
    endpoint = `${baseEndpoint.replace(/\/+$/, '')}/${TRACES_PATH}`
  } else if (config.endpoint !== undefined) {
    const url = httpUrl(config.endpoint)
    if (url === undefined) return { on: false, why: `tracing.endpoint "${config.endpoint}" is not an http(s) URL`, misconfigured: true, warnings }
    endpoint = url.pathname === '/' && url.search === '' ? `${url.origin}/${TRACES_PATH}` : config.endpoint
  } else {
    endpoint = DEFAULT_ENDPOINT
  }
  const protocol = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) ?? nonEmpty(env.OTEL_EXPORTER_OTLP_PROTOCOL)
  if (protocol !== undefined && protocol !== 'http/json') warnings.push(`OTEL_EXPORTER_OTLP_PROTOCOL="${protocol}": Waypost exports OTLP/HTTP with JSON bodies (http/json), which every OTLP/HTTP receiver accepts`)
  const maxQueueSize = countOf(env, 'OTEL_BSP_MAX_QUEUE_SIZE', config.maxQueueSize, 1, warnings)
  const scheduleDelayMs = countOf(env, 'OTEL_BSP_SCHEDULE_DELAY', DEFAULT_SCHEDULE_DELAY_MS, 0, warnings)
  const timeoutName = nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_TIMEOUT) === undefined ? 'OTEL_EXPORTER_OTLP_TIMEOUT' : 'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT'
  const exportTimeoutMs = countOf(env, timeoutName, DEFAULT_EXPORT_TIMEOUT_MS, 1, warnings)
  return {
    on: true,
    warnings,
    settings: {
      endpoint,
      serviceName: nonEmpty(env.OTEL_SERVICE_NAME) ?? serviceNameOfResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES) ?? config.serviceName,
      sampler: samplerOf(env, config.sampler.ratio, warnings),
      traceResponse: config.traceResponse,
      flushTimeoutMs: toMs(config.flushTimeout),
      maxQueueSize,
      scheduleDelayMs,
      exportTimeoutMs,
    },
  }
}

/** An integer environment variable of at least `minimum`, else `fallback` (with a warning when it was set but unusable). */
function countOf(env: NodeJS.ProcessEnv, name: string, fallback: number, minimum: number, warnings: string[]): number {
  const text = nonEmpty(env[name])
  if (text === undefined) return fallback
  const value = Number(text)
  if (Number.isInteger(value) && value >= minimum) return value
  warnings.push(`${name}="${text}" is not an integer of at least ${minimum}: using ${fallback}`)
  return fallback
}

/** What the server knows of a request when its span starts. */
export interface ServerSpanStart {
  readonly scheme: 'http' | 'https'
  /** The authority the request is for ('' when none). */
  readonly authority: string
  /** The normalized path ('-' when the target could not be parsed). */
  readonly path: string
  /** The route's name; undefined when no route took the request. */
  readonly route: string | undefined
  readonly upstream: string | undefined
  /** The peer's address. */
  readonly peer: string
  readonly requestId: string
}

/** How an exchange ended, for its server span. */
export interface ServerOutcome {
  readonly status: number
  /** Whether the response was delivered whole. */
  readonly finished: boolean
  /** Why the gateway answered or the exchange failed; '' when the upstream answered. */
  readonly reason: string
  readonly cache: string
  readonly attempts: number
  readonly error: string | undefined
}

/** The server span of one exchange, as the server sees it. */
export interface ServerTrace extends ExchangeTrace {
  readonly traceId: string
  readonly spanId: string
  /** The `traceresponse` header's value when `tracing.traceResponse` is on, else undefined. */
  readonly traceResponse: string | undefined
  end(outcome: ServerOutcome): void
}

/** Tracing as the server uses it: a server span per exchange, and a bounded flush at shutdown. */
export interface Tracing {
  readonly settings: TracingSettings
  serverSpan(request: IncomingMessage, start: ServerSpanStart): ServerTrace
  /** Exports what is queued, for at most `flushTimeoutMs`; never rejects. */
  shutdown(): Promise<void>
}
