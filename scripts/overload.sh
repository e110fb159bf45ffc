#!/usr/bin/env bash
# overload.sh — the overload benchmark of docs/PERFORMANCE.md: a fresh 3-node cluster on
# loopback takes 2,000 concurrent client connections for SECS seconds, half of them
# writing 1 MiB values and half 100-byte values, as fast as they can. Reports each node's
# peak memory, the term before and after (elections), and how fast refusals come back.
# Usage: scripts/overload.sh [SECS (default 20)] [DIR (default /tmp/raftkv-overload)]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/common.sh

SECS=${1:-20}
DIR=${2:-/tmp/raftkv-overload}
BIN=${BIN:-target/release/raftkv}  # BIN=path: another build (A/B runs)
BENCH=target/release/examples/bench
NODES=127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003

refuse_busy_ports overload.sh
cargo build --release --bin raftkv --example bench
rm -rf "$DIR" && mkdir -p "$DIR"
# EXTRA_CONFIG: more top-level keys for every node (e.g. "store_cache_mb = 64").
# BENCH_NICE: the scheduling niceness of the 2,000 bulk clients (default 0, the same as the
# nodes). On a 2-core machine they share the CPUs with the nodes; BENCH_NICE=10 lets the
# nodes run first, roughly as if the clients were on other hosts.
# CLIENT_CGROUP=1: the 2,000 bulk clients run in a cgroup of their own, which weighs as much
# as one thread against the nodes' threads: the closest this machine comes to clients on
# other hosts. Needs a writable cgroup cpu controller (v1 cpu.shares or v2 cpu.weight).
group=""
if [[ ${CLIENT_CGROUP:-0} == 1 ]]; then
	if [[ -w /sys/fs/cgroup/cpu/cgroup.procs ]]; then
		group=/sys/fs/cgroup/cpu/raftkv-overload-clients
		mkdir -p "$group" && echo 1024 >"$group/cpu.shares"
	elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]]; then
		group=/sys/fs/cgroup/raftkv-overload-clients
		echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
		mkdir -p "$group" && echo 100 >"$group/cpu.weight"
	else
		echo "overload.sh: CLIENT_CGROUP=1 needs a writable cgroup cpu controller" >&2
		exit 1
	fi
fi
# clients CMD...: runs CMD at BENCH_NICE, in the clients' cgroup when there is one.
clients() {
	if [[ -n $group ]]; then
		bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$group" nice -n "${BENCH_NICE:-0}" "$@"
	else
		nice -n "${BENCH_NICE:-0}" "$@"
	fi
}
make_cluster_configs "$BIN" "$DIR" "${EXTRA_CONFIG:-}"
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null; wait 2>/dev/null; drop_data "$DIR"; [[ -z $group ]] || rmdir "$group" 2>/dev/null || true' EXIT
for k in 1 2 3; do
	RUST_LOG=${RUST_LOG:-info} "$BIN" serve --config "$DIR/node$k.toml" >"$DIR/node$k.log" 2>&1 &
	pids+=($!)
done
term() { curl -s --max-time 2 "http://127.0.0.1:800$1/status" | sed -n 's/.*"term":\([0-9]*\).*/\1/p'; }
for _ in $(seq 100); do
	[[ $(curl -s --max-time 1 http://127.0.0.1:8001/status) == *'"leader":'[0-9]* ]] && break
	sleep 0.1
done
before="$(term 1) $(term 2) $(term 3)"
ulimit -n 65536 2>/dev/null || true
clients "$BENCH" --json --nodes "$NODES" --connections 1000 --value-bytes 1048576 --keys fresh \
	--duration "$SECS" --window 5 --key-prefix big- --verify >"$DIR/big.json" 2>"$DIR/big.txt" &
big=$!
clients "$BENCH" --json --nodes "$NODES" --connections 1000 --value-bytes 100 --keys fresh \
	--duration "$SECS" --window 5 --key-prefix small- --verify >"$DIR/small.json" 2>"$DIR/small.txt" &
small=$!
# A probe: one more client writing 1 MiB values, at a higher scheduling priority (where
# the script may raise it), so that its figures show how fast the cluster answers a
# client that gets a core, rather than how long 2,000 client threads wait for two.
probe_nice=-10
[[ $(nice -n "$probe_nice" nice 2>/dev/null) == "$probe_nice" ]] || probe_nice=0
nice -n "$probe_nice" "$BENCH" --json --nodes "$NODES" --connections 1 --value-bytes 1048576 \
	--keys fresh --duration "$SECS" --window 5 --key-prefix probe- --verify \
	>"$DIR/probe.json" 2>"$DIR/probe.txt" &
probe=$!
wait "$big" "$small" "$probe"
after="$(term 1) $(term 2) $(term 3)"
echo "overload: 2,000 connections for $SECS s (1,000 writing 1 MiB, 1,000 writing 100 B), $(nproc) cores, clients at nice ${BENCH_NICE:-0}${group:+ in cgroup $group}; probe: 1 more writing 1 MiB at nice $probe_nice"
for k in 1 2 3; do
	awk -v k="$k" '/VmHWM/ { printf "node %s: peak RSS %d MiB\n", k, $2 / 1024 }' "/proc/${pids[$((k - 1))]}/status"
done
echo "terms before: $before; after: $after"
for f in big small probe; do
	python3 - "$DIR/$f.json" "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
e = d["errors_by_kind"]
print(f"{sys.argv[2]}: {d['writes']} writes, {d['writes_per_s']:.0f}/s, p99 {d['p99_ms']} ms; "
      f"refused (503) {e['unavailable_503']}, p99 {d['refused_p99_ms']} ms, max {d['refused_max_ms']} ms; "
      f"504 {e['timeout_504']}, connection errors {e['connection']}, other {e['other']}; "
      f"read back: {d['verified']} intact, {d['lost']} missing or different, {d['unchecked']} not checked")
PY
done
# How fast the nodes themselves answered 503 (the clients' figures above include waiting
# for a core among 2,000 client threads): from each node's latency histogram.
for k in 1 2 3; do curl -s --max-time 5 "http://127.0.0.1:800$k/metrics"; done | python3 -c '
import re, sys
buckets = {}
for line in sys.stdin:
    m = re.match(r"raftkv_http_request_duration_seconds_bucket\{(.*)\} (\S+)", line)
    if not m:
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1)))
    if labels.get("route") == "/kv" and labels.get("class") == "5xx":
        le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        buckets[le] = buckets.get(le, 0) + float(m.group(2))
total = buckets.get(float("inf"), 0)
if total == 0:
    print("nodes: no 5xx answers on /kv")
    sys.exit()
within = buckets.get(0.1, 0)
p99 = min(le for le, n in buckets.items() if n >= 0.99 * total)
slowest = min(le for le, n in buckets.items() if n >= total)
print(f"nodes: {int(total)} 5xx answers on /kv, {100 * within / total:.1f}% within 100 ms "
      f"({int(total - within)} slower), p99 <= {p99 * 1000:g} ms, slowest <= {slowest * 1000:g} ms "
      "(histogram buckets)")
'
# Writes by outcome, as the nodes count them (refused by the core, or shed at the gateway
# while the core refuses).
for k in 1 2 3; do curl -s --max-time 5 "http://127.0.0.1:800$k/metrics"; done | python3 -c '
import re, sys
counts = {}
for line in sys.stdin:
    m = re.match(r"raftkv_proposals_total\{(.*)\} (\S+)", line)
    if m:
        result = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(1))).get("result", "?")
        counts[result] = counts.get(result, 0) + int(float(m.group(2)))
print("proposals: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())))
'
grep -h "ERROR\|panicked" "$DIR"/node*.log | head -5 || true
