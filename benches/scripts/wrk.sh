#!/bin/bash
T=$1; LVL=$2
mkdir -p ${BENCH_DIR:-/tmp/scep-bench}
export RUST_LOG=$LVL
R=${SCEPD_TARGET:-target/release}
D=${BENCH_DIR:-/tmp/scep-bench}/data-$T
$R/scepd serve --data-dir $D --listen 127.0.0.1:0 --challenge-password pw --transport $T > ${BENCH_DIR:-/tmp/scep-bench}/out-$T 2> /dev/null &
PID=$!
for i in $(seq 50); do grep -q listening ${BENCH_DIR:-/tmp/scep-bench}/out-$T 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o '127.0.0.1:[0-9]*' ${BENCH_DIR:-/tmp/scep-bench}/out-$T | cut -d: -f2)
wrk -t2 -c32 -d10s "http://127.0.0.1:$PORT/scep?operation=GetCACaps" | grep -E "Requests/sec|Latency|Non-2xx"
kill -TERM $PID; wait $PID
