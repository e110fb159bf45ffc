#!/usr/bin/env bash
# pause-follower.sh — issue 9's paused-follower check on a fresh 3-node cluster on
# loopback: 16 connections write fresh 1 KiB keys; a follower is stopped with SIGSTOP for
# PAUSE seconds while the writes go on, then continued with SIGCONT. Reports the leader's
# memory each 10 s and at its peak, how long the follower took to catch up after SIGCONT,
# whether it needed a snapshot, and whether any write failed or the leader changed.
# Usage: scripts/pause-follower.sh [PAUSE (default 60)] [DIR (default /tmp/raftkv-pause)]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/common.sh

PROG=scripts/pause-follower.sh
PAUSE=${1:-60}
DIR=${2:-/tmp/raftkv-pause}
BIN=target/release/raftkv
BENCH=target/release/examples/bench
NODES=127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
SUMMARY=$DIR/summary.txt
say() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

refuse_busy_ports "$PROG"
cargo build --release --bin raftkv --example bench
rm -rf "$DIR" && mkdir -p "$DIR"
: >"$SUMMARY"
make_cluster_configs "$BIN" "$DIR"
trap 'for k in 1 2 3; do [[ -f $DIR/node$k.pid ]] && kill -CONT "$(cat "$DIR/node$k.pid")" 2>/dev/null; done; stop_all; drop_data "$DIR"' EXIT
for k in 1 2 3; do start_node "$k"; done
for k in 1 2 3; do wait_serving "$k"; done
wait_leader
L=$(leader)
F=$(((L % 3) + 1))
LPID=$(cat "$DIR/node$L.pid")
FPID=$(cat "$DIR/node$F.pid")
term0=$(field "$(status "$L")" term)
say "pause-follower: leader node $L, follower node $F paused for $PAUSE s, $(nproc) cores, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

bench writes --nodes "$NODES" --connections 16 --value-bytes 1024 --keys fresh \
	--duration $((PAUSE + 40)) --window 10 --key-prefix pause- --verify &
BENCH_PID=$!
sleep 10
say "before the pause: leader RSS $(rss_mib "$LPID") MiB"
kill -STOP "$FPID"
for ((t = 10; t <= PAUSE; t += 10)); do
	sleep 10
	say "paused ${t} s: leader RSS $(rss_mib "$LPID") MiB, commit $(field "$(status "$L")" commit_index)"
done
kill -CONT "$FPID"
t0=$(now)
target=$(field "$(status "$L")" commit_index)
caught=$(wait_caught_up "$F" "$target")
say "after SIGCONT: node $F applied the leader's commit index $target in $caught s"
wait "$BENCH_PID" || true
say "leader peak RSS $(hwm_mib "$LPID") MiB; follower peak RSS $(hwm_mib "$FPID") MiB"
if grep -q "sending snapshot" "$DIR/node$L.log"; then
	say "the follower was sent a snapshot: $(grep -c 'sending snapshot' "$DIR/node$L.log") log lines"
else
	say "the follower caught up from the log (no snapshot)"
fi
say "term $term0 -> $(field "$(status "$L")" term); writes: $(json_field "$DIR/writes.json" writes_per_s) writes/s, p99 $(json_field "$DIR/writes.json" p99_ms) ms, errors $(json_field "$DIR/writes.json" errors), leader changes $(json_field "$DIR/writes.json" leader_changes)"
say "read back: $(json_field "$DIR/writes.json" verified) acknowledged writes intact, $(json_field "$DIR/writes.json" lost) missing, $(json_field "$DIR/writes.json" unchecked) not checked"
