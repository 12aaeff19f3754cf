#!/bin/bash
# scepd next to micromdm's scepserver (Go, Debian package `scep`), side by side in one run.
#
# usage: sudo unshare -n bash benches/scripts/peers.sh [ROUNDS] [SECONDS] [ENROLLMENTS]
#
# Runs inside a private network namespace because scepserver binds every
# interface (unshare -n: only a loopback exists). Both servers get an RSA-2048
# CA, a static challenge, and the same clients: `wrk -t2 -c32` on GetCACaps
# (ROUNDS alternating runs of SECONDS each) and `scep-load compare` for
# PKCSReq at concurrency 32 (AES-256 / SHA-256, every reply verified).
set -euo pipefail
ROUNDS=${1:-5}; SECS=${2:-8}; N=${3:-4000}
R=${SCEPD_TARGET:-target/release}
W=$(mktemp -d /tmp/scep-peers.XXXXXX)
ip link set lo up

RUST_LOG=warn $R/scepd serve --data-dir $W/scepd --listen 127.0.0.1:18480 --challenge-password pw > $W/scepd.out 2> $W/scepd.err &
SCEPD=$!
(cd $W && scepserver ca -init -keySize 2048 -depot depot > /dev/null 2>&1)
(cd $W && exec scepserver -depot depot -port 18481 -challenge pw -allowrenew 0 > $W/peer.log 2>&1) &
PEER=$!
trap 'kill $SCEPD $PEER 2>/dev/null; wait 2>/dev/null; cp $W/peer.log /tmp/peer-last.log 2>/dev/null; rm -rf $W' EXIT
for i in $(seq 100); do
  curl -sf "http://127.0.0.1:18480/healthz" > /dev/null && curl -sf "http://127.0.0.1:18481/scep?operation=GetCACaps" > /dev/null && break
  sleep 0.1
done

cpu() { awk '{print $14+$15}' /proc/$1/stat; }
echo "GetCACaps, wrk -t2 -c32 -d${SECS}s, $ROUNDS rounds each (req/s, server CPU us/request)"
for r in $(seq $ROUNDS); do
  for t in scepd:18480:$SCEPD micromdm:18481:$PEER; do
    IFS=: read name port pid <<< "$t"
    c1=$(cpu $pid)
    out=$(wrk -t2 -c32 -d${SECS}s "http://127.0.0.1:$port/scep?operation=GetCACaps")
    c2=$(cpu $pid)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "$name $(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "scale=2; ($c2-$c1)*10000/$n" | bc)"
  done
done | sort | awk '{r[$1]=r[$1]" "int($2); c[$1]=c[$1]" "$3} END {for (k in r) print "  " k ": req/s" r[k] " | CPU us/req" c[k]}'

echo "PKCSReq, scep-load compare, concurrency 32, $N enrollments per run (A = scepd, B = micromdm)"
$R/scep-load compare --url http://127.0.0.1:18480/scep --url-b http://127.0.0.1:18481/scep \
  --server-pid $SCEPD --server-pid-b $PEER --challenge pw --requests $N --concurrency 32 \
  --rounds 2 --cache $W/cache --progress false
