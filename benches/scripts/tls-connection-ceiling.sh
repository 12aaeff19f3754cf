#!/bin/bash
# What a resumed TLS connection costs scepd next to the least a rustls server spends on one:
# GetCACaps over HTTPS, every request on its own resumed connection and then all kept alive, on
# scepd and on benches/src/bin/http-baseline.rs's `raw --tls` server (tokio-rustls with scepd's TLS
# settings, httparse, a fixed answer, nothing else), alternating, ROUNDS rounds of REQUESTS
# requests at concurrency 32. Prints each run, the medians, the cost of the connection itself
# (per-request minus kept-alive, server CPU) and that cost as a share of the crypto floor of an
# enrolment (`scep-load floor`, measured between the rounds).
# usage: benches/scripts/tls-connection-ceiling.sh [ROUNDS] [REQUESTS]
# Needs: cargo build --release -p scepd -p scep-bench; openssl (server certificate).
set -euo pipefail
ROUNDS=${1:-3}; N=${2:-20000}
R=${SCEPD_TARGET:-$PWD/target/release}
W=$(mktemp -d /tmp/scep-tls-ceiling.XXXXXX)
PID=
trap '[[ -n $PID ]] && kill $PID 2>/dev/null; rm -rf $W' EXIT
cd "$W"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench TLS CA" \
    -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out server.pem -extfile server.ext 2>/dev/null
chmod 600 server.key
printf '[server.tls]\ncert = "%s/server.pem"\nkey = "%s/server.key"\n[[profile]]\nname = "default"\nchallenge_password = "pw"\n' \
    "$W" "$W" > scepd.toml

# run SERVER CONNECTIONS: one load, appends "server connections cpu_ms_per_request" to $W/all.
run() {
    rm -rf data out
    case $1 in
        scepd) RUST_LOG=warn "$R/scepd" serve --config scepd.toml --data-dir data --listen 127.0.0.1:0 > out 2>&1 & ;;
        raw) "$R/http-baseline" raw 127.0.0.1:0 --tls server.pem server.key > out 2>&1 & ;;
    esac
    PID=$!
    for _ in $(seq 100); do grep -q 'listening on' out 2>/dev/null && break; sleep 0.1; done
    local url
    url=$(grep -o 'https://127.0.0.1:[0-9]*' out | head -1)
    [[ -n $url ]] || { echo "$1 did not start:"; cat out; exit 1; }
    "$R/scep-load" run --url "$url/scep" --cacert ca.pem --operation getcacaps --connections "$2" \
        --tls-resumption on --requests "$N" --concurrency 32 --server-pid $PID --progress false \
        --json r.json > /dev/null 2> load.log
    kill $PID; wait $PID 2>/dev/null || true; PID=
    python3 - "$1" "$2" >> all <<'EOF'
import json, sys
s = json.load(open("r.json"))
print(sys.argv[1], sys.argv[2], s["server"]["cpu_ms_per_ok"], s["tls"]["resumed"], round(s["throughput"]))
EOF
    tail -1 all
}

for r in $(seq "$ROUNDS"); do
    "$R/scep-load" floor --seconds 2 2>/dev/null | python3 -c 'import json,sys; print("floor", json.load(sys.stdin)["enrolment_us"] / 1000)' >> all
    tail -1 all
    for server in scepd raw; do
        run $server per-request
        run $server keep-alive
    done
done
"$R/scep-load" floor --seconds 2 2>/dev/null | python3 -c 'import json,sys; print("floor", json.load(sys.stdin)["enrolment_us"] / 1000)' >> all

python3 - <<'EOF'
import statistics as st
rows = [l.split() for l in open("all")]
floor = st.median(float(r[1]) for r in rows if r[0] == "floor")
def med(server, conn):
    return st.median(float(r[2]) for r in rows if r[:2] == [server, conn])
print(f"crypto floor of an enrolment: median {floor:.3f} ms")
conn = {}
for server in ("scepd", "raw"):
    per, kept = med(server, "per-request"), med(server, "keep-alive")
    conn[server] = per - kept
    print(f"{server:5}: {per:.3f} ms per request on its own resumed connection, {kept:.4f} ms kept alive: "
          f"the connection costs {conn[server]:.3f} ms = {conn[server] / floor:.2f}x of the floor")
print(f"scepd / raw rustls, per resumed connection: {conn['scepd'] / conn['raw']:.2f}")
EOF
