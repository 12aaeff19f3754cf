#!/bin/bash
# The OCSP responder over HTTP next to GetCACaps on the same fresh scepd (issue 17):
# GetCACaps, nonce-less OCSP GET (RFC 5019, precomputed answer) and OCSP POST with a
# nonce (RFC 8954, one P-256 signature each), wrk -t2 -c32, ROUNDS alternating runs.
# Prints req/s and the server's CPU time per request (/proc/<pid>/stat). The raw
# signing reference is `cargo bench -p scep-bench --bench ocsp` (raw/p256_sign).
# Needs: wrk, openssl, strongSwan's pki (one certificate is enrolled with it).
# usage: benches/scripts/ocsp.sh [ROUNDS] [SECONDS]
set -euo pipefail
ROUNDS=${1:-3}; SECS=${2:-5}
B=${BENCH_DIR:-/tmp/scep-bench-ocsp}; R=$(realpath "${SCEPD_TARGET:-target/release}")
rm -rf "$B"; mkdir -p "$B"; cd "$B"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
U=http://127.0.0.1:$PORT
CERTCTL_SCEP_PUBLIC_URL=$U RUST_LOG=warn "$R/scepd" serve --data-dir "$B/data" --listen 127.0.0.1:$PORT \
  --challenge-password pw > out 2> err &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q listening out err 2>/dev/null && break; sleep 0.1; done
pki --scepca --url "$U/scep" --caout ca.pem --raout ra.pem --outform pem --force > scepca.log 2>&1
# pki names the RA certificates ra.pem, ra-2.pem...: pick them by key usage.
for f in ra*.pem; do
  if openssl x509 -in "$f" -noout -ext keyUsage | grep -q "Key Encipherment"; then ENC=$f; else SIG=$f; fi
done
pki --gen --type rsa --size 2048 --outform pem > key.pem 2> /dev/null
pki --scep --url "$U/scep" --in key.pem --dn CN=ocsp-bench --password pw --cacert-enc "$ENC" --cacert-sig "$SIG" \
  --cacert ca.pem --outform pem --interval 1 --maxpolltime 20 > cert.pem 2> scep.log
openssl ocsp -issuer ca.pem -cert cert.pem -reqout nonce.der > /dev/null
openssl ocsp -issuer ca.pem -cert cert.pem -no_nonce -reqout nononce.der > /dev/null
for req in nonce.der nononce.der; do
  openssl ocsp -issuer ca.pem -cert cert.pem -url "$U/pki/ocsp" -CAfile ca.pem -reqin "$req" 2>&1 | grep -q "Response verify OK" \
    || { echo "the OCSP answer to $req does not verify" >&2; exit 1; }
done
GET=/pki/ocsp/$(python3 -c 'import base64,sys,urllib.parse;print(urllib.parse.quote(base64.b64encode(open("nononce.der","rb").read()).decode(),safe=""))')
cat > post.lua <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/ocsp-request"
local f = io.open("$B/nonce.der", "rb"); wrk.body = f:read("*a"); f:close()
LUA
run() { # label, wrk args...
  local label=$1; shift
  local c1 c2 out n
  c1=$(awk '{print $14+$15}' /proc/$PID/stat)
  out=$(wrk -t2 -c32 -d"${SECS}s" "$@")
  c2=$(awk '{print $14+$15}' /proc/$PID/stat)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$label: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s, $(echo "scale=2; ($c2-$c1)*10000/$n" | bc) us server CPU/request$(echo "$out" | awk '/Non-2xx/ {print ", NON-2XX: " $0}')"
}
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  run "  GetCACaps        " "$U/scep?operation=GetCACaps"
  run "  OCSP GET no nonce" "$U$GET"
  run "  OCSP POST nonce  " -s post.lua "$U/pki/ocsp"
done
