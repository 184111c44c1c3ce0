// Why the gateway answered itself or an attempt failed. One union, so a layer that reacts to another
// layer's outcome (the breaker counting per-try timeouts, retry reading them) compares against a
// name the compiler knows, and docs/reference/reasons.md can list them all.
export type Reason =
  // deadlines (timeout policy, undici)
  | 'timeout'
  | 'attempt-timeout'
  | 'connect-timeout'
  | 'upstream-headers-timeout'
  // the upstream failed
  | 'connect-refused'
  | 'connect-failed'
  | 'dns-failure'
  | 'upstream-reset'
  // the upstream cut its response off after the headers (the client sees a cut connection)
  | 'upstream-reset-body'
  | 'upstream-closed'
  | 'upstream-protocol-error'
  // TLS with the upstream failed: its certificate did not verify, or it refused ours
  | 'upstream-tls'
  | 'upstream-error'
  | 'no-endpoints'
  | 'upgrade-refused'
  // the request was at fault
  | 'no-route'
  | 'invalid-request'
  | 'invalid-request-target'
  | 'invalid-upstream-header'
  | 'request-body-length-mismatch'
  | 'headers-too-large'
  | 'malformed-request'
  | 'http-version-not-supported'
  | 'transfer-encoding-on-http-1.0'
  | 'unsupported-transfer-encoding'
  | 'invalid-host'
  | 'method-not-allowed'
  // a route would take the request over a connection with (another) verified client certificate (match.clientCert)
  | 'client-cert-required'
  // the client held more than its share (listen.clients)
  | 'client-upload-too-slow'
  | 'client-download-too-slow'
  | 'client-connection-limit'
  | 'client-exchange-limit'
  // authentication and authorization (auth, authz)
  | 'unauthenticated'
  | 'auth-unavailable'
  | 'forbidden'
  // a policy turned the request away
  | 'rate-limited'
  | 'concurrency-limit'
  | 'concurrency-queue-timeout'
  | 'adaptive-concurrency-limit'
  | 'breaker-open'
  | 'breaker-fallback'
  | 'fault-abort'
  | 'cache-only-if-cached'
  // PURGE on a route with `cache.purge: true`
  | 'cache-purged'
  | 'cache-not-found'
  | 'purge-refused'
