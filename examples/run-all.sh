#!/usr/bin/env bash
# Runs every example client against a kept demo federation.
#
# Makes a demo with `jembatan demo --keep` in a temporary directory, starts
# its disdukcapil adapter and its broker from the kept configs, installs
# each client's packages when they are missing, runs every client's
# scenario (a lookup with verification, a query streamed to a file, a
# denial with its reason codes, the receipts' payload hashes recomputed)
# and fails if any client fails.
#
#   cargo build -p jembatan-cli && examples/run-all.sh [CLIENT...]
#
# CLIENT is python, php, java or typescript; with none, all of them run.
# JEMBATAN_BIN names the jembatan binary (default target/debug/jembatan).
set -euo pipefail

examples="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$examples")"
bin="${JEMBATAN_BIN:-$root/target/debug/jembatan}"
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(python php java typescript)

if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build -p jembatan-cli --bin jembatan)
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

demo="$work/demo"
"$bin" demo --residents 2000 --keep "$demo" >"$work/demo.log" 2>&1 || {
    cat "$work/demo.log" >&2
    exit 1
}

# The port a kept config listens on.
port() { sed -n 's/^listen *= *"[^"]*:\([0-9]*\)"$/\1/p' "$1"; }
broker_port="$(port "$demo/broker.toml")"
adapter_port="$(port "$demo/adapter-disdukcapil.toml")"

RUST_LOG=warn "$bin" adapter --config "$demo/adapter-disdukcapil.toml" >"$work/adapter.log" 2>&1 &
pids+=($!)
RUST_LOG=warn "$bin" broker --config "$demo/broker.toml" >"$work/broker.log" 2>&1 &
pids+=($!)
for p in "$adapter_port" "$broker_port"; do
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue 2; fi
        sleep 0.1
    done
    echo "the adapter or the broker did not start on port $p" >&2
    cat "$work/adapter.log" "$work/broker.log" >&2
    exit 1
done

certs="$demo/certs"
broker_grpc="localhost:$broker_port"
broker_http="https://localhost:$broker_port"

run_python() {
    if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
        python3 -m pip install -q -r "$examples/python/requirements.txt" || return 1
    fi
    local gen="$work/python-stubs"
    mkdir -p "$gen"
    python3 -m grpc_tools.protoc -I "$root/proto" --python_out="$gen" --grpc_python_out="$gen" \
        "$root"/proto/jembatan/v1/*.proto || return 1
    PYTHONPATH="$gen" python3 "$examples/python/query.py" \
        --certs "$certs" --broker "$broker_grpc" --out "$work/python.jsonl"
}

run_php() {
    if ! php -r 'exit(function_exists("curl_init") ? 0 : 1);' 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq php-cli php-curl >/dev/null ||
            return 1
    fi
    php "$examples/php/client.php" --certs "$certs" --broker "$broker_http" --out "$work/php.jsonl"
}

run_java() {
    if ! command -v javac >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null ||
            return 1
    fi
    # Java's KeyStore reads the agency's certificate and key as PKCS#12.
    local p12="$work/agency-dinsos.p12" password="$work/p12-password"
    head -c 18 /dev/urandom | base64 >"$password"
    "$bin" pki p12 --cert "$certs/agency-dinsos.pem" --key "$certs/agency-dinsos-key.pem" \
        --out "$p12" --password-file "$password" || return 1
    javac -d "$work/java" "$examples/java/Client.java" || return 1
    java -cp "$work/java" Client --p12 "$p12" --password-file "$password" --ca "$certs/ca.pem" \
        --broker "$broker_http" --out "$work/java.jsonl"
}

run_typescript() {
    (
        cd "$examples/typescript" &&
            { [ -d node_modules/@grpc/grpc-js ] || npm ci --no-audit --no-fund --loglevel=error; } &&
            npx tsc
    ) || return 1
    node "$examples/typescript/dist/client.js" --certs "$certs" --broker "$broker_grpc" --out "$work/typescript.jsonl"
}

failed=()
for client in "${clients[@]}"; do
    echo "== $client"
    if "run_$client"; then
        echo "== $client: passed"
    else
        echo "== $client: FAILED"
        failed+=("$client")
    fi
done

echo "clients: $((${#clients[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    echo "--- broker log" >&2
    tail -n 40 "$work/broker.log" >&2
    exit 1
fi
