#!/bin/bash
# Issue 18's figures: enrolments per second and CPU per enrolment (scepd's, and PostgreSQL's)
# with the shared store on PostgreSQL, one node and two nodes, next to the embedded SQLite
# store in the same run, at concurrency 32 in all (two nodes: 16 per node, at once).
# Static-challenge PKCSReq on the built-in local CA: each enrolment records its certificate in
# the index and its event in the audit trail, both on the database under test.
# usage: benches/scripts/ha.sh DATABASE_URL [REQUESTS=3000] [ROUNDS=2] [TRANSPORT=tokio]
#   DATABASE_URL: a PostgreSQL server this script may create databases on (.ci/postgres-dev
#   prints one into <dir>/url); its server processes' CPU is read from /proc (same machine).
# Needs: cargo build --release -p scepd -p scep-bench; psql.
set -euo pipefail
URL=${1:?usage: ha.sh DATABASE_URL [REQUESTS] [ROUNDS] [TRANSPORT]}
N=${2:-3000}; ROUNDS=${3:-2}; T=${4:-tokio}
R=${SCEPD_TARGET:-target/release}
B=${BENCH_DIR:-/tmp/scep-bench-ha}
rm -rf "$B"; mkdir -p "$B"
PIDS=()
stop() { # pids: SIGTERM, then wait (bounded) until they are gone
    kill -TERM "$@" 2>/dev/null || true
    for p in "$@"; do for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done; done
}
cleanup() { stop "${PIDS[@]}"; }
trap cleanup EXIT

printf '[[profile]]\nname = "corp"\nchallenge_password = "pw"\n' >"$B/scepd.toml"

# The PostgreSQL server's CPU so far, in clock ticks (every process of the server's owner).
pg_owner=$(psql "$URL" -Atc "SELECT pg_backend_pid()" | xargs -I{} stat -c %U /proc/{})
pg_ticks() { ps -u "$pg_owner" -o pid= | while read -r p; do awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s+=$1} END {print s+0}'; }

start() { # name data-dir [database-url]: starts a node (in the background), prints "pid port"
    local name=$1 dir=$2 db=${3:-}
    local env=(RUST_LOG=${RUST_LOG:-warn})
    [[ -n $db ]] && env+=(CERTCTL_DATABASE_URL="$db")
    env "${env[@]}" "$R/scepd" serve --config "$B/scepd.toml" --data-dir "$dir" --listen 127.0.0.1:0 \
        --transport "$T" >"$B/out-$name" 2>"$B/err-$name" &
    local pid=$!
    for _ in $(seq 150); do grep -q listening "$B/out-$name" 2>/dev/null && break; sleep 0.1; done
    local port
    port=$(grep -ho '127.0.0.1:[0-9]*' "$B/out-$name" | head -1 | cut -d: -f2)
    [[ -n $port ]] || { cat "$B/err-$name" >&2; exit 1; }
    echo "$pid $port"
}

# One CA for every configuration: created once, its key files copied to every node's data dir.
read -r pid _ < <(start seed "$B/seed")
stop "$pid"
node_dir() { mkdir -p "$1"; cp "$B"/seed/*.pem "$B"/seed/*.key "$1"/ 2>/dev/null; chmod 600 "$1"/*.key; }

newdb() { # name: a fresh database on the server, prints its URL
    psql "$URL" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    echo "${URL%/*}/$1"
}

load() { # label url pid requests concurrency round: one scep-load run, its JSON in $B/label-round.json
    "$R/scep-load" run --url "$2" --challenge pw --requests "$4" --concurrency "$5" --server-pid "$3" \
        --cache "$B/cache-$1" --progress false --json "$B/$1-$6.json" >/dev/null 2>"$B/$1-$6.log" \
        || { echo "$1 round $6 failed:" >&2; cat "$B/$1-$6.log" >&2; exit 1; }
}

measure() { # config round
    local config=$1 round=$2
    rm -rf "$B/a" "$B/b"; node_dir "$B/a"; node_dir "$B/b"
    local db=""
    [[ $config != sqlite ]] && db=$(newdb "bench_${config//-/_}_$round")
    read -r pa porta < <(start "$config-a" "$B/a" "$db"); PIDS+=("$pa")
    local ua="http://127.0.0.1:$porta/scep/corp"
    if [[ $config == pg-two ]]; then
        read -r pb portb < <(start "$config-b" "$B/b" "$db"); PIDS+=("$pb")
        local ub="http://127.0.0.1:$portb/scep/corp"
        "$R/scep-load" prepare --url "$ua" --challenge pw --requests $((N / 2)) --cache "$B/cache-$config-a" --progress false >/dev/null 2>&1
        "$R/scep-load" prepare --url "$ub" --challenge pw --requests $((N / 2)) --cache "$B/cache-$config-b" --progress false >/dev/null 2>&1
        local t0; t0=$(pg_ticks)
        load "$config-a" "$ua" "$pa" $((N / 2)) 16 "$round" &
        local la=$!
        load "$config-b" "$ub" "$pb" $((N / 2)) 16 "$round"
        wait "$la"
        echo $(($(pg_ticks) - t0)) >"$B/$config-$round.pg"
        stop "$pa" "$pb"
    else
        "$R/scep-load" prepare --url "$ua" --challenge pw --requests "$N" --cache "$B/cache-$config-a" --progress false >/dev/null 2>&1
        local t0; t0=$(pg_ticks)
        load "$config-a" "$ua" "$pa" "$N" 32 "$round"
        echo $(($(pg_ticks) - t0)) >"$B/$config-$round.pg"
        stop "$pa"
    fi
}

CONFIGS=(sqlite pg-one pg-two)
for round in $(seq "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do measure "$c" "$round"; done
done

python3 - "$B" "$ROUNDS" "$(getconf CLK_TCK)" "${CONFIGS[@]}" <<'PY'
import json, os, statistics, sys
b, rounds, hz, configs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
print("| configuration | round | enrolments/s | p99 ms | scepd CPU per enrolment | PostgreSQL CPU per enrolment |")
print("|---|---|---|---|---|---|")
tput = {}
for c in configs:
    for r in range(1, rounds + 1):
        runs = [json.load(open(f"{b}/{c}-{n}-{r}.json")) for n in "ab" if os.path.exists(f"{b}/{c}-{n}-{r}.json")]
        for s in runs:
            if sum(s["errors"].values()):
                sys.exit(f"{c} round {r}: errors {s['errors']}")
        ok = sum(s["ok"] for s in runs)
        secs = max(s["seconds"] for s in runs)
        rate = ok / secs
        tput.setdefault(c, []).append(rate)
        cpu = sum(s["server"]["cpu_ms"] for s in runs) / ok
        p99 = max(s["latency_ms"]["p99"] for s in runs)
        pg = int(open(f"{b}/{c}-{r}.pg").read()) * 1000 / hz / ok
        pg_text = "-" if c == "sqlite" else f"{pg:.2f} ms"
        print(f"| {c} | {r} | {rate:,.0f} | {p99:.0f} | {cpu:.2f} ms | {pg_text} |")
base = statistics.median(tput["sqlite"])
for c in configs[1:]:
    print(f"{c}: median {statistics.median(tput[c]):,.0f}/s = {statistics.median(tput[c]) / base:.2f}x SQLite (median {base:,.0f}/s)")
PY
