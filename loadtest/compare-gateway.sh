#!/usr/bin/env bash
# Runs the gateway under ../shared/bench/compare.sh (the team's side-by-side anchor benchmark):
#   GATEWAY_CMD="exec $PWD/loadtest/compare-gateway.sh" ../shared/bench/compare.sh
# compare.sh sets LISTEN_PORT and UPSTREAM_URL. The gateway runs its default policy chain
# (timeout, concurrency, access log to a file, metrics), as deployed (the bin's node flags).
# GATEWAY_CHAIN=bare drops the policies and the access log.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
config=$(mktemp /tmp/waypost-compare-XXXXXX.yaml)
if [[ ${GATEWAY_CHAIN:-default} == bare ]]; then
  policies=''
  access=false
else
  policies=$'defaults:\n  policies:\n    timeout: { request: 30s }\n    concurrency: { max: 1024, queue: 256 }\n'
  access=true
fi
cat >"$config" <<YAML
listen: { address: "127.0.0.1:${LISTEN_PORT}" }
admin: { address: "127.0.0.1:0" }
log: { level: info, access: ${access} }
drain: { delay: 0s, timeout: 1s }
upstreams:
  app: { url: "${UPSTREAM_URL}" }
${policies}routes:
  - name: all
    upstream: app
YAML
exec node --max-semi-space-size=4 "$here/dist/waypost/main.js" run --config "$config" >"${config%.yaml}.log"
