#!/bin/bash
# Intune API mode (against the intune-standin process) next to connector mode, on one scepd,
# in alternating rounds of closed-loop PKCSReq at concurrency 32; prints enrolments/s and the
# server's CPU per enrolment for each round, then the medians and the API/connector ratios.
# usage: benches/scripts/intune-api.sh [REQUESTS=2000] [ROUNDS=3] [TRANSPORT=tokio]
# Needs: cargo build --release -p scepd -p scep-bench   (SCEPD_TARGET=target/release by default)
set -euo pipefail
N=${1:-2000}; ROUNDS=${2:-3}; T=${3:-tokio}
R=${SCEPD_TARGET:-target/release}
B=${BENCH_DIR:-/tmp/scep-bench-intune}
rm -rf "$B"; mkdir -p "$B"
PID=; SPID=
cleanup() { for p in $PID $SPID; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$R/intune-standin" --prefix bench- --out "$B/standin.env" --secret "$B/entra-secret" >"$B/standin.out" 2>&1 &
SPID=$!
for _ in $(seq 100); do [[ -s $B/standin.env ]] && break; sleep 0.1; done
# shellcheck disable=SC1091
source "$B/standin.env"
"$R/scep-load" connector --dir "$B/connector" >/dev/null

cat >"$B/scepd.toml" <<TOML
[[profile]]
name = "connector"
challenge_password = "pw"
intune_enabled = true
intune_connector_cert_path = "$B/connector/connector-anchor.pem"
intune_per_device_rate_limit_24h = 0

[[profile]]
name = "api"
intune_enabled = true
intune_mode = "api"
intune_tenant_id = "$tenant"
intune_client_id = "$client_id"
intune_client_secret_path = "$B/entra-secret"
intune_authority_url = "$base_url/"
intune_graph_url = "$base_url/"
intune_revocation_poll_interval = "0"
TOML

RUST_LOG=${RUST_LOG:-warn} "$R/scepd" serve --config "$B/scepd.toml" --data-dir "$B/data" \
    --listen 127.0.0.1:0 --transport "$T" >"$B/out" 2>"$B/err" &
PID=$!
for _ in $(seq 100); do grep -q listening "$B/out" "$B/err" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -ho '127.0.0.1:[0-9]*' "$B/out" "$B/err" | head -1 | cut -d: -f2)

load() { # mode round extra-args...
    local mode=$1 round=$2; shift 2
    "$R/scep-load" run --url "http://127.0.0.1:$PORT/scep/$mode" --requests "$N" --concurrency 32 \
        --server-pid "$PID" --cache "$B/cache" --progress false --json "$B/$mode-$round.json" "$@" >/dev/null 2>"$B/$mode-$round.log"
    python3 - "$B/$mode-$round.json" "$mode" "$round" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
errors = sum(s["errors"].values())
print(f'{sys.argv[2]:9} round {sys.argv[3]}: {s["throughput"]:8.1f} enrolments/s, '
      f'{s["server"]["cpu_ms_per_ok"]:.3f} ms server CPU per enrolment, p99 {s["latency_ms"]["p99"]:.1f} ms, '
      f'ok {s["ok"]}, errors {errors}')
PY
}
for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then
        load connector "$r" --intune-connector "$B/connector"; load api "$r" --opaque-challenge-prefix bench-
    else
        load api "$r" --opaque-challenge-prefix bench-; load connector "$r" --intune-connector "$B/connector"
    fi
done
python3 - "$B" "$ROUNDS" <<'PY'
import json, statistics, sys
b, rounds = sys.argv[1], int(sys.argv[2])
runs = {m: [json.load(open(f"{b}/{m}-{r}.json")) for r in range(1, rounds + 1)] for m in ("connector", "api")}
med = lambda m, f: statistics.median(f(s) for s in runs[m])
rate = {m: med(m, lambda s: s["throughput"]) for m in runs}
cpu = {m: med(m, lambda s: s["server"]["cpu_ms_per_ok"]) for m in runs}
print(f'median: connector {rate["connector"]:.1f}/s {cpu["connector"]:.3f} ms CPU; '
      f'api {rate["api"]:.1f}/s {cpu["api"]:.3f} ms CPU; '
      f'throughput api/connector {rate["api"] / rate["connector"]:.2f}, '
      f'added server CPU per enrolment {cpu["api"] - cpu["connector"]:+.3f} ms')
PY
