#!/usr/bin/env bash
# One run of the overlapping-commits A/B in BENCHMARKS.md: a fresh database and server with
# OFFPEAK_COMMIT_PIPELINE=$1, wrk on GET /healthz then on authenticated POST /v1/orders (64
# accounts, load-tests/wrk/orders.lua), then the server's commit metrics. Traffic goes to
# 127.0.0.1 only; each wrk run stops after 10 s. Run from the workspace root after
# `cargo build --release --bin offpeak` (OFFPEAK_BIN=path runs another build; STORE=sqlite runs
# the embedded store in a fresh data directory instead):  for p in 1 2 1 2; do load-tests/wrk/pipeline-ab.sh $p; done
set -euo pipefail
pipeline="${1:?usage: pipeline-ab.sh PIPELINE (1 to 4)}"
secret=bench-secret-0123456789abcdef0123456789abcdef
address=127.0.0.1:18093
tokens="${WRK_TOKENS:-${TMPDIR:-/tmp}/wrk-tokens}"
server_bin="${OFFPEAK_BIN:-target/release/offpeak}"

store="${STORE:-postgres}"
if [ "$store" = sqlite ]; then
  data_dir=$(mktemp -d)
  store_env=(OFFPEAK_DATA_DIR="$data_dir")
else
  dropdb -h 127.0.0.1 -U postgres --if-exists offpeak_bench
  createdb -h 127.0.0.1 -U postgres offpeak_bench
  store_env=(DATABASE_URL=postgres://postgres@127.0.0.1:5432/offpeak_bench)
fi
echo "pipeline=$pipeline store=$store load: $(cut -d' ' -f1-3 /proc/loadavg)"
env -u DATABASE_URL "${store_env[@]}" OFFPEAK_JWT_SECRET=$secret \
  OFFPEAK_LISTEN=$address OFFPEAK_RATE_LIMIT_PER_S=1000000 OFFPEAK_RATE_LIMIT_BURST=1000000 \
  OFFPEAK_COMMIT_PIPELINE="$pipeline" "$server_bin" serve >"${TMPDIR:-/tmp}/offpeak-ab-$pipeline.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; [ -z "${data_dir:-}" ] || rm -rf "$data_dir"' EXIT
for _ in $(seq 1 60); do curl -sf "http://$address/readyz" >/dev/null && break; sleep 0.5; done
if [ ! -s "$tokens" ]; then
  for i in $(seq 0 63); do
    OFFPEAK_JWT_SECRET=$secret target/release/offpeak token --sub "wrk-$i" --role buyer --ttl 2h
  done >"$tokens"
fi
wrk -t2 -c256 -d10s --latency "http://$address/healthz" | grep -E "Requests/sec|99%|Non-2xx|Socket"
WRK_TOKENS="$tokens" wrk -t2 -c256 -d10s --latency -s load-tests/wrk/orders.lua "http://$address" |
  grep -E "Requests/sec|50%|99%|non-2xx|Socket"
curl -s "http://$address/metrics" | grep -E '^offpeak_journal_(commit_seconds|batch_commands)_(sum|count)'
echo "after load: $(cut -d' ' -f1-3 /proc/loadavg)"
