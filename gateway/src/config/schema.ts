// The one schema source: TypeScript types (Static), validation (TypeBox Value) and the JSON Schema
// in config/waypost.schema.json (written by `npm run schema`) all come from these definitions.
// Each policy owns its section's schema (policies/index.ts assembles `policies:`); this file adds the rest.
import { Type, type Static } from '@sinclair/typebox'
import { Duration, duration, size } from '../core/units.js'
import { UpstreamConfig } from '../proxy/upstream/config.js'
import { RedisConfig } from '../store/redis.js'
import { PoliciesConfig } from '../policies/index.js'
import { DEFAULT_REDACTED_QUERY } from '../telemetry/redaction.js'

const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$', errorMessage: 'expected a name of letters, digits, ".", "_" or "-" (at most 63 characters)' })
/** What one client may hold: the guard against slow uploaders, slow readers and connection floods. */
export const ClientsConfig = Type.Object(
  {
    bodyIdleTimeout: Type.Optional(
      duration({ default: '30s', description: 'Longest a client may send no byte of its request body, or read nothing of a response that waits for it, before the gateway cuts it off (408).' }),
    ),
    bodyMinRate: Type.Optional(
      size({
        default: '512B',
        description:
          'Bytes per second a client must keep up, in both directions, once `bodyIdleTimeout` has passed: a transfer is cut off when it has taken longer than `bodyIdleTimeout` plus one second per `bodyMinRate` bytes moved. 0 switches the rate check off.',
      }),
    ),
    connectionsPerAddress: Type.Optional(
      Type.Integer({ minimum: 0, default: 0, description: 'Most connections open at once from one peer address (answered 429 and closed beyond it); 0 for no cap. Behind a load balancer every connection comes from it: leave 0 there.' }),
    ),
    exchangesPerAddress: Type.Optional(
      Type.Integer({
        minimum: 0,
        default: 0,
        description: 'Most exchanges in flight at once for one client address (behind `trustedProxies`, the forwarded one), so one client cannot hold every upstream socket (429 beyond it); 0 for no cap.',
      }),
    ),
  },
  { additionalProperties: false, default: {}, description: 'Limits on each client: body timeouts (both directions) and caps per address.' },
)

const Address = Type.String({ pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]*):\\d{1,5}$', errorMessage: 'expected HOST:PORT, e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"' })

export { PoliciesConfig }

const HeaderValueMatch = Type.Union(
  [
    Type.String({ description: 'Exact value.' }),
    Type.Object({ regex: Type.String() }, { additionalProperties: false }),
    Type.Object({ present: Type.Literal(true) }, { additionalProperties: false }),
  ],
  { errorMessage: 'expected an exact value, { regex: "..." } or { present: true }' },
)

/** The admin token: the value, a file holding it (a mounted Secret, read at each use) or an environment variable. */
export const AdminToken = Type.Union(
  [
    Type.String({ minLength: 16, description: 'The token itself (at least 16 characters).' }),
    Type.Object({ file: Type.String({ minLength: 1 }) }, { additionalProperties: false, description: 'A file holding the token (a mounted Secret), read at each use.' }),
    Type.Object({ env: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }) }, { additionalProperties: false, description: 'An environment variable holding the token.' }),
  ],
  {
    errorMessage: 'expected a token of at least 16 characters, { file: PATH } or { env: NAME }',
    description: 'Callers not on loopback must send `Authorization: Bearer TOKEN` to mutating endpoints (POST /reload, /cache/purge, ...); without a token they are refused.',
  },
)
export type AdminToken = Static<typeof AdminToken>

export const MatchConfig = Type.Object(
  {
    host: Type.Optional(Type.String({ description: 'Host header to match, exact ("api.example.com") or wildcard ("*.example.com").' })),
    path: Type.Optional(
      Type.Object(
        {
          exact: Type.Optional(Type.String({ pattern: '^/', errorMessage: 'expected a path starting with "/"' })),
          prefix: Type.Optional(Type.String({ pattern: '^/', errorMessage: 'expected a path starting with "/"' })),
          regex: Type.Optional(Type.String()),
        },
        { additionalProperties: false, description: 'Exactly one of `exact`, `prefix` (whole segments) or `regex`.' },
      ),
    ),
    methods: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Z]+$', errorMessage: 'expected an upper-case HTTP method' }), { minItems: 1 })),
    headers: Type.Optional(Type.Record(Type.String(), HeaderValueMatch)),
  },
  { additionalProperties: false },
)
export type MatchConfig = Static<typeof MatchConfig>

export const RouteConfig = Type.Object(
  {
    name: Name,
    match: Type.Optional(MatchConfig),
    upstream: Name,
    rewrite: Type.Optional(
      Type.Object(
        {
          host: Type.Optional(Type.String({ minLength: 1, description: 'Host header sent upstream instead of the client\'s.' })),
          pathPrefix: Type.Optional(Type.String({ pattern: '^/', description: 'Replaces the matched path prefix (routes with `match.path.prefix` only).' })),
        },
        { additionalProperties: false },
      ),
    ),
    policies: Type.Optional(PoliciesConfig),
  },
  { additionalProperties: false },
)
export type RouteConfig = Static<typeof RouteConfig>

export const GatewayConfig = Type.Object(
  {
    $schema: Type.Optional(Type.String()),
    listen: Type.Optional(
      Type.Object(
        {
          address: Type.Optional(Address),
          trustedProxies: Type.Optional(Type.Array(Type.String(), { description: 'CIDRs or addresses whose X-Forwarded-*/Forwarded headers are kept and appended to.' })),
          keepAliveTimeout: Type.Optional(Duration),
          headersTimeout: Type.Optional(Duration),
          underscoreHeaders: Type.Optional(
            Type.Union([Type.Literal('drop'), Type.Literal('forward')], {
              errorMessage: 'expected drop or forward',
              description: 'Request headers whose names hold an underscore: `drop` (default, as nginx does) or `forward`. Some stacks read X_Forwarded_For as X-Forwarded-For, so a client could slip a forged one past the gateway.',
            }),
          ),
          clients: Type.Optional(ClientsConfig),
        },
        { additionalProperties: false, description: 'The proxy listener. `address` default 127.0.0.1:8080 (env WAYPOST_LISTEN); `keepAliveTimeout` default 65s, longer than a load balancer\'s idle timeout.' },
      ),
    ),
    admin: Type.Optional(
      Type.Object(
        {
          address: Type.Optional(Address),
          token: Type.Optional(AdminToken),
          readyRequiresUpstream: Type.Optional(
            Type.Boolean({
              default: false,
              description:
                '`/ready` also requires every upstream a route uses to have a healthy endpoint (by its health check). Off by default: a sidecar that turns unready whenever its app is briefly unhealthy takes the pod out of its Service, removing capacity exactly when it is short, and every replica does it at once when the app\'s dependency fails.',
            }),
          ),
        },
        { additionalProperties: false, description: 'The admin listener (/live /ready /config /reload /metrics /stats /dashboard). Default 127.0.0.1:9901 (env WAYPOST_ADMIN).' },
      ),
    ),
    log: Type.Optional(
      Type.Object(
        {
          level: Type.Optional(Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)), { errorMessage: 'expected one of fatal, error, warn, info, debug, trace, silent' })),
          access: Type.Optional(Type.Boolean({ description: 'One access-log line per exchange. Default true.' })),
          format: Type.Optional(
            Type.Union([Type.Literal('json'), Type.Literal('pretty')], {
              errorMessage: 'expected json or pretty',
              description: '`json` (default): one JSON object per line, for log collectors; `pretty`: human-readable lines through pino-pretty, for a terminal. Read at start (env WAYPOST_LOG_FORMAT, flag --log-format).',
            }),
          ),
          resetLevelOnReload: Type.Optional(
            Type.Boolean({
              default: false,
              description: 'Whether an applied reload puts the level back to `level` after `POST /logging?level=...` changed it. Default false: a level set at run time stays until set again or the gateway restarts.',
            }),
          ),
          redact: Type.Optional(
            Type.Object(
              {
                headers: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$', errorMessage: 'expected an HTTP header name' }), { default: [], description: 'More headers whose values never appear in a log line (x-api-key, ...), beside Authorization, Proxy-Authorization, Cookie and Set-Cookie, which always are redacted.' })),
                query: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { default: [...DEFAULT_REDACTED_QUERY], description: 'Query parameters whose values never appear in a log line (case-insensitive). Replaces the default list.' })),
              },
              { additionalProperties: false, default: {}, description: 'What never reaches a log line; redacted values read `[redacted]`.' },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    audit: Type.Optional(
      Type.Object(
        {
          output: Type.String({ minLength: 1, description: '`stdout` (beside the log lines, each marked `"log":"audit"`), or a file the trail is appended to (relative to the working directory; created with its directory). A file that cannot be opened rejects the config.' }),
        },
        { additionalProperties: false, description: 'The audit trail: configs applied and rejected, admin actions with the caller\'s address, signals; one JSON line each, chained by sequence number and the previous line\'s sha256. Off without this section.' },
      ),
    ),
    drain: Type.Optional(
      Type.Object(
        { delay: Type.Optional(Duration), timeout: Type.Optional(Duration) },
        { additionalProperties: false, description: 'On SIGTERM: keep serving for `delay` (default 5s) while endpoints update, then stop accepting and wait up to `timeout` (default 30s) for in-flight exchanges.' },
      ),
    ),
    redis: Type.Optional(RedisConfig),
    upstreams: Type.Record(Name, UpstreamConfig, { description: 'Upstreams by name.' }),
    defaults: Type.Optional(Type.Object({ policies: Type.Optional(PoliciesConfig) }, { additionalProperties: false, description: 'Policies every route gets unless it overrides them.' })),
    routes: Type.Array(RouteConfig, { minItems: 1 }),
  },
  { additionalProperties: false, title: 'Waypost gateway policy file' },
)
export type GatewayConfig = Static<typeof GatewayConfig>

export { Duration }
