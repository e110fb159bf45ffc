#!/usr/bin/env bash
# etcd-cluster.sh — run a local etcd 3.4 cluster on loopback, as a baseline for
# `cargo run --release --example bench -- --target etcd ...`. See --help.
set -euo pipefail

PROG=scripts/etcd-cluster.sh
ETCD=${ETCD_BIN:-etcd}
DEFAULT_DIR=/tmp/raftkv-etcd
HEALTH_WAIT_SECS=15
STOP_GRACE_TENTHS=100 # SIGTERM grace period, in 0.1 s steps (10 s; a leader first tries to hand over)
# Member K (1..3): client port CLIENT_PORTS[K-1], peer port PEER_PORTS[K-1].
CLIENT_PORTS=(2379 22379 32379)
PEER_PORTS=(2380 22380 32380)
# etcd 3.4 refuses writes past its backend quota (default 2 GiB, "mvcc: database space
# exceeded"); 8 GiB, etcd's suggested maximum, leaves room for large fills.
QUOTA_BYTES=${ETCD_QUOTA_BYTES:-8589934592}

usage() {
	cat <<EOF
Usage:
  $PROG start [--members N] [DIR]
      start N etcd members (1 or 3, default 3) in the background, data and logs in DIR
      (default $DEFAULT_DIR), and wait until every member reports healthy
  $PROG stop [DIR]
      stop the members recorded in DIR/run/*.pid (SIGTERM, SIGKILL after 10 s)
  $PROG status [DIR]
      show each recorded member and its /health
  $PROG -h | --help
      this help

Member K listens on 127.0.0.1:${CLIENT_PORTS[0]}, :${CLIENT_PORTS[1]}, :${CLIENT_PORTS[2]} (clients, K = 1, 2, 3)
and 127.0.0.1:${PEER_PORTS[0]}, :${PEER_PORTS[1]}, :${PEER_PORTS[2]} (peers), stores data in DIR/memberK,
logs to DIR/memberK.log (appended), pid in DIR/run/memberK.pid. A cluster is created
fresh when DIR/memberK does not exist yet and restarted from its data otherwise (start
with the same --members as before, or delete DIR first).

Benchmark it with (client URLs of every member):
  cargo run --release --example bench -- --target etcd \\
      --nodes 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 --connections 64 --duration 30

Environment:
  ETCD_BIN=PATH            etcd binary (default: etcd on PATH; Debian: apt-get install etcd-server)
  ETCD_QUOTA_BYTES=N       --quota-backend-bytes (default $QUOTA_BYTES)
EOF
}

die() {
	echo "etcd-cluster: error: $*" >&2
	exit 1
}

usage_error() {
	echo "etcd-cluster: error: $* (see $PROG --help)" >&2
	exit 2
}

note() {
	echo "etcd-cluster: $*"
}

# member_alive PID: true if PID is a live etcd process (not a recycled pid).
member_alive() {
	local pid=$1 cmd
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	if [[ -d /proc/$pid ]]; then
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
		[[ $cmd == *--initial-cluster-token* ]] || return 1
	fi
	return 0
}

# pid_of DIR K: the pid recorded for member K (empty if none).
pid_of() {
	if [[ -f $1/run/member$2.pid ]]; then
		cat "$1/run/member$2.pid" 2>/dev/null || true
	fi
}

# port_busy PORT: true if something listens on 127.0.0.1:PORT.
port_busy() {
	if command -v ss >/dev/null 2>&1; then
		ss -Htln "sport = :$1" 2>/dev/null | grep -q .
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

# healthy K: member K answers /health with "health":"true".
healthy() {
	curl -s -f --connect-timeout 1 -m 2 "http://127.0.0.1:${CLIENT_PORTS[$1 - 1]}/health" 2>/dev/null |
		grep -q '"health":"true"'
}

cmd_start() {
	local members=3 dir="" k i pid initial="" state cport pport all
	while (($#)); do
		case $1 in
		--members)
			[[ $# -ge 2 ]] || usage_error "--members needs a value"
			members=$2
			shift 2
			;;
		-*) usage_error "unknown option '$1'" ;;
		*)
			[[ -z $dir ]] || usage_error "more than one DIR given"
			dir=$1
			shift
			;;
		esac
	done
	[[ $members == 1 || $members == 3 ]] || usage_error "--members must be 1 or 3"
	dir=${dir:-$DEFAULT_DIR}
	command -v "$ETCD" >/dev/null 2>&1 || die "'$ETCD' not found (apt-get install etcd-server, or set ETCD_BIN)"
	command -v curl >/dev/null 2>&1 || die "curl not found (needed for the health check)"
	mkdir -p "$dir/run"
	for ((k = 1; k <= members; k++)); do
		pid=$(pid_of "$dir" "$k")
		if [[ -n $pid ]] && member_alive "$pid"; then
			die "member $k is already running (pid $pid); stop first: $PROG stop $dir"
		fi
		for i in "${CLIENT_PORTS[k - 1]}" "${PEER_PORTS[k - 1]}"; do
			port_busy "$i" && die "port $i (member $k) is already in use"
		done
		initial+="${initial:+,}m$k=http://127.0.0.1:${PEER_PORTS[k - 1]}"
	done
	for ((k = 1; k <= members; k++)); do
		cport=${CLIENT_PORTS[k - 1]}
		pport=${PEER_PORTS[k - 1]}
		state=new
		[[ -d $dir/member$k ]] && state=existing
		printf '==== %s etcd-cluster.sh: starting member %s (%s cluster)\n' \
			"$(date '+%Y-%m-%d %H:%M:%S')" "$k" "$state" >>"$dir/member$k.log"
		"$ETCD" --name "m$k" --data-dir "$dir/member$k" \
			--listen-client-urls "http://127.0.0.1:$cport" \
			--advertise-client-urls "http://127.0.0.1:$cport" \
			--listen-peer-urls "http://127.0.0.1:$pport" \
			--initial-advertise-peer-urls "http://127.0.0.1:$pport" \
			--initial-cluster "$initial" \
			--initial-cluster-token raftkv-etcd-bench \
			--initial-cluster-state "$state" \
			--quota-backend-bytes "$QUOTA_BYTES" \
			</dev/null >>"$dir/member$k.log" 2>&1 &
		pid=$!
		disown "$pid" 2>/dev/null || true
		echo "$pid" >"$dir/run/member$k.pid"
		note "member $k: started (pid $pid, client http://127.0.0.1:$cport, data $dir/member$k, log $dir/member$k.log)"
	done
	note "waiting up to ${HEALTH_WAIT_SECS} s for every member to be healthy..."
	for ((i = 0; i < HEALTH_WAIT_SECS * 10; i++)); do
		all=1
		for ((k = 1; k <= members; k++)); do
			pid=$(pid_of "$dir" "$k")
			member_alive "$pid" || die "member $k (pid $pid) exited; see $dir/member$k.log"
			healthy "$k" || all=0
		done
		if ((all)); then
			note "all $members member(s) healthy"
			return 0
		fi
		sleep 0.1
	done
	die "not healthy after ${HEALTH_WAIT_SECS} s; see $dir/member*.log (stop with: $PROG stop $dir)"
}

cmd_stop() {
	local dir=${1:-$DEFAULT_DIR} k pid i alive
	local ks=() pids=()
	for k in 1 2 3; do
		[[ -f $dir/run/member$k.pid ]] || continue
		pid=$(pid_of "$dir" "$k")
		if member_alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			ks+=("$k")
			pids+=("$pid")
		else
			echo "member $k: was not running (stale pid ${pid:-?})"
			rm -f "$dir/run/member$k.pid"
		fi
	done
	if ((${#pids[@]} == 0)); then
		echo "no running members recorded in $dir/run"
		return 0
	fi
	for ((i = 0; i < STOP_GRACE_TENTHS; i++)); do
		alive=0
		for pid in "${pids[@]}"; do
			if member_alive "$pid"; then
				alive=1
				break
			fi
		done
		((alive)) || break
		sleep 0.1
	done
	for ((i = 0; i < ${#pids[@]}; i++)); do
		k=${ks[i]}
		pid=${pids[i]}
		if member_alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			echo "member $k: stopped (pid $pid, SIGKILL after $((STOP_GRACE_TENTHS / 10)) s)"
		else
			echo "member $k: stopped (pid $pid)"
		fi
		rm -f "$dir/run/member$k.pid"
	done
}

cmd_status() {
	local dir=${1:-$DEFAULT_DIR} k pid found=0 health
	for k in 1 2 3; do
		[[ -f $dir/run/member$k.pid ]] || continue
		found=1
		pid=$(pid_of "$dir" "$k")
		if member_alive "$pid"; then
			health=$(curl -s --connect-timeout 1 -m 2 \
				"http://127.0.0.1:${CLIENT_PORTS[k - 1]}/health" 2>/dev/null || true)
			echo "member $k: alive (pid $pid, client http://127.0.0.1:${CLIENT_PORTS[k - 1]}) ${health:-(no answer from /health)}"
		else
			echo "member $k: dead (pid ${pid:-?}); see $dir/member$k.log"
		fi
	done
	((found)) || echo "no members recorded in $dir/run (start with: $PROG start $dir)"
}

case ${1:-} in
start)
	shift
	cmd_start "$@"
	;;
stop)
	shift
	(($# <= 1)) || usage_error "usage: $PROG stop [DIR]"
	cmd_stop "$@"
	;;
status)
	shift
	(($# <= 1)) || usage_error "usage: $PROG status [DIR]"
	cmd_status "$@"
	;;
-h | --help) usage ;;
"") usage_error "no command given" ;;
*) usage_error "unknown command '$1'" ;;
esac
