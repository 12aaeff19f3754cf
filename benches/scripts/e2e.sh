#!/bin/bash
# usage: e2e.sh TRANSPORT LOGLEVEL REQUESTS [extra scep-load args]
set -e
mkdir -p ${BENCH_DIR:-/tmp/scep-bench}
T=$1; LVL=$2; N=$3; shift 3
export RUST_LOG=$LVL
R=${SCEPD_TARGET:-target/release}
D=${DATA_ROOT:-${BENCH_DIR:-/tmp/scep-bench}}/data-$T
mkdir -p $D
$R/scepd serve --data-dir $D --listen 127.0.0.1:0 --challenge-password pw --transport $T > ${BENCH_DIR:-/tmp/scep-bench}/out-$T 2> ${BENCH_DIR:-/tmp/scep-bench}/err-$T &
PID=$!
for i in $(seq 50); do grep -q listening ${BENCH_DIR:-/tmp/scep-bench}/out-$T 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o '127.0.0.1:[0-9]*' ${BENCH_DIR:-/tmp/scep-bench}/out-$T | head -1 | cut -d: -f2)

$R/scep-load prepare --url http://127.0.0.1:$PORT/scep --challenge pw --requests $N --cache ${BENCH_DIR:-/tmp/scep-bench}/cache --progress false "$@" 2>&1 | tail -1
$R/scep-load run --url http://127.0.0.1:$PORT/scep --challenge pw --requests $N --concurrency 32 --server-pid $PID --cache ${BENCH_DIR:-/tmp/scep-bench}/cache --progress false --json ${BENCH_DIR:-/tmp/scep-bench}/last-$T.json "$@" >/dev/null
kill -TERM $PID; wait $PID || true
