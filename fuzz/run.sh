#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: fuzz/run.sh [seconds-per-target]
# (default 60). Installs nothing. Exits non-zero if any target crashes (or
# fails to build). Crash inputs land in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly compiler flags; on a stable toolchain they are
# unlocked with RUSTC_BOOTSTRAP=1. Targets are built without a sanitizer
# (the code under test is safe Rust) and with debug assertions, so integer
# overflow panics too.
set -u

seconds="${1:-60}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [seconds-per-target]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed; install it with: cargo install cargo-fuzz" >&2
    exit 2
fi

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
build_flags=(--sanitizer none --debug-assertions)

targets=(filter mapping schema_compat checkpoint receipt audit_entry pgoutput)

if ! cargo fuzz build "${build_flags[@]}"; then
    echo "fuzz targets failed to build" >&2
    exit 1
fi

failed=()
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${seconds}s"
    # the first directory collects new inputs; seeds are read from it too
    if cargo fuzz run "${build_flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"logs/$t.log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)' \
            "logs/$t.log" | sed 's/^/   /'
        grep -E '#[0-9]+\s+DONE' "logs/$t.log" | tail -1 | sed 's/^/   /'
    else
        echo "   CRASH or failure: see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
        tail -n 40 "logs/$t.log" >&2
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "failed targets: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without a crash"
