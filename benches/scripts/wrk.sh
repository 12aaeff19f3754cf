#!/bin/bash
# GetCACaps (or another path) with wrk -t2 -c32 against a fresh scepd, ROUNDS runs.
# usage: benches/scripts/wrk.sh TRANSPORT LOGLEVEL [ROUNDS] [SECONDS] [PATH]
# Prints req/s and the server's CPU time per request (from /proc/<pid>/stat) for each run.
set -euo pipefail
T=$1; LVL=$2; ROUNDS=${3:-1}; SECS=${4:-10}; P=${5:-/scep?operation=GetCACaps}
B=${BENCH_DIR:-/tmp/scep-bench}; R=${SCEPD_TARGET:-target/release}
mkdir -p $B
for r in $(seq $ROUNDS); do
  rm -rf $B/data-wrk-$T
  RUST_LOG=$LVL $R/scepd serve --data-dir $B/data-wrk-$T --listen 127.0.0.1:0 --challenge-password pw --transport $T > $B/out-wrk-$T 2> /dev/null &
  PID=$!
  for i in $(seq 50); do grep -q listening $B/out-wrk-$T 2>/dev/null && break; sleep 0.1; done
  PORT=$(grep -o '127.0.0.1:[0-9]*' $B/out-wrk-$T | head -1 | cut -d: -f2)
  c1=$(awk '{print $14+$15}' /proc/$PID/stat)
  out=$(wrk -t2 -c32 -d${SECS}s "http://127.0.0.1:$PORT$P")
  c2=$(awk '{print $14+$15}' /proc/$PID/stat)
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$T $P run $r: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s, $(echo "scale=2; ($c2-$c1)*10000/$n" | bc) us server CPU/request$(echo "$out" | awk '/Non-2xx/ {print ", NON-2XX: " $0}')"
  kill -TERM $PID; wait $PID || true
done
