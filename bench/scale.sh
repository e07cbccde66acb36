#!/usr/bin/env bash
# The coordinator at fleet scale, with the load split over several processes.
#
#   bench/scale.sh N PROCS [POINTS]     one run: prints one Markdown table row
#   bench/scale.sh --header             the table's header
#
# Starts one `fleetbench serve` on loopback, then PROCS `fleetbench-loadgen
# --stream` processes with N/PROCS simulated agent sessions each (one TCP
# connection per session). When every process says its sessions are welcomed,
# one sweep of POINTS batch sizes (default 5) is started on all agents; each
# agent streams its POINTS results as fast as it can (INTERVAL_MS > 0: one
# every INTERVAL_MS instead), and each process writes its raw figures (every
# accepted result's send-to-ack time and ack time). This script merges them:
#
#   sessions held   Welcomes received (sessions lost during the run in brackets)
#   acked / stored  results acknowledged as accepted / rows of this sweep in
#                   the store's `results` table, counted after the coordinator
#                   was killed with SIGKILL (so an ack really meant durable)
#   results/s       acked results over the streaming window: first result
#                   sent to last ack, over all processes (one wall clock);
#                   and from just before the sweep is started (so including
#                   the coordinator's dispatch of the sweep to every agent)
#   p50/p99/max     send-to-ack over all results of all processes
#   RSS             coordinator VmRSS idle and with every session connected,
#                   VmHWM (peak) at the end, and (peak - idle) per session
#   CPU             coordinator utime+stime from the sweep's start to the last
#                   process's figures, and its share of one core over that
#                   time; the same for the loadgen processes together, and for
#                   everything else on the machine (from /proc/stat)
#   load            1-minute load average before and after the run
#
# Environment: BIN_DIR (default ${CARGO_TARGET_DIR:-target}/release), RAMP
# (sessions opened per second over all processes, default 2000), INTERVAL_MS
# (default 0), HEARTBEAT (the coordinator's --heartbeat-interval, default 30),
# KEEP=1 keeps the temporary directory (printed on stderr), TIMELINE=1 prints
# acks and their latency per second of the run on stderr.
set -euo pipefail

header() {
    echo "| sessions | procs | held (lost) | results acked | rows stored | window (s) | results/s | results/s from sweep start | ack p50 (ms) | ack p99 (ms) | ack max (ms) | RSS idle (MB) | RSS connected (MB) | peak RSS (MB) | KB/session | coordinator CPU (s) | coordinator CPU | loadgens CPU | other CPU | load before → after |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

if [[ ${1:-} == --header ]]; then
    header
    exit 0
fi
if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 N PROCS [POINTS] | $0 --header" >&2
    exit 2
fi
n=$1
procs=$2
points=${3:-5}
ramp=${RAMP:-2000}
interval=${INTERVAL_MS:-0}
heartbeat=${HEARTBEAT:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-$here/target}/release}
for b in fleetbench fleetbench-loadgen; do
    if [[ ! -x $bin/$b ]]; then
        echo "$bin/$b not found: cargo build --release -p fleetbench-bench -p fleetbench-coordinator (or set BIN_DIR)" >&2
        exit 1
    fi
done
if ((procs < 1 || n < procs)); then
    echo "need 1 <= PROCS <= N" >&2
    exit 2
fi

tmp=$(mktemp -d)
coord=""
loadgens=()
cleanup() {
    local pid
    for pid in ${coord:+"$coord"} ${loadgens[@]+"${loadgens[@]}"}; do
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

# Each process needs a descriptor per session; the coordinator one per agent.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# utime + stime in clock ticks (fields 14 and 15; the command name may hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
now() { date +%s.%N; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }
loadgen_ticks() {
    local pid sum=0
    for pid in "${loadgens[@]}"; do
        sum=$((sum + $(cpu_ticks "$pid")))
    done
    echo "$sum"
}

load_before=$(loadavg)
RUST_LOG=warn "$bin/fleetbench" serve --listen 127.0.0.1:0 --data "$tmp/data" \
    --heartbeat-interval "$heartbeat" >"$tmp/coordinator.out" 2>"$tmp/coordinator.err" &
coord=$!
for _ in $(seq 300); do
    grep -q '^listening on ' "$tmp/coordinator.out" 2>/dev/null && break
    kill -0 "$coord" 2>/dev/null || { cat "$tmp/coordinator.err" >&2; exit 1; }
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$tmp/coordinator.out" | head -n1)
[[ -n $addr ]] || { echo "the coordinator did not say where it listens" >&2; exit 1; }
url=http://$addr
sleep 0.5
rss_idle=$(status_kb "$coord" VmRSS)

# N/PROCS sessions each, the first N%PROCS processes one more.
per_ramp=$(((ramp + procs - 1) / procs))
for ((p = 0; p < procs; p++)); do
    k=$((n / procs + (p < n % procs ? 1 : 0)))
    "$bin/fleetbench-loadgen" --stream "$url" --agents "$k" --name-prefix "p$p" \
        --points "$points" --ramp-per-second "$per_ramp" --interval-ms "$interval" \
        --out "$tmp/lg$p.json" --hold-seconds 3600 >"$tmp/lg$p.out" 2>"$tmp/lg$p.err" &
    loadgens+=("$!")
done

# Wait until every process has its sessions welcomed (or gave up on some).
deadline=$((SECONDS + 600))
for ((p = 0; p < procs; p++)); do
    until grep -q '^ready ' "$tmp/lg$p.out" 2>/dev/null; do
        kill -0 "${loadgens[p]}" 2>/dev/null || { echo "loadgen $p died" >&2; cat "$tmp/lg$p.err" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "loadgen $p not ready after 600 s" >&2; exit 1; }
        sleep 0.2
    done
done
held=$(cat "$tmp"/lg*.out | awk -F'[ /]' '/^ready / { s += $2 } END { print s }')
echo "$held/$n sessions welcomed over $procs processes at $url" >&2
sleep 1
rss_conn=$(status_kb "$coord" VmRSS)

t0=$(now)
coord0=$(cpu_ticks "$coord")
lg0=$(loadgen_ticks)
busy0=$(busy_ticks)
read -r sweep hosts < <("$bin/fleetbench-loadgen" --start-sweep "$url" --points "$points")
[[ -n ${sweep:-} ]] || { echo "could not start the sweep" >&2; exit 1; }
echo "sweep $sweep on $hosts hosts" >&2
((hosts == held)) || echo "  WARNING: the sweep has $hosts hosts, $held sessions were welcomed" >&2

deadline=$((SECONDS + 1800))
for ((p = 0; p < procs; p++)); do
    until [[ -f $tmp/lg$p.json ]]; do
        kill -0 "${loadgens[p]}" 2>/dev/null || { echo "loadgen $p died" >&2; cat "$tmp/lg$p.err" >&2; exit 1; }
        ((SECONDS < deadline)) || { echo "loadgen $p did not finish in 1800 s" >&2; exit 1; }
        sleep 0.2
    done
done
t1=$(now)
coord1=$(cpu_ticks "$coord")
lg1=$(loadgen_ticks)
busy1=$(busy_ticks)
hwm=$(status_kb "$coord" VmHWM)

# Durable before the ack: count the rows after a hard kill.
kill -9 "$coord"
wait "$coord" 2>/dev/null || true
coord=""
stored=$(sqlite3 "$tmp/data/fleetbench.db" "SELECT count(*) FROM results WHERE sweep_id = '$sweep';")
for pid in "${loadgens[@]}"; do
    kill "$pid" 2>/dev/null || true
done
wait 2>/dev/null || true
loadgens=()
load_after=$(loadavg)

python3 - "$n" "$procs" "$points" "$held" "$stored" "$rss_idle" "$rss_conn" "$hwm" \
    "$t0" "$t1" "$coord0" "$coord1" "$lg0" "$lg1" "$busy0" "$busy1" \
    "$load_before" "$load_after" "$tmp"/lg*.json <<'EOF'
import json, os, sys

(n, procs, points, held, stored, rss_idle, rss_conn, hwm) = map(int, sys.argv[1:9])
t0, t1 = float(sys.argv[9]), float(sys.argv[10])
coord0, coord1, lg0, lg1, busy0, busy1 = map(int, sys.argv[11:17])
load_before, load_after = sys.argv[17], sys.argv[18]
files = [json.load(open(f)) for f in sys.argv[19:]]

lat = sorted(v for f in files for v in f["latency_us"])
acked = len(lat)
lost = sum(f["lost"] for f in files)
unfinished = sum(f["held"] - f["finished"] for f in files)
rejected = sum(f["rejected"] for f in files)
first = min(f["first_send_unix_us"] for f in files if f["first_send_unix_us"])
last = max(f["last_ack_unix_us"] for f in files if f["last_ack_unix_us"])
window = (last - first) / 1e6

def pct(q):  # linear interpolation, as fleetbench_common::stats::percentile_sorted
    if not lat:
        return float("nan")
    h = (len(lat) - 1) * q
    lo = int(h)
    hi = min(lo + 1, len(lat) - 1)
    return (lat[lo] + (h - lo) * (lat[hi] - lat[lo])) / 1e3

wall = t1 - t0
coord_s = (coord1 - coord0) / 100
lg_s = (lg1 - lg0) / 100
other_s = max(0.0, (busy1 - busy0) / 100 - coord_s - lg_s)
held_txt = f"{held}" + (f" ({lost})" if lost else "")
print(
    f"| {n} | {procs} | {held_txt} | {acked} | {stored} | {window:.2f} | {acked / window:.0f} "
    f"| {acked / (last / 1e6 - t0):.0f} "
    f"| {pct(0.5):.1f} | {pct(0.99):.1f} | {lat[-1] / 1e3:.1f} "
    f"| {rss_idle / 1024:.1f} | {rss_conn / 1024:.1f} | {hwm / 1024:.1f} "
    f"| {(hwm - rss_idle) / max(held, 1):.1f} | {coord_s:.2f} | {100 * coord_s / wall:.0f}% "
    f"| {100 * lg_s / wall:.0f}% | {100 * other_s / wall:.0f}% | {load_before} → {load_after} |"
)
print(
    f"  window for CPU {wall:.2f} s; {unfinished} sessions unfinished, {rejected} results rejected, "
    f"{lost} sessions lost; {acked} of {held * points} results acked; "
    f"loadgens' own CPU while streaming {sum(f['cpu_s_stream'] for f in files):.2f} s",
    file=sys.stderr,
)
fin = sorted(v for f in files for v in f["finished_unix_us"])
if fin:
    since = lambda us: us / 1e6 - t0
    p99 = fin[min(len(fin) - 1, int(0.99 * len(fin)))]
    print(
        f"  hosts finished (SweepFinished acked) after the sweep start: first {since(fin[0]):.2f} s, "
        f"99% {since(p99):.2f} s, last but one {since(fin[-2] if len(fin) > 1 else fin[-1]):.2f} s, "
        f"last {since(fin[-1]):.2f} s (its ack waits for the sweep's reports); last result ack {since(last):.2f} s",
        file=sys.stderr,
    )
    early = sorted(us for f in files for at, us in zip(f["ack_unix_us"], f["latency_us"]) if at < fin[0])
    if early:
        print(
            f"  results acked before any host finished: {len(early)}, send-to-ack p50 "
            f"{early[len(early) // 2] / 1e3:.1f} ms, p99 {early[min(len(early) - 1, int(0.99 * len(early)))] / 1e3:.1f} ms",
            file=sys.stderr,
        )
if os.environ.get("TIMELINE") == "1":
    # Per second since the sweep's start: results acked in it and their send-to-ack.
    buckets = {}
    for f in files:
        for at, us in zip(f["ack_unix_us"], f["latency_us"]):
            buckets.setdefault(int(at / 1e6 - t0), []).append(us / 1e3)
    print("  second  acked  p50 ms  p99 ms  max ms", file=sys.stderr)
    for sec in sorted(buckets):
        b = sorted(buckets[sec])
        print(f"  {sec:6d} {len(b):6d} {b[len(b) // 2]:7.1f} {b[min(len(b) - 1, int(0.99 * len(b)))]:7.1f} {b[-1]:7.1f}", file=sys.stderr)
if acked != stored:
    print(f"  MISMATCH: {acked} acked but {stored} rows stored", file=sys.stderr)
EOF
