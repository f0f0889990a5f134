#!/usr/bin/env bash
# Profiles `nuage serve` (release build, embedded single node, fsync and
# encryption on, as always) under `nuage bench` with `perf record`, one
# workload at a time, and writes the top of each profile as text.
#
#   cargo build --release -p nuage   # the script profiles that build
#   scripts/bench/profile.sh OUT_DIR [WORKLOAD...]
#
# WORKLOAD: put4k, get4k, put64m (default: all three). For each, OUT_DIR gets
# WORKLOAD.bench.txt (the bench report), WORKLOAD.self.txt (functions by self
# time, whole process), WORKLOAD.threads.txt (time by thread name) and
# WORKLOAD.perf-stat.txt (context switches, CPU migrations, page faults);
# perf.data is deleted. Needs perf and perf_event_paranoid <= 0 (as root:
# echo -1 > /proc/sys/kernel/perf_event_paranoid). Env: NUAGE_PROFILE_SECS
# (perf record length, 10), NUAGE_PROFILE_LARGE_OPS (64 MiB PUTs, 28: under 2 GB
# on disk, deleted after), NUAGE_PROFILE_CALLERS=1 instead writes
# WORKLOAD.callers.txt (DWARF call graphs, caller view; large perf.data while it runs),
# NUAGE_PROFILE_SWITCHES=1 instead writes WORKLOAD.switches.txt (what led to each
# context switch), NUAGE_BIN another binary (an older build, to compare).
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nuage-target}"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
shift
workloads=("${@:-put4k get4k put64m}")
read -r -a workloads <<< "${workloads[*]}"
secs="${NUAGE_PROFILE_SECS:-10}"
bin="${NUAGE_BIN:-$CARGO_TARGET_DIR/release/nuage}"
perf="${PERF:-perf}"

work="$(mktemp -d "${NUAGE_PROFILE_DIR:-$HOME/.cache}/nuage-profile.XXXXXX")"
server=""
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2> /dev/null && { wait "$server" 2> /dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/server.out" 2>&1 &
server=$!
for _ in $(seq 600); do
    (: > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break
    sleep 0.05
done
creds="$work/data/credentials.toml"
toml() { sed -n "s/^$1 *= *\"\(.*\)\"/\1/p" "$creds"; }
AWS_ACCESS_KEY_ID="$(toml access_key_id)" AWS_SECRET_ACCESS_KEY="$(toml secret_access_key)" \
    AWS_DEFAULT_REGION="$(toml region)"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
endpoint="http://127.0.0.1:$port"

for w in "${workloads[@]}"; do
    case "$w" in
        put4k) args=(--workload put --size 4KiB --concurrency 16 --duration "$((secs + 6))s" --warmup 2s) ;;
        get4k) args=(--workload get --size 4KiB --concurrency 16 --objects 1000 --duration "$((secs + 6))s" --warmup 2s) ;;
        put64m) args=(--workload put --size 64MiB --concurrency 16 --operations "${NUAGE_PROFILE_LARGE_OPS:-28}") ;;
        *) echo "profile.sh: unknown workload $w" >&2; exit 2 ;;
    esac
    report="$out/$w.bench.txt"
    [[ "${NUAGE_PROFILE_SWITCHES:-0}" == 1 ]] && report="$out/$w.switches-bench.txt"
    "$bin" bench --endpoint "$endpoint" --quiet "${args[@]}" > "$report" 2>&1 &
    bench=$!
    # Skip pre-population and warm-up: wait until the measured run is under way.
    case "$w" in get4k) sleep 5 ;; put4k) sleep 3 ;; *) sleep 1 ;; esac
    if [[ "${NUAGE_PROFILE_SWITCHES:-0}" == 1 ]]; then
        # Why threads leave the CPU: every context switch of 1 s, with the
        # user-space call chain that led to it (DWARF unwinding).
        "$perf" record -e sched:sched_switch --call-graph dwarf,16384 -p "$server" -o "$work/perf.data" -- sleep 1 2> /dev/null
        "$perf" report -i "$work/perf.data" --no-children --stdio --sort sym \
            -g caller,0.5,callee,function,percent --percent-limit 1 2> /dev/null \
            | grep -E '[0-9]+\.[0-9]+%|---' | head -120 > "$out/$w.switches.txt"
    elif [[ "${NUAGE_PROFILE_CALLERS:-0}" == 1 ]]; then
        "$perf" record -F 499 --call-graph dwarf,32768 -p "$server" -o "$work/perf.data" -- sleep "$secs" 2> /dev/null
        "$perf" report -i "$work/perf.data" --no-children --stdio --percent-limit 2 -G 2> /dev/null \
            | grep -v '^$' | head -600 > "$out/$w.callers.txt"
    else
        "$perf" stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$server" \
            -o "$out/$w.perf-stat.txt" -- sleep 2
        "$perf" record -F 1999 -p "$server" -o "$work/perf.data" -- sleep "$((secs - 2))" 2> /dev/null
        "$perf" report -i "$work/perf.data" --no-children --stdio --sort symbol --percent-limit 0.3 2> /dev/null \
            | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//; /^#/ s/[ .]{3,}/  /g' | head -120 > "$out/$w.self.txt"
        "$perf" report -i "$work/perf.data" --no-children --stdio --sort comm,dso 2> /dev/null \
            | grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+$//' | head -30 > "$out/$w.threads.txt"
    fi
    rm -f "$work/perf.data"
    wait "$bench" || true
done
