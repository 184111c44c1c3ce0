// The one schema source: TypeScript types (Static), validation (TypeBox Value) and the JSON Schema
// in config/waypost.schema.json (written by `npm run schema`) all come from these definitions.
// Each policy owns its section's schema (policies/index.ts assembles `policies:`); this file adds the rest.
import { Type, type Static } from '@sinclair/typebox'
import { Duration, duration, size } from '../core/units.js'
import { UpstreamConfig } from '../proxy/upstream/config.js'
import { RedisConfig } from '../store/redis.js'
import { PoliciesConfig } from '../policies/index.js'
import { TracingConfig } from '../telemetry/tracing-config.js'
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

/** TLS 1.3 suites first, then TLS 1.2's: ECDHE key exchange with AEAD ciphers only (no CBC, no RSA key exchange), Mozilla's "intermediate" set without DHE. */
export const DEFAULT_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')
export const DEFAULT_GROUPS = 'X25519:P-256:P-384'

const PemFile = (description: string) => Type.String({ minLength: 1, description })
const SniHost = Type.String({ pattern: '^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$', errorMessage: 'expected a host name ("api.example.com") or a wildcard ("*.example.com")' })

/** The proxy listener's TLS: its certificates, what it accepts of clients, and how it holds up under a handshake flood. */
export const ListenerTlsConfig = Type.Object(
  {
    cert: PemFile('PEM file of the certificate, optionally followed by its intermediates (a chain). A relative path is read from the policy file\'s folder.'),
    key: PemFile('PEM file of the certificate\'s private key.'),
    sni: Type.Optional(
      Type.Array(
        Type.Object(
          {
            hosts: Type.Array(SniHost, { minItems: 1, description: 'Server names this certificate answers: exact, or `*.` for one or more labels.' }),
            cert: PemFile('PEM file of the certificate (and chain).'),
            key: PemFile('PEM file of its private key.'),
          },
          { additionalProperties: false },
        ),
        { minItems: 1, description: 'More certificates chosen by the name the client asks for (SNI): exact names first, then wildcards; anything else gets `cert`.' },
      ),
    ),
    minVersion: Type.Optional(Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], { default: 'TLSv1.2', errorMessage: 'expected TLSv1.2 or TLSv1.3', description: 'Oldest TLS version accepted; TLS 1.0 and 1.1 never are.' })),
    ciphers: Type.Optional(Type.String({ minLength: 1, default: DEFAULT_CIPHERS, description: 'OpenSSL cipher list (TLS 1.3 suite names and TLS 1.2 ciphers, colon-separated).' })),
    groups: Type.Optional(Type.String({ minLength: 1, default: DEFAULT_GROUPS, description: 'Key exchange groups, colon-separated, most preferred first.' })),
    sessionTickets: Type.Optional(Type.Boolean({ default: true, description: 'Resume sessions with tickets (a resumed handshake skips the certificate work); their keys are random, kept in memory and replaced every `ticketKeyRotation`.' })),
    ticketKeyRotation: Type.Optional(duration({ default: '1h', description: 'How often the session ticket keys are replaced (older tickets then fall back to a full handshake).' })),
    clientAuth: Type.Optional(
      Type.Union([Type.Literal('none'), Type.Literal('optional'), Type.Literal('require')], {
        default: 'none',
        errorMessage: 'expected none, optional or require',
        description: '`require`: a client without a certificate that `clientCa` verifies fails the handshake (mTLS). `optional`: a client may send none, but one it sends must verify. `none`: none is asked for.',
      }),
    ),
    clientCa: Type.Optional(PemFile('PEM bundle of the CAs client certificates must chain to (needed by `clientAuth` optional and require).')),
    crl: Type.Optional(PemFile('PEM file of certificate revocation lists for `clientCa`: a revoked client certificate fails the handshake.')),
    handshakeTimeout: Type.Optional(duration({ default: '10s', description: 'Longest a TLS handshake may take; a client still handshaking then is cut off.' })),
    maxHandshakes: Type.Optional(
      Type.Integer({ minimum: 1, default: 1000, description: 'Most TLS handshakes in progress at once; a connection beyond it is closed at once, so a flood of slow handshakes cannot hold every socket or starve the event loop.' }),
    ),
  },
  { additionalProperties: false, description: 'TLS on the proxy listener (https): see docs/operations/tls.md.' },
)
export type ListenerTlsConfig = Static<typeof ListenerTlsConfig>

/** What the gateway does with X-Forwarded-Client-Cert, by Envoy's names for forward_client_cert_details. */
export const ForwardClientCert = Type.Union(
  [Type.Literal('sanitize'), Type.Literal('forwardOnly'), Type.Literal('appendForward'), Type.Literal('sanitizeSet'), Type.Literal('alwaysForwardOnly')],
  {
    default: 'sanitizeSet',
    errorMessage: 'expected sanitize, forwardOnly, appendForward, sanitizeSet or alwaysForwardOnly',
    description:
      'X-Forwarded-Client-Cert to the upstream, as Envoy\'s forward_client_cert_details: `sanitize` sends none; `sanitizeSet` (default) sends only the verified client certificate\'s; `appendForward` appends it to what a trusted proxy sent; `forwardOnly` passes on a trusted proxy\'s over mTLS; `alwaysForwardOnly` passes on a trusted proxy\'s, mTLS or not. A header from a peer not in `trustedProxies` is always dropped.',
  },
)
export type ForwardClientCert = Static<typeof ForwardClientCert>

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

const OneOrMore = (description: string) =>
  Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], { errorMessage: 'expected a value or a list of values', description })

/** What a route asks of the client certificate the TLS listener verified. */
export const ClientCertMatch = Type.Union(
  [
    Type.Literal(true, { description: 'Any verified client certificate.' }),
    Type.Object(
      {
        spiffeId: Type.Optional(OneOrMore('The SPIFFE ID (the URI SAN spiffe://…): exact, or ending in `/*` for any path below (spiffe://cluster.local/ns/payments/*).')),
        dns: Type.Optional(OneOrMore('A DNS SAN: exact, or `*.example.com` for one or more labels.')),
        uri: Type.Optional(OneOrMore('A URI SAN, exact.')),
        email: Type.Optional(OneOrMore('An email SAN, exact.')),
      },
      { additionalProperties: false, description: 'A verified client certificate that has, for each field given, one of the listed values.' },
    ),
  ],
  { errorMessage: 'expected true or { spiffeId, dns, uri, email }', description: 'The route takes only requests over a connection whose client certificate the listener verified (listen.tls.clientAuth), and that matches.' },
)
export type ClientCertMatch = Static<typeof ClientCertMatch>

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
    clientCert: Type.Optional(ClientCertMatch),
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
    workers: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 64 }), Type.Literal('auto')], {
        errorMessage: 'expected a whole number from 1 to 64, or "auto" (one per CPU the process may use)',
        description:
          'Gateway processes serving the one listen port (default 1: a single process, no supervisor). More than 1: `waypost run` becomes a supervisor that starts that many workers and serves the admin port itself (docs/operations/workers.md); `auto` is one per CPU the process may use. Local rate and concurrency limits are divided among the workers. Read at start (env WAYPOST_WORKERS, flag --workers).',
      }),
    ),
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
          tls: Type.Optional(ListenerTlsConfig),
          plainAddress: Type.Optional(
            Type.String({
              pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]*):\\d{1,5}$',
              errorMessage: 'expected HOST:PORT, e.g. "127.0.0.1:8081"',
              description: 'A second listener without TLS, serving the same routes (for probes or a mesh that brings its own mTLS); only with `tls`. Default none.',
            }),
          ),
          forwardClientCert: Type.Optional(ForwardClientCert),
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
    securityLog: Type.Optional(
      Type.Object(
        {
          path: Type.Optional(
            Type.String({
              minLength: 1,
              default: 'stdout',
              description: '`stdout` (beside the other log lines, each marked `"log":"security"`) or a file the JSON lines are appended to (a relative path is read from the policy file\'s folder; created with its directory). Changes on reload.',
            }),
          ),
        },
        {
          additionalProperties: false,
          description: 'The security log: one JSON line per authentication failure, authorization denial, admin action and certificate change (time, request id, route, subject, reason, rule, source address). Never filtered by `log.level`; never holds a credential.',
        },
      ),
    ),
    audit: Type.Optional(
      Type.Object(
        {
          output: Type.String({ minLength: 1, description: '`stdout` (beside the log lines, each marked `"log":"audit"`), or a file the trail is appended to (a relative path is read from the policy file\'s folder; created with its directory). A file that cannot be opened rejects the config.' }),
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
    tracing: Type.Optional(TracingConfig),
    upstreams: Type.Record(Name, UpstreamConfig, { description: 'Upstreams by name.' }),
    defaults: Type.Optional(Type.Object({ policies: Type.Optional(PoliciesConfig) }, { additionalProperties: false, description: 'Policies every route gets unless it overrides them.' })),
    routes: Type.Array(RouteConfig, { minItems: 1 }),
  },
  { additionalProperties: false, title: 'Waypost gateway policy file' },
)
export type GatewayConfig = Static<typeof GatewayConfig>

export { Duration }
