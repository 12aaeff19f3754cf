#!/usr/bin/env bash
# Runs the libFuzzer targets on the STABLE toolchain (RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its nightly-only -Z flags; see docs/fuzzing.md).
#
#   fuzz/run.sh <seconds> [target...]      (default: every target)
#
# Each target runs for <seconds> (-max_total_time), FUZZ_JOBS at a time
# (default 2). The committed seeds (fuzz/seeds/<target>/) are copied into the
# working corpus (fuzz/corpus/<target>/, not committed) first. Exits non-zero
# if any target crashes, leaks, times out or fails to build; the reproducer is
# in fuzz/artifacts/<target>/ and the log in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

if (($# < 1)) || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh <seconds> [target...]" >&2
    exit 2
fi
seconds=$1
shift
all=(pki_message envelope csr jws get_message engine_handle ocsp_request)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
jobs=${FUZZ_JOBS:-2}

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "fuzz: building ${targets[*]}"
for t in "${targets[@]}"; do
    cargo fuzz build "$t"
done

mkdir -p logs
# Failure markers of this invocation only (two run.sh may run side by side).
failures=$(mktemp -d)
trap 'rm -rf "$failures"' EXIT
run_one() {
    local t=$1
    mkdir -p "corpus/$t" "artifacts/$t"
    if [[ -d seeds/$t ]]; then
        cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    fi
    # -rss_limit_mb: inputs are bounded (256 KiB messages); 2 GiB catches leaks.
    if cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 -max_len=8192 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        local last
        last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1 || true)
        echo "fuzz: $t ok: $last"
    else
        echo "fuzz: $t FAILED (log fuzz/logs/$t.log):"
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "logs/$t.log" | head -20
        touch "$failures/$t"
        return 1
    fi
}

for t in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs)); do
        wait -n || true
    done
    run_one "$t" &
done
wait || true
if compgen -G "$failures/*" >/dev/null; then
    echo "fuzz: at least one target failed" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) ran ${seconds}s without a finding"
