#!/usr/bin/env bash
# Reproduces the figures in docs/performance.md: builds the release binary,
# starts it on a temporary data directory, measures the disk's own fsync'd
# write bandwidth, then drives S3 with wrk through presigned URLs.
#
#   scripts/bench/run.sh            (needs wrk: apt-get install wrk)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nuage-target}"
tools="${NUAGE_TOOLS_DIR:-$HOME/.cache/nuage-tools}"
"$repo/scripts/install-test-deps.sh" > /dev/null
command -v wrk > /dev/null || apt-get install -y wrk > /dev/null
cargo build --release -p nuage --manifest-path "$repo/Cargo.toml"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
port=19777
"$CARGO_TARGET_DIR/release/nuage" serve --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/server.out" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" && break; sleep 0.1; done
mapfile -t urls < <("$tools/venv/bin/python" "$repo/scripts/bench/presign.py" "$work/data" "http://127.0.0.1:$port")
head -c $((64 << 20)) /dev/urandom > "$work/64m.bin"
head -c 4096 /dev/urandom > "$work/4k.bin"
sed "s#/tmp/bench/4k.bin#$work/4k.bin#" "$repo/scripts/bench/put.lua" > "$work/put4k.lua"
sed "s#/tmp/bench/4k.bin#$work/64m.bin#" "$repo/scripts/bench/put.lua" > "$work/put64m.lua"

echo "== disk: dd 512 MiB with fsync"
dd if=/dev/zero of="$work/dd" bs=1M count=512 conv=fsync 2>&1 | tail -1; rm -f "$work/dd"
echo "== GET 4 KiB, 16 connections";  wrk -t2 -c16 -d10s --latency "${urls[0]}" | grep -E "Requests/sec|50%|99%|Non-2xx"
echo "== GET 4 KiB, 1 connection";    wrk -t1 -c1 -d5s --latency "${urls[0]}" | grep -E "Requests/sec|50%|99%"
echo "== PUT 4 KiB, 16 connections";  wrk -t2 -c16 -d10s --latency -s "$work/put4k.lua" "${urls[2]}" | grep -E "Requests/sec|50%|99%|Non-2xx"
echo "== GET 64 MiB, 4 connections";  wrk -t2 -c4 -d10s "${urls[1]}" | grep -E "Requests/sec|Transfer/sec|Non-2xx"
echo "== PUT 64 MiB, 4 connections";  wrk -t2 -c4 -d10s -s "$work/put64m.lua" "${urls[3]}" | grep -E "Requests/sec|Non-2xx"
echo "== resident memory of the server (KiB)"; ps -o rss= -p "$server"
