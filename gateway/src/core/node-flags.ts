// The V8 flags the gateway runs with wherever it is deployed: the `waypost` shebang, the image's
// ENTRYPOINT, the sidecar manifests' command, what `waypost inject` writes, `npm start`, and the
// load tests' default. One list, so they cannot drift apart; tests hold the static files to it.
// Why each flag, with the figures: docs/performance.md#memory.

/**
 * --max-semi-space-size=4: a 4 MiB young generation (V8 grows it to 16 MiB on 64-bit hosts, 32 MiB
 * on Node 24, when the heap is busy); under proxy load nearly everything a request allocates dies
 * young, so a smaller nursery means more scavenges but each is cheap, and RSS under load stays far
 * lower.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4']
