// How the gateway's node is started wherever it is deployed: the `waypost` shebang, the image's
// ENTRYPOINT, the sidecar manifests' command, what `waypost inject` writes, `npm start`, and the
// load tests' default. One list, so they cannot drift apart; tests hold the static files
// (Dockerfile, main.ts's shebang, sidecar-manifests/) to it. The figures: docs/performance.md#memory.

/**
 * --max-semi-space-size=4: a young generation of 2 x 4 MiB, where V8 would grow it to 2 x 16 MiB
 * (2 x 32 MiB on Node 24) under load. Nearly everything a proxied request allocates dies young, so
 * scavenges stay cheap at this size, and RSS after load is 20-40 MiB lower.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4']

/** node and the gateway's entry point inside the image (Dockerfile: distroless Node 24, /app). */
export const IMAGE_NODE = '/nodejs/bin/node'
/** The bundle `npm run build` writes (gateway/scripts/build.mjs), as everywhere the gateway runs. */
export const IMAGE_MAIN = '/app/dist/waypost/main.js'

/** The image's ENTRYPOINT, and the sidecar's `command` (which replaces it, so it repeats the flags). */
export const IMAGE_COMMAND: readonly string[] = [IMAGE_NODE, ...GATEWAY_NODE_FLAGS, IMAGE_MAIN]
