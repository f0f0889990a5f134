#!/usr/bin/env bash
# Measures issue 7's single-node targets with `nuage bench` and prints one table
# (measured value, baseline, ratio, target, met/missed). See docs/performance.md,
# "Issue 7 targets".
#
#   scripts/bench/targets.sh [--json FILE]
#   scripts/bench/targets.sh --endpoint URL --access-key KEY --secret-key SECRET [--region R] [--json FILE]
#
# Without --endpoint: builds the release binary, starts `nuage serve` on a fresh
# data directory (on disk, under $NUAGE_TARGETS_DIR, default ~/.cache), and
# measures it, memory and start-up included. With --endpoint: the S3 rows only,
# against that endpoint (no server, no memory or start-up rows); the baselines
# are still this machine's disk and loopback.
#
# Environment knobs:
#   NUAGE_TARGETS_OBJECTS   objects in the listing bucket (1000000; ~8 min at 2,000 PUT/s)
#   NUAGE_TARGETS_PER_DIR   objects per directory of the listing bucket (1000)
#   NUAGE_TARGETS_QUICK=1   small sizes and short runs, to check the script (figures meaningless)
#   NUAGE_TARGETS_DURATION  length of each timed small-object run (20s; quick: 3s)
#   NUAGE_TARGETS_MEM_SIZE  object size of the 16-client memory run (1GiB; quick: 32MiB)
#   NUAGE_TARGETS_LARGE_OPS 64 MiB operations per large-object run (64; quick: 16)
#   NUAGE_TARGETS_DIR       where the temporary data directory goes (~/.cache)
#   NUAGE_TARGETS_NO_BUILD=1  use the release binary already built
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nuage-target}"

json_out="" endpoint="" access_key="" secret_key="" region="${AWS_DEFAULT_REGION:-us-east-1}"
while (($#)); do
    case "$1" in
        --json) json_out="$2"; shift 2 ;;
        --endpoint) endpoint="$2"; shift 2 ;;
        --access-key) access_key="$2"; shift 2 ;;
        --secret-key) secret_key="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "targets.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n "$endpoint" && (-z "$access_key" || -z "$secret_key") ]]; then
    echo "targets.sh: --endpoint needs --access-key and --secret-key" >&2
    exit 2
fi

quick="${NUAGE_TARGETS_QUICK:-0}"
objects="${NUAGE_TARGETS_OBJECTS:-1000000}"
per_dir="${NUAGE_TARGETS_PER_DIR:-1000}"
if [[ "$quick" == 1 ]]; then
    duration="${NUAGE_TARGETS_DURATION:-3s}" warmup=1s large=8MiB
    large_ops="${NUAGE_TARGETS_LARGE_OPS:-16}" mem_size="${NUAGE_TARGETS_MEM_SIZE:-32MiB}"
    dd_mib=128 loop_secs=1
else
    duration="${NUAGE_TARGETS_DURATION:-20s}" warmup=5s large=64MiB
    large_ops="${NUAGE_TARGETS_LARGE_OPS:-64}" mem_size="${NUAGE_TARGETS_MEM_SIZE:-1GiB}"
    dd_mib=1024 loop_secs=5
fi

command -v jq > /dev/null || apt-get install -y jq > /dev/null
command -v python3 > /dev/null || { echo "targets.sh: needs python3" >&2; exit 2; }
if [[ "${NUAGE_TARGETS_NO_BUILD:-0}" != 1 ]]; then
    cargo build --release -p nuage --manifest-path "$repo/Cargo.toml"
fi
bin="$CARGO_TARGET_DIR/release/nuage"

base="${NUAGE_TARGETS_DIR:-$HOME/.cache}"
mkdir -p "$base"
work="$(mktemp -d "$base/nuage-targets.XXXXXX")"
server="" sampler="" iperf=""
cleanup() {
    local pid
    for pid in "$sampler" "$iperf" "$server"; do
        [[ -n "$pid" ]] && kill "$pid" 2> /dev/null && { wait "$pid" 2> /dev/null || true; }
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- the server ------------------------------------------------------------
port="" data="$work/data"
# Starts `nuage serve`; sets started_log_s (to the "listening on" line) and
# started_port_s (to the port accepting a connection).
start_server() {
    local t0 t1
    : > "$work/server.out"
    t0="$(now)"
    "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" >> "$work/server.out" 2>&1 &
    server=$!
    started_port_s="" started_log_s=""
    for _ in $(seq 6000); do
        t1="$(now)"
        if [[ -z "$started_port_s" ]] && (: > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
            started_port_s="$(calc "$t1 - $t0" 3)"
        fi
        if [[ -z "$started_log_s" ]] && grep -q "listening on" "$work/server.out"; then
            started_log_s="$(calc "$t1 - $t0" 3)"
        fi
        [[ -n "$started_port_s" && -n "$started_log_s" ]] && return 0
        kill -0 "$server" 2> /dev/null || { cat "$work/server.out" >&2; echo "targets.sh: server exited" >&2; exit 1; }
        sleep 0.01
    done
    echo "targets.sh: server not listening after 60 s" >&2
    exit 1
}
stop_server() {
    kill "$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    server=""
}
rss_kib() { awk -v k="${2:-VmRSS:}" '$1 == k { print $2 }' "/proc/$1/status"; }

if [[ -z "$endpoint" ]]; then
    port="$(free_port)"
    start_server
    endpoint="http://127.0.0.1:$port"
    empty_start_s="$started_port_s"
    creds="$data/credentials.toml"
    toml() { sed -n "s/^$1 *= *\"\(.*\)\"/\1/p" "$creds"; }
    access_key="$(toml access_key_id)" secret_key="$(toml secret_access_key)" region="$(toml region)"
    rss_empty_kib="$(rss_kib "$server")"
    local_server=1
else
    local_server=0
fi
export AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" AWS_DEFAULT_REGION="$region"
unset AWS_REGION AWS_SESSION_TOKEN

# ---- the table --------------------------------------------------------------
rows=()
# row NAME VALUE UNIT BASELINE CMP TARGET: BASELINE "-" compares VALUE with
# TARGET; otherwise RATIO = VALUE / BASELINE is compared with TARGET (a fraction).
row() {
    local name="$1" value="$2" unit="$3" baseline="$4" cmp="$5" target="$6" ratio="-" subject status
    if [[ "$value" == "-" ]]; then
        status="not measured"
    else
        value="$(awk -v v="$value" 'BEGIN { printf (v < 100 ? "%.3f" : "%.1f"), v }')"
        subject="$value"
        if [[ "$baseline" != "-" ]]; then
            ratio="$(calc "$value / $baseline" 3)"
            subject="$ratio"
        fi
        if awk "BEGIN { exit !($subject $cmp $target) }"; then status=met; else status=missed; fi
    fi
    rows+=("$(printf '%s\t%s\t%s\t%s\t%s\t%s %s\t%s' "$name" "$value" "$unit" "$baseline" "$ratio" "$cmp" "$target" "$status")")
    log "$name: $value $unit (baseline $baseline, ratio $ratio, target $cmp $target): $status"
}

# bench OUT ARGS...: one `nuage bench --json` run; its report in $work/OUT.json.
bench() {
    local out="$work/$1.json"
    shift
    if ! "$bin" bench --endpoint "$endpoint" --json --quiet "$@" > "$out" 2> "$work/bench.err"; then
        log "nuage bench $* failed: $(tail -3 "$work/bench.err")"
        [[ -s "$out" ]] || echo '{}' > "$out"
    fi
}
# field OUT JQ: a number from a report, or "-".
field() { jq -r "($2) // \"-\" | if type == \"number\" then tostring else \"-\" end" "$work/$1.json"; }

if ((local_server)); then
    row "server RSS idle, empty store" "$(calc "$rss_empty_kib / 1024" 1)" MiB - "<" 256
    row "start-up, empty store (port answers)" "$empty_start_s" s - "<" 1
fi

# ---- baselines --------------------------------------------------------------
# The disk's own fsync'd sequential write bandwidth, in MB/s (10^6 bytes).
disk_mbps() {
    local line
    line="$(LC_ALL=C dd if=/dev/zero of="$work/dd" bs=1M count="$dd_mib" conv=fsync 2>&1 | tail -1)"
    rm -f "$work/dd"
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 3.2 s, 336 MB/s"
    awk '{ for (i = 1; i <= NF; i++) if ($i == "copied,") { printf "%.1f", $1 / $(i + 1) / 1e6; exit } }' <<< "$line"
}
# Loopback TCP bandwidth, one stream, in MB/s: iperf3 when installed (or
# installable), else a python3 socket sender/receiver over 127.0.0.1.
if command -v iperf3 > /dev/null || apt-get install -y iperf3 > /dev/null 2>&1; then
    loopback_method="iperf3 -c 127.0.0.1 -t $loop_secs (1 stream)"
else
    loopback_method="python3 socket sender/receiver over 127.0.0.1 ($loop_secs s, 1 stream)"
fi
loopback_mbps() {
    local p
    p="$(free_port)"
    if [[ "$loopback_method" == iperf3* ]]; then
        iperf3 -s -1 -p "$p" > /dev/null 2>&1 &
        iperf=$!
        sleep 0.3
        iperf3 -c 127.0.0.1 -p "$p" -t "$loop_secs" -J | jq -r '.end.sum_received.bits_per_second / 8e6 | . * 10 | round / 10'
        wait "$iperf" 2> /dev/null || true
        iperf=""
    else
        python3 - "$p" "$loop_secs" << 'EOF'
import socket, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.bind(("127.0.0.1", port)); srv.listen(1)
got = [0, 0.0]
def receive():
    c, _ = srv.accept(); buf = bytearray(1 << 20); t0 = time.monotonic()
    while (n := c.recv_into(buf)): got[0] += n
    got[1] = time.monotonic() - t0
t = threading.Thread(target=receive); t.start()
s = socket.create_connection(("127.0.0.1", port)); chunk = b"\0" * (1 << 20); end = time.monotonic() + secs
while time.monotonic() < end: s.sendall(chunk)
s.close(); t.join()
print(f"{got[0] / got[1] / 1e6:.1f}")
EOF
    fi
}

log "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "endpoint $endpoint, data in $work, objects $objects, quick=$quick"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- large objects ----------------------------------------------------------
disk="$(disk_mbps)"
log "disk: dd ${dd_mib} MiB conv=fsync: $disk MB/s"
bench put_large --workload put --size "$large" --concurrency 16 --operations "$large_ops"
row "PUT $large c16 (MB/s vs disk dd)" "$(field put_large .total.mb_per_s)" MB/s "$disk" ">=" 0.80

loop="$(loopback_mbps)"
log "loopback: $loop MB/s ($loopback_method)"
bench get_large --workload get --size "$large" --concurrency 16 --objects 16 --operations "$large_ops"
row "GET $large c16 (MB/s vs loopback TCP)" "$(field get_large .total.mb_per_s)" MB/s "$loop" ">=" 0.50

# ---- small objects ----------------------------------------------------------
bench put_small --workload put --size 4KiB --concurrency 16 --duration "$duration" --warmup "$warmup"
row "PUT 4KiB c16" "$(field put_small .total.ops_per_s)" op/s - ">=" 3000
bench get_small --workload get --size 4KiB --concurrency 16 --objects 1000 --duration "$duration" --warmup "$warmup"
row "GET 4KiB c16" "$(field get_small .total.ops_per_s)" op/s - ">=" 10000
bench get_one --workload get --size 4KiB --concurrency 1 --objects 100 --duration "$duration" --warmup "$warmup"
row "GET 4KiB c1 median" "$(field get_one .total.latency_ms.p50)" ms - "<" 1

# ---- memory: 16 clients each uploading one big object -----------------------
avail_kib() { df -Pk "$work" | awk 'NR == 2 { print $4 }'; }
if ((local_server)); then
    mem_bytes="$(numfmt --from=iec "${mem_size%iB}")"
    need_kib=$((16 * mem_bytes / 1024 + 4 * 1024 * 1024))
    if (($(avail_kib) < need_kib)); then
        log "memory run: 16 x $mem_size needs $((need_kib >> 20)) GiB free with margin, $(($(avail_kib) >> 20)) GiB free: not run"
        row "server RSS peak, 16 x $mem_size PUT" - MiB - "<" 256
    else
        echo 0 > "$work/rss.max"
        (
            max=0
            while kill -0 "$server" 2> /dev/null; do
                r="$(rss_kib "$server" 2> /dev/null || echo 0)"
                ((${r:-0} > max)) && max="$r" && echo "$max" > "$work/rss.max"
                sleep 0.2
            done
        ) &
        sampler=$!
        bench memory --workload put --size "$mem_size" --concurrency 16 --operations 16
        kill "$sampler" 2> /dev/null || true
        wait "$sampler" 2> /dev/null || true
        sampler=""
        log "memory run: $(field memory .total.count) uploads, $(field memory .total.mb_per_s) MB/s; VmHWM $(($(rss_kib "$server" VmHWM:) / 1024)) MiB"
        row "server RSS peak, 16 x $mem_size PUT" "$(calc "$(cat "$work/rss.max") / 1024" 1)" MiB - "<" 256
    fi
    row "server RSS after it" "$(calc "$(rss_kib "$server") / 1024" 1)" MiB - "<" 256
fi

# ---- listing: the bucket of $objects objects ----------------------------------
bucket="nuage-targets-$(date +%s)"
dirs=$(((objects + per_dir - 1) / per_dir))
if (($(avail_kib) < objects * 16 + 2 * 1024 * 1024)); then
    log "warning: $objects objects may not fit in $(($(avail_kib) >> 20)) GiB free"
fi
log "populating $bucket: $objects objects of 4 KiB in $dirs directories d00000/.. (~$((objects / 2000 / 60)) min at 2,000 PUT/s)"
t0="$(now)"
for ((d = 0; d < dirs; d++)); do
    n=$((d == dirs - 1 ? objects - d * per_dir : per_dir))
    bench populate --workload put --bucket "$bucket" --prefix "$(printf 'd%05d/' "$d")" --size 4KiB \
        --concurrency 16 --operations "$n" --keep
    if ((d % 50 == 49)); then
        log "  $(((d + 1) * per_dir)) objects, $(calc "($d + 1) * $per_dir / ($(now) - $t0)" 0) PUT/s"
    fi
done
populate_s="$(calc "$(now) - $t0" 1)"
log "populated in $populate_s s ($(calc "$objects / $populate_s" 0) PUT/s)"

pages=$(((objects + 999) / 1000))
bench list_flat --workload list --bucket "$bucket" --reuse-objects --objects 1 --keep \
    --concurrency 1 --list-page 1000 --operations "$pages"
row "LIST page of 1000, no delimiter, median" "$(field list_flat .total.latency_ms.p50)" ms - "<" 10
row "full listing of $objects keys ($pages pages)" "$(field list_flat .duration_s)" s - "<" 10
delim_ops=100
bench list_delim --workload list --bucket "$bucket" --reuse-objects --objects 1 --keep \
    --concurrency 1 --list-page 1000 --delimiter / --operations "$delim_ops"
row "LIST page, delimiter / ($dirs prefixes), median" "$(field list_delim .total.latency_ms.p50)" ms - "<" 10

# ---- memory and start-up with the objects stored -----------------------------
if ((local_server)); then
    row "server RSS after populating $objects objects" "$(calc "$(rss_kib "$server") / 1024" 1)" MiB - "<" 256
    log "RSS after populating: RssAnon $(($(rss_kib "$server" RssAnon:) / 1024)) MiB, RssFile $(($(rss_kib "$server" RssFile:) / 1024)) MiB"
    stop_server
    start_server
    log "start-up: empty store $empty_start_s s; with $objects objects: port $started_port_s s, log line $started_log_s s"
    row "start-up with $objects objects (port answers)" "$started_port_s" s - "<" 1
    row "start-up with $objects objects (log line)" "$started_log_s" s - "<" 1
    row "server RSS idle after restart with $objects objects" "$(calc "$(rss_kib "$server") / 1024" 1)" MiB - "<" 256
else
    log "the listing bucket $bucket on $endpoint keeps its $objects objects: delete it yourself"
fi
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report ------------------------------------------------------------------
{
    printf '\n%-62s %12s %-5s %10s %7s %9s  %s\n' target measured unit baseline ratio goal status
    for r in "${rows[@]}"; do
        IFS=$'\t' read -r name value unit baseline ratio goal status <<< "$r"
        printf '%-62s %12s %-5s %10s %7s %9s  %s\n' "$name" "$value" "$unit" "$baseline" "$ratio" "$goal" "$status"
    done
    printf '\nbaselines: disk = dd %s MiB conv=fsync; loopback = %s\n' "$dd_mib" "$loopback_method"
    printf 'machine: %s cores, %s; load average %s at start, %s at end\n' "$(nproc)" \
        "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)" "$load_start" "$load_end"
}
if [[ -n "$json_out" ]]; then
    printf '%s\n' "${rows[@]}" | jq -R -s \
        --arg endpoint "$endpoint" --arg cpu "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)" \
        --arg nproc "$(nproc)" --arg load_start "$load_start" --arg load_end "$load_end" \
        --arg loopback "$loopback_method" --arg objects "$objects" --arg quick "$quick" '
        def num: if . == "-" then null else tonumber end;
        { endpoint: $endpoint, quick: ($quick == "1"), objects: ($objects | tonumber),
          machine: { nproc: ($nproc | tonumber), cpu: $cpu, load_start: $load_start, load_end: $load_end },
          loopback_method: $loopback,
          rows: [ split("\n")[] | select(length > 0) | split("\t")
                  | { target: .[0], value: (.[1] | num), unit: .[2], baseline: (.[3] | num),
                      ratio: (.[4] | num), goal: .[5], status: .[6] } ] }' > "$json_out"
    log "wrote $json_out"
fi
