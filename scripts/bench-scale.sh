#!/usr/bin/env bash
# bench-scale.sh — the scale benchmark of docs/PERFORMANCE.md, end to end on this machine:
# a fresh 3-node raftkv cluster on loopback is filled with fresh 1 KiB keys over 64
# connections, then measured: memory and disk per node, a follower killed with -9 and
# restarted, a follower with a wiped data directory, a whole-cluster restart, and 100-byte
# writes at 1 and 64 connections on an empty cluster. With etcd installed
# (apt-get install etcd-server) the same loads run against a local 3-member etcd 3.4.
# See --help.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/common.sh

PROG=scripts/bench-scale.sh
KEYS=800000
DIR=/tmp/raftkv-bench-scale
ETCD=auto
ETCD_SECS=120
SMALL_SECS=20

usage() {
	cat <<EOF
Usage: $PROG [--keys N] [--dir DIR] [--etcd|--no-etcd] [--etcd-secs S] [--small-secs S]

  --keys N        fill the raftkv cluster with N fresh 1 KiB keys (default $KEYS)
  --dir DIR       data, configs and logs (default $DIR; wiped first)
  --etcd          require etcd (default: run it when 'etcd' is on PATH)
  --no-etcd       skip etcd
  --etcd-secs S   seconds of the etcd fill (default $ETCD_SECS; etcd is slower, so a
                  fixed time rather than N keys)
  --small-secs S  seconds of each 100-byte run (default $SMALL_SECS)

Uses ports 8001-8003/9001-9003 (raftkv) and 2379/2380, 22379/22380, 32379/32380 (etcd):
stop ./run-cluster.sh first. Writes a summary to DIR/summary.txt and every bench report
(JSON) to DIR/*.json.
EOF
}

while (($#)); do
	case $1 in
	--keys) KEYS=$2; shift 2 ;;
	--dir) DIR=$2; shift 2 ;;
	--etcd) ETCD=yes; shift ;;
	--no-etcd) ETCD=no; shift ;;
	--etcd-secs) ETCD_SECS=$2; shift 2 ;;
	--small-secs) SMALL_SECS=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "$PROG: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
if [[ $ETCD == auto ]]; then
	if command -v etcd >/dev/null 2>&1; then ETCD=yes; else ETCD=no; fi
fi

BIN=target/release/raftkv
BENCH=target/release/examples/bench
NODES=127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
ETCD_NODES=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
SUMMARY=$DIR/summary.txt

say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

trap 'stop_all; [[ $ETCD == yes ]] && scripts/etcd-cluster.sh stop "$DIR/etcd" >/dev/null 2>&1; drop_data "$DIR"' EXIT

refuse_busy_ports "$PROG"
rm -rf "$DIR"
mkdir -p "$DIR"
: >"$SUMMARY"
cargo build --release --bin raftkv --example bench
make_cluster_configs "$BIN" "$DIR"

say "raftkv scale benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ { printf "%d GiB", $2/1048576 }' /proc/meminfo)"
say "git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# ----- small values on an empty cluster -----
say ""
say "== 100-byte values, empty cluster, ${SMALL_SECS} s each"
for k in 1 2 3; do start_node "$k"; done
for k in 1 2 3; do wait_serving "$k"; done
wait_leader
for c in 1 64; do
	bench "small-$c" --nodes "$NODES" --connections "$c" --value-bytes 100 --keys fresh \
		--duration "$SMALL_SECS" --window 10
	say "raftkv, $c connection(s): $(json_field "$DIR/small-$c.json" writes_per_s) writes/s, p50 $(json_field "$DIR/small-$c.json" p50_ms) ms, p99 $(json_field "$DIR/small-$c.json" p99_ms) ms, errors $(json_field "$DIR/small-$c.json" errors)"
done
stop_all
rm -rf "$DIR"/node{1,2,3}


# ----- fill -----
for k in 1 2 3; do start_node "$k"; done
for k in 1 2 3; do wait_serving "$k"; done
wait_leader
say ""
say "== fill: $KEYS fresh keys, 1 KiB values, 64 connections"
bench fill --nodes "$NODES" --connections 64 --value-bytes 1024 --keys fresh \
	--total-keys "$KEYS" --window 10 --key-prefix fill-
say "throughput $(json_field "$DIR/fill.json" writes_per_s) writes/s, p99 $(json_field "$DIR/fill.json" p99_ms) ms, errors $(json_field "$DIR/fill.json" errors), leader changes $(json_field "$DIR/fill.json" leader_changes)"
say "min window / first window: $(json_field "$DIR/fill.json" min_over_first_window_throughput); max window p99: $(json_field "$DIR/fill.json" max_window_p99_ms) ms"
sleep 3
live=$((KEYS * (1024 + 16)))
say "live data: $((live / 1048576)) MiB (keys x (value + key))"
for k in 1 2 3; do
	pid=$(cat "$DIR/node$k.pid")
	# Blocks in use: redb's file is sparse (its apparent size runs ahead of what it holds).
	disk=$(($(du -sk "$DIR/node$k" | cut -f1) * 1024))
	log=$(($(du -sk "$DIR/node$k/log" | cut -f1) * 1024))
	say "node $k: RSS $(rss_mib "$pid") MiB (peak $(hwm_mib "$pid") MiB), disk $((disk / 1048576)) MiB ($(awk -v d="$disk" -v l="$live" 'BEGIN { printf "%.2f", d / l }')x live data; log $((log / 1048576)) MiB, store file $(($(stat -c %s "$DIR/node$k/store.redb") / 1048576)) MiB apparent)"
done

# ----- follower kill -9 and restart, while writes go on -----
say ""
say "== follower killed with kill -9 and restarted, 16 connections writing"
L=$(leader)
F=$(((L % 3) + 1))
bench during-kill --nodes "$NODES" --connections 16 --value-bytes 1024 --keys fresh \
	--duration 40 --window 5 --key-prefix kill- &
BENCH_PID=$!
sleep 5
kill9 "$F"
sleep 10
t0=$(now)
start_node "$F"
wait_serving "$F"
serving=$(since "$t0")
target=$(field "$(status "$(leader)")" commit_index)
caught=$(wait_caught_up "$F" "$target")
say "node $F: serving after ${serving} s, caught up (applied the leader's commit index at restart) after $(awk -v a="$serving" -v b="$caught" 'BEGIN { printf "%.2f", a + b }') s"
wait "$BENCH_PID" || true
say "writes meanwhile: $(json_field "$DIR/during-kill.json" writes_per_s) writes/s, p99 $(json_field "$DIR/during-kill.json" p99_ms) ms, errors $(json_field "$DIR/during-kill.json" errors)"

# ----- wiped follower -----
say ""
say "== follower with a wiped data directory, 16 connections writing"
L=$(leader)
F=$(((L % 3) + 1))
bench during-wipe --nodes "$NODES" --connections 16 --value-bytes 1024 --keys fresh \
	--duration 60 --window 5 --key-prefix wipe- &
BENCH_PID=$!
sleep 5
kill9 "$F"
rm -rf "$DIR/node$F"
t0=$(now)
start_node "$F"
wait_serving "$F"
target=$(field "$(status "$(leader)")" commit_index)
caught=$(wait_caught_up "$F" "$target")
say "node $F: caught up after $(since "$t0") s ($(du -sm "$DIR/node$F" | cut -f1) MiB on disk after)"
grep -h "sending snapshot\|installed snapshot\|steps down\|becomes leader" "$DIR"/node*.log | sort |
	awk -v t="$(date -u -d @"${t0%.*}" +%Y-%m-%dT%H:%M:%S)" 'substr($1, 2, 19) >= t' | tee -a "$SUMMARY" || true
wait "$BENCH_PID" || true
say "writes meanwhile: $(json_field "$DIR/during-wipe.json" writes_per_s) writes/s, p99 $(json_field "$DIR/during-wipe.json" p99_ms) ms, errors $(json_field "$DIR/during-wipe.json" errors)"

# ----- whole-cluster restart -----
say ""
say "== whole-cluster restart (kill -9 all, start all)"
stop_all
t0=$(now)
for k in 1 2 3; do start_node "$k"; done
for ((i = 0; i < 600; i++)); do
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:8001/kv/fill-0000000000" || true)
	[[ $code == 200 ]] && break
	sleep 0.05
done
say "first linearizable read (GET via node 1) after $(since "$t0") s (HTTP $code)"
stop_all

# ----- etcd, same loads -----
if [[ $ETCD == yes ]]; then
	say ""
	say "== etcd $(etcd --version 2>/dev/null | head -1 | awk '{ print $3 }'), 3 members, same loads"
	scripts/etcd-cluster.sh start "$DIR/etcd" >/dev/null
	for c in 1 64; do
		bench "etcd-small-$c" --target etcd --nodes "$ETCD_NODES" --connections "$c" \
			--value-bytes 100 --keys fresh --duration "$SMALL_SECS" --window 10
		say "etcd, $c connection(s), 100 B: $(json_field "$DIR/etcd-small-$c.json" writes_per_s) writes/s, p50 $(json_field "$DIR/etcd-small-$c.json" p50_ms) ms, p99 $(json_field "$DIR/etcd-small-$c.json" p99_ms) ms, errors $(json_field "$DIR/etcd-small-$c.json" errors)"
	done
	bench etcd-fill --target etcd --nodes "$ETCD_NODES" --connections 64 --value-bytes 1024 \
		--keys fresh --duration "$ETCD_SECS" --window 10
	say "etcd fill ${ETCD_SECS} s, 1 KiB: $(json_field "$DIR/etcd-fill.json" writes) keys, $(json_field "$DIR/etcd-fill.json" writes_per_s) writes/s, p99 $(json_field "$DIR/etcd-fill.json" p99_ms) ms, max window p99 $(json_field "$DIR/etcd-fill.json" max_window_p99_ms) ms, min/first window $(json_field "$DIR/etcd-fill.json" min_over_first_window_throughput), errors $(json_field "$DIR/etcd-fill.json" errors)"
	scripts/etcd-cluster.sh stop "$DIR/etcd" >/dev/null
fi
say ""
say "summary in $SUMMARY"
