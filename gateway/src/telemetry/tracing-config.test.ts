import t from 'tap'
import { displayUrl, resolveTracing, type TracingConfig, type TracingResolution, type TracingSettings } from './tracing-config.js'

function on(resolution: TracingResolution): TracingSettings {
  if (!resolution.on) throw new Error(`expected tracing on, got off: ${resolution.why}`)
  return resolution.settings
}

t.test('off unless an OTLP endpoint is in the environment or the file enables it', async (t) => {
  t.match(resolveTracing(undefined, {}), { on: false, misconfigured: false })
  t.match(resolveTracing({ serviceName: 'x' }, {}), { on: false }, 'a section alone does not switch it on')
  t.equal(on(resolveTracing(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).endpoint, 'http://collector:4318/v1/traces')
  t.equal(on(resolveTracing(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' })).endpoint, 'http://collector:4318/v1/traces', 'one slash')
  t.equal(on(resolveTracing(undefined, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://otel.example/custom' })).endpoint, 'https://otel.example/custom', 'the signal\'s own variable as it is')
  t.equal(
    on(resolveTracing(undefined, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://a:1/t', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:2' })).endpoint,
    'http://a:1/t',
    'the traces endpoint wins over the general one',
  )
  t.equal(on(resolveTracing({ enabled: true }, {})).endpoint, 'http://localhost:4318/v1/traces', 'the OTLP default')
  t.equal(on(resolveTracing({ enabled: true, endpoint: 'http://collector:4318' }, {})).endpoint, 'http://collector:4318/v1/traces', 'a base URL gets the traces path')
  t.equal(on(resolveTracing({ enabled: true, endpoint: 'http://collector:4318/otlp/v1/traces' }, {})).endpoint, 'http://collector:4318/otlp/v1/traces', 'a path is kept')
  t.equal(on(resolveTracing({ endpoint: 'http://file:4318' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318' })).endpoint, 'http://env:4318/v1/traces', 'the environment wins')
})

t.test('what switches it off whatever else says on', async (t) => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }
  t.match(resolveTracing({ enabled: false }, env), { on: false, why: 'tracing.enabled is false' })
  t.match(resolveTracing({ enabled: true }, { ...env, OTEL_SDK_DISABLED: 'TRUE' }), { on: false, why: 'OTEL_SDK_DISABLED=true' })
  t.match(resolveTracing({ enabled: true }, { ...env, OTEL_TRACES_EXPORTER: 'none' }), { on: false, why: 'OTEL_TRACES_EXPORTER=none' })
  t.match(resolveTracing(undefined, { ...env, OTEL_SDK_DISABLED: 'false' }), { on: true })
})

t.test('an endpoint that is not an http(s) URL: off, as a misconfiguration naming the variable', async (t) => {
  t.match(resolveTracing(undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }), { on: false, misconfigured: true, why: /OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318"/ })
  t.match(resolveTracing(undefined, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'grpc://x:4317' }), { on: false, misconfigured: true, why: /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/ })
})

t.test('sampler: parent-based with the file\'s ratio; OTEL_TRACES_SAMPLER and _ARG win', async (t) => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }
  const file: TracingConfig = { sampler: { ratio: 0.25 } }
  t.same(on(resolveTracing(undefined, env)).sampler, { parentBased: true, ratio: 1 }, 'the OTel default: parentbased_always_on')
  t.same(on(resolveTracing(file, env)).sampler, { parentBased: true, ratio: 0.25 })
  const cases: Array<[string, string | undefined, { parentBased: boolean; ratio: number }]> = [
    ['always_on', undefined, { parentBased: false, ratio: 1 }],
    ['always_off', undefined, { parentBased: false, ratio: 0 }],
    ['traceidratio', '0.1', { parentBased: false, ratio: 0.1 }],
    ['parentbased_always_on', undefined, { parentBased: true, ratio: 1 }],
    ['parentbased_always_off', undefined, { parentBased: true, ratio: 0 }],
    ['parentbased_traceidratio', '0.01', { parentBased: true, ratio: 0.01 }],
  ]
  for (const [sampler, arg, expected] of cases) {
    const resolution = resolveTracing(file, { ...env, OTEL_TRACES_SAMPLER: sampler, ...(arg === undefined ? {} : { OTEL_TRACES_SAMPLER_ARG: arg }) })
    t.same(on(resolution).sampler, expected, sampler)
    t.same(resolution.warnings, [])
  }
  const badArg = resolveTracing(file, { ...env, OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '5' })
  t.same(on(badArg).sampler, { parentBased: true, ratio: 1 })
  t.match(badArg.warnings, [/OTEL_TRACES_SAMPLER_ARG="5" is not a ratio/])
  const unknown = resolveTracing(file, { ...env, OTEL_TRACES_SAMPLER: 'jaeger_remote' })
  t.same(on(unknown).sampler, { parentBased: true, ratio: 0.25 }, 'an unknown sampler: the file\'s')
  t.match(unknown.warnings, [/OTEL_TRACES_SAMPLER="jaeger_remote"/])
})

t.test('service name: OTEL_SERVICE_NAME, then service.name in OTEL_RESOURCE_ATTRIBUTES, then the file, then waypost', async (t) => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }
  t.equal(on(resolveTracing(undefined, env)).serviceName, 'waypost')
  t.equal(on(resolveTracing({ serviceName: 'edge' }, env)).serviceName, 'edge')
  t.equal(on(resolveTracing({ serviceName: 'edge' }, { ...env, OTEL_RESOURCE_ATTRIBUTES: 'team=a,service.name=check%20out' })).serviceName, 'check out')
  t.equal(on(resolveTracing({ serviceName: 'edge' }, { ...env, OTEL_RESOURCE_ATTRIBUTES: 'service.name=x', OTEL_SERVICE_NAME: 'orders' })).serviceName, 'orders')
  t.equal(on(resolveTracing({ serviceName: 'edge' }, { ...env, OTEL_RESOURCE_ATTRIBUTES: 'service.name=%E0%A4%A' })).serviceName, 'edge', 'a malformed value is ignored')
})

t.test('batching and export limits: the file, then OTEL_BSP_* and OTEL_EXPORTER_OTLP_*TIMEOUT; bad values warned and ignored', async (t) => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }
  t.match(on(resolveTracing(undefined, env)), { maxQueueSize: 2048, scheduleDelayMs: 5000, exportTimeoutMs: 10_000, flushTimeoutMs: 2000, traceResponse: false })
  t.match(on(resolveTracing({ maxQueueSize: 100, flushTimeout: '500ms', traceResponse: true }, env)), { maxQueueSize: 100, flushTimeoutMs: 500, traceResponse: true })
  t.match(on(resolveTracing({ maxQueueSize: 100 }, { ...env, OTEL_BSP_MAX_QUEUE_SIZE: '50', OTEL_BSP_SCHEDULE_DELAY: '0', OTEL_EXPORTER_OTLP_TIMEOUT: '300' })), { maxQueueSize: 50, scheduleDelayMs: 0, exportTimeoutMs: 300 })
  t.match(on(resolveTracing(undefined, { ...env, OTEL_EXPORTER_OTLP_TIMEOUT: '300', OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '700' })), { exportTimeoutMs: 700 })
  const bad = resolveTracing({ maxQueueSize: 100 }, { ...env, OTEL_BSP_MAX_QUEUE_SIZE: 'lots', OTEL_EXPORTER_OTLP_TIMEOUT: '-1' })
  t.match(on(bad), { maxQueueSize: 100, exportTimeoutMs: 10_000 })
  t.match(bad.warnings, [/OTEL_BSP_MAX_QUEUE_SIZE="lots"/, /OTEL_EXPORTER_OTLP_TIMEOUT="-1"/])
})

t.test('what Waypost does not do is said, not silently ignored', async (t) => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }
  t.match(resolveTracing(undefined, { ...env, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }).warnings, [/http\/json/])
  t.same(resolveTracing(undefined, { ...env, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' }).warnings, [])
  t.match(resolveTracing(undefined, { ...env, OTEL_TRACES_EXPORTER: 'zipkin' }).warnings, [/OTLP only/])
})

t.test('an endpoint is logged without its credentials', async (t) => {
  t.equal(displayUrl('https://tenant:s3cret@otel.example:4318/v1/traces'), 'https://***@otel.example:4318/v1/traces')
  t.equal(displayUrl('http://collector:4318/v1/traces'), 'http://collector:4318/v1/traces')
  t.equal(displayUrl('not a url'), 'not a url')
})
