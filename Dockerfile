# syntax=docker/dockerfile:1
# Waypost as a container: `docker build -t waypost .` (docs/operations/sidecar.md).
#
# Three stages so the runtime image holds only what the gateway runs: the compiled JavaScript,
# the production dependencies and Node itself. No shell, no package manager, no compiler.

# 1. Compile: every dependency (TypeScript is a dev dependency), then `npm run build` (tsc).
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

# 2. Production dependencies only, installed from the same lock file. All of them are plain
#    JavaScript, so node_modules built here runs unchanged on the distroless image below.
FROM node:24-bookworm-slim AS production-dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# 3. Runtime: distroless Node 24 (Debian 12), which runs as uid 65532 ("nonroot") by default.
FROM gcr.io/distroless/nodejs24-debian12:nonroot
WORKDIR /app
# package.json: `waypost version` reads it, and its "type": "module" makes dist/ ES modules.
COPY --from=build /src/package.json ./package.json
COPY --from=production-dependencies /app/node_modules ./node_modules
# The bundle (gateway/scripts/build.mjs): the gateway and its dependencies in a few files, which
# takes 13-14 MiB off idle RSS. undici and ioredis are still required from node_modules.
COPY --from=build /src/dist/waypost ./dist/waypost
# The bundled example, so `docker run waypost` starts; Kubernetes mounts the policy ConfigMap over
# the whole directory (sidecar-manifests/), which the gateway watches for the `..data` swap.
COPY config/waypost.yaml /etc/waypost/waypost.yaml

# Numeric, so Kubernetes can check `runAsNonRoot: true` against the image without a passwd lookup.
USER 65532:65532
# Listen on every interface inside the pod (the defaults are loopback, right for a laptop, useless
# in a pod: the Service and the kubelet's probes come in on the pod IP). Environment beats the
# policy file's listen.address / admin.address; flags beat both. Ports 15080/15901, not the laptop's
# 8080/9901: beside an app in a pod they must not clash with it, and 8080 is the commonest app port
# (the same defaults as `waypost inject` and sidecar-manifests/). MALLOC_ARENA_MAX=1: one malloc
# arena for all of node's threads, about 10 MiB less RSS after load (core/node-flags.ts); a pod's own
# env overrides it, and it stays set when the manifests' `command` replaces the ENTRYPOINT.
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=1 \
    WAYPOST_CONFIG=/etc/waypost/waypost.yaml \
    WAYPOST_LISTEN=0.0.0.0:15080 \
    WAYPOST_ADMIN=0.0.0.0:15901
EXPOSE 15080 15901

# Exec form, node itself as PID 1: SIGTERM goes straight to the gateway, which installs its own
# SIGTERM/SIGINT/SIGHUP handlers and drains (a PID 1 without handlers would ignore SIGTERM; ours has
# them). No init (tini) is needed: the gateway starts no child processes, so there are no zombies
# to reap. The V8 flag is the `waypost` executable's shebang flag (gateway/src/core/node-flags.ts,
# which the sidecar manifests and `waypost inject` repeat): a smaller young generation, 20-40 MiB
# less RSS under load (docs/performance.md#memory). Nothing is written to disk, so a read-only root
# filesystem works without any writable mount.
ENTRYPOINT ["/nodejs/bin/node", "--max-semi-space-size=8", "/app/dist/waypost/main.js"]
CMD ["run"]
# No HEALTHCHECK: Kubernetes ignores it and probes the admin port's /live and /ready instead, and
# the image has no curl to run one with. Outside Kubernetes, probe http://HOST:15901/ready.
