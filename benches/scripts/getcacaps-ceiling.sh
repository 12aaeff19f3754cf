#!/bin/bash
# GetCACaps on scepd next to the reference servers of benches/src/bin/http-baseline.rs
# (hyper with scepd's settings and a fixed answer; httparse on a socket, nothing else),
# alternating, ROUNDS rounds of SECONDS each with wrk -t2 -c32, then the medians and ratios.
# usage: benches/scripts/getcacaps-ceiling.sh [ROUNDS] [SECONDS] [TRANSPORT]
# Needs: wrk, a release build (cargo build --release -p scepd -p scep-bench).
set -euo pipefail
ROUNDS=${1:-6}; SECS=${2:-6}; T=${3:-tokio}
R=${SCEPD_TARGET:-target/release}
W=$(mktemp -d /tmp/scep-ceiling.XXXXXX)
trap 'rm -rf $W' EXIT
PORT=18490
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq $ROUNDS); do
  for m in scepd hyper raw; do
    case $m in
      scepd) rm -rf $W/data; RUST_LOG=warn $R/scepd serve --data-dir $W/data --listen 127.0.0.1:$PORT --challenge-password pw --transport $T > /dev/null 2>&1 & ;;
      *) $R/http-baseline $m 127.0.0.1:$PORT > /dev/null 2>&1 & ;;
    esac
    PID=$!
    for i in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/scep?operation=GetCACaps" && break; sleep 0.1; done
    c1=$(cpu $PID)
    out=$(wrk -t2 -c32 -d${SECS}s "http://127.0.0.1:$PORT/scep?operation=GetCACaps")
    c2=$(cpu $PID)
    kill $PID; wait $PID 2>/dev/null || true
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    us=$(echo "scale=2; ($c2-$c1)*10000/$n" | bc)
    echo "$m $r: $rps req/s, $us us server CPU/request"
    echo "$m $rps $us" >> $W/all
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for m in scepd hyper raw; do
  echo "$m: median $(awk -v m=$m '$1==m {print $2}' $W/all | median) req/s, $(awk -v m=$m '$1==m {print $3}' $W/all | median) us/request, $(awk -v m=$m '$1==m && $2>=120000' $W/all | wc -l)/$ROUNDS runs >= 120k"
done
s=$(awk '$1=="scepd" {print $2}' $W/all | median); h=$(awk '$1=="hyper" {print $2}' $W/all | median); x=$(awk '$1=="raw" {print $2}' $W/all | median)
echo "ratio of medians: scepd/hyper $(echo "scale=3; $s/$h" | bc), scepd/raw $(echo "scale=3; $s/$x" | bc)"
