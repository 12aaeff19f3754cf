#!/bin/bash
# Issue 20's figures: enrolments/s and server CPU per enrolment for every connection pattern,
# plain HTTP and HTTPS, each as a ratio to the crypto floor (`scep-load floor`: the raw aws-lc
# operations one RSA-2048 enrolment cannot avoid, on one thread) measured in the same run,
# right before and right after each load: this machine's speed drifts by 10-15% within
# minutes, so each load is divided by the mean of the two floors around it. Two scepd processes
# (static challenge, local CA, each its own data dir): one on plain HTTP, one on TLS 1.3 with a P-256 server key; both start once and the
# patterns load them in turn, in rounds.
# usage: benches/scripts/floor-ratio.sh [REQUESTS=3000] [ROUNDS=2] [TRANSPORT=tokio]
# Needs: cargo build --release -p scepd -p scep-bench; openssl (server certificate).
set -euo pipefail
N=${1:-3000}; ROUNDS=${2:-2}; T=${3:-tokio}
R=${SCEPD_TARGET:-target/release}
B=${BENCH_DIR:-/tmp/scep-bench-floor}
rm -rf "$B"; mkdir -p "$B"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The HTTPS server's certificate: a P-256 CA and a server certificate for 127.0.0.1.
(
    cd "$B"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench TLS CA" \
        -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out server.pem -extfile server.ext 2>/dev/null
    chmod 600 server.key ca.key
)

PROFILE='[[profile]]
name = "corp"
challenge_password = "pw"
'
start() { # name [toml]: starts scepd with profile corp, sets PORT_<name> and PID_<name>
    local name=$1 toml=${2:-}
    printf '%s\n%s' "$toml" "$PROFILE" >"$B/$name.toml"
    local args=(serve --config "$B/$name.toml" --data-dir "$B/data-$name" --listen 127.0.0.1:0 --transport "$T")
    RUST_LOG=${RUST_LOG:-warn} "$R/scepd" "${args[@]}" >"$B/out-$name" 2>"$B/err-$name" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do grep -q listening "$B/out-$name" "$B/err-$name" 2>/dev/null && break; sleep 0.1; done
    local port
    port=$(grep -ho '127.0.0.1:[0-9]*' "$B/out-$name" "$B/err-$name" | head -1 | cut -d: -f2)
    [[ -n $port ]] || { cat "$B/err-$name" >&2; exit 1; }
    printf -v "PORT_$name" '%s' "$port"
    printf -v "PID_$name" '%s' "$pid"
}

start plain
start tls "[server.tls]
cert = \"$B/server.pem\"
key = \"$B/server.key\"
"

floor() { # index: the floor measured before load <index> (and after load <index> - 1)
    "$R/scep-load" floor --seconds "${FLOOR_SECONDS:-2}" >"$B/floor-$1.json" 2>/dev/null
}

# pattern: label server operation connections resumption [pace]
# With a pace label, the load is open-loop at the enrolment rate that pattern reached in the same
# round (`--rate`): what the kept-alive path costs at the lower throughput a connection per
# device reaches here, where the workers idle and wake more often.
PATTERNS=(
    "http-pkcsreq-keepalive plain pkcsreq keep-alive on"
    "http-device-keepalive plain device keep-alive on"
    "http-device-perdevice plain device per-device on"
    "https-pkcsreq-keepalive tls pkcsreq keep-alive on"
    "https-device-keepalive tls device keep-alive on"
    "https-device-perdevice-resumed tls device per-device on"
    "https-device-keepalive-paced tls device keep-alive on https-device-perdevice-resumed"
    "https-device-perdevice-full tls device per-device off"
    "https-device-perrequest-resumed tls device per-request on"
)

load() { # label server operation connections resumption [pace] round
    local label=$1 server=$2 op=$3 conn=$4 resume=$5 pace="" round
    if [[ $# == 7 ]]; then pace=$6; round=$7; else round=$6; fi
    local port_var="PORT_$server" pid_var="PID_$server" scheme=http extra=()
    if [[ $server == tls ]]; then scheme=https; extra=(--cacert "$B/ca.pem" --tls-resumption "$resume"); fi
    if [[ -n $pace ]]; then
        extra+=(--rate "$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['throughput']))" "$B/$pace-$round.json")")
    fi
    "$R/scep-load" run --url "$scheme://127.0.0.1:${!port_var}/scep/corp" --challenge pw --requests "$N" --concurrency 32 \
        --operation "$op" --connections "$conn" "${extra[@]}" --server-pid "${!pid_var}" --cache "$B/cache-$server" \
        --progress false --json "$B/$label-$round.json" >/dev/null 2>"$B/$label-$round.log" \
        || { echo "$label round $round failed:" >&2; cat "$B/$label-$round.log" >&2; exit 1; }
}

# Prepare each server's messages once (before any clock), then measure.
for s in plain tls; do
    port_var="PORT_$s"; scheme=http; extra=()
    if [[ $s == tls ]]; then scheme=https; extra=(--cacert "$B/ca.pem"); fi
    "$R/scep-load" prepare --url "$scheme://127.0.0.1:${!port_var}/scep/corp" --challenge pw --requests "$N" \
        "${extra[@]}" --cache "$B/cache-$s" --progress false >/dev/null 2>&1
done

# Floors and loads alternate: floor 0, load 1, floor 1, load 2, ... floor n.
i=0
floor "$i"
for round in $(seq "$ROUNDS"); do
    for p in "${PATTERNS[@]}"; do
        # shellcheck disable=SC2086
        load $p "$round"
        i=$((i + 1))
        echo "${p%% *} $round" >"$B/load-$i"
        floor "$i"
    done
done

python3 - "$B" "$ROUNDS" "$i" "${PATTERNS[@]}" <<'PY'
import json, statistics, sys
b, rounds, loads, patterns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
floor_json = [json.load(open(f"{b}/floor-{i}.json")) for i in range(loads + 1)]
floors = [f["enrolment_us"] / 1000 for f in floor_json]
# The floor of each (label, round): the mean of the floors right before and right after it.
around = {}
for i in range(1, loads + 1):
    label, rnd = open(f"{b}/load-{i}").read().split()
    around[(label, int(rnd))] = (floors[i - 1] + floors[i]) / 2
mean = lambda key: statistics.mean(f[key] for f in floor_json)
print(f"\ncrypto floor: {min(floors):.3f}-{max(floors):.3f} ms per enrolment over {len(floors)} measurements "
      f"(median {statistics.median(floors):.3f}; mean sign {mean('rsa_sign_us'):.0f} µs x2, "
      f"decrypt {mean('rsa_decrypt_us'):.0f} µs, verify {mean('rsa_verify_us'):.1f} µs x2, "
      f"encrypt {mean('rsa_encrypt_us'):.1f} µs, symmetric {mean('symmetric_us'):.1f} µs)\n")
print("| pattern | enrolments/s | connections | resumed | server CPU per enrolment | floor around it | ratio to the floor |")
print("|---|---|---|---|---|---|---|")
for p in patterns:
    label = p.split()[0]
    runs = [json.load(open(f"{b}/{label}-{r}.json")) for r in range(1, rounds + 1)]
    floor_of = [around[(label, r)] for r in range(1, rounds + 1)]
    for s in runs:
        errors = sum(s["errors"].values())
        if errors:
            sys.exit(f"{label}: {errors} errors: {s['errors']}")
    tput = [s["throughput"] for s in runs]
    cpu = [s["server"]["cpu_ms_per_ok"] for s in runs]
    tls = runs[0].get("tls") or {}
    resumed = f'{tls.get("resumed", 0)}' if tls else "-"
    rng = lambda xs, f: f"{f(min(xs))}-{f(max(xs))}" if len(xs) > 1 else f(xs[0])
    ratios = sorted(c / f for c, f in zip(cpu, floor_of))
    median = f" (median {statistics.median(ratios):.2f}x)" if len(ratios) > 2 else ""
    print(f"| {label} | {rng(tput, lambda x: f'{x:,.0f}')} | {runs[0]['connections']:,} | {resumed} | "
          f"{rng(cpu, lambda x: f'{x:.3f}')} ms | {rng(floor_of, lambda x: f'{x:.3f}')} ms | "
          f"{rng(ratios, lambda x: f'{x:.2f}x')}{median} |")
PY
