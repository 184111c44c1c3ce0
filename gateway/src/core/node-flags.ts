// How the gateway's node is started wherever it is deployed: the `waypost` shebang, the image's
// ENTRYPOINT and ENV, the sidecar manifests' command, what `waypost inject` writes, `npm start`, and
// the load tests' default. One place, so they cannot drift apart; tests hold the static files
// (Dockerfile, main.ts's shebang, sidecar-manifests/) to it. The figures: docs/performance.md#memory.

/**
 * --max-semi-space-size=8: a young generation of at most 2 x 8 MiB, where V8 would grow it to
 * 2 x 32 MiB on Node 24 under load, for RSS after load 35-40 MiB higher. Nearly everything a proxied
 * request allocates dies young, so at this size scavenges stay cheap. At 4 MiB the default chain
 * scavenged twice as often and took 5% more CPU per request (`npm run bench:ab`), for about
 * 5 MiB less RSS after load (docs/performance.md#v8-flags).
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8']

/**
 * MALLOC_ARENA_MAX=1: one glibc malloc arena for every thread. By default each of node's threads
 * (V8's GC and compiler workers, libuv's pool) gets an arena of its own, and glibc keeps what they
 * freed: about 10 MiB more RSS after load, for no CPU per request that `npm run bench:ab` could see
 * (docs/performance.md#malloc-arenas). Ignored where the C library is not glibc (musl, macOS).
 * A variable of the caller's own with the same name wins, except under the shebang.
 */
export const GATEWAY_ENVIRONMENT: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1' }

/** The caller's environment over the gateway's defaults: what a started gateway (or the floor) runs with. */
export function withGatewayEnvironment(environment: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...GATEWAY_ENVIRONMENT, ...environment }
}

/** node and the gateway's entry point inside the image (Dockerfile: distroless Node 24, /app). */
export const IMAGE_NODE = '/nodejs/bin/node'
/** The bundle `npm run build` writes (gateway/scripts/build.mjs), as everywhere the gateway runs. */
export const IMAGE_MAIN = '/app/dist/waypost/main.js'

/** The image's ENTRYPOINT, and the sidecar's `command` (which replaces it, so it repeats the flags). */
export const IMAGE_COMMAND: readonly string[] = [IMAGE_NODE, ...GATEWAY_NODE_FLAGS, IMAGE_MAIN]
