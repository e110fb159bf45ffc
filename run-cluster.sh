#!/usr/bin/env bash
# run-cluster.sh — build raftkv and run a local N-node cluster (default 3).
# See ./run-cluster.sh --help.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

PROG=./run-cluster.sh
BIN=${RAFTKV_BIN:-target/release/raftkv}
[[ $BIN == */* ]] || BIN=./$BIN
MAX_NODES=9
LEADER_WAIT_SECS=10
STOP_GRACE_TENTHS=50 # SIGTERM grace period, in 0.1 s steps (5 s)

usage() {
	cat <<EOF
Usage:
  $PROG [--clean] [--nodes N]   build, start an N-node cluster (default 3, N in 1..$MAX_NODES),
                                wait for a leader, then stay in the foreground;
                                Ctrl-C (or SIGTERM) stops every node
  $PROG start K                 (re)start node K in the background (e.g. after kill -9),
                                with the config it last ran with
  $PROG stop                    stop all nodes recorded in run/*.pid
  $PROG status                  show each recorded node: alive/dead and its /status
  $PROG members                 the members as the leader sees them (voter/learner, match)
  $PROG add [K]                 start a new, empty node K (default: the number after every
                                node this directory has seen)
                                in join mode and add it to the running cluster as a
                                learner; the leader promotes it once it has caught up
  $PROG remove K                remove node K from the cluster, then stop it
  $PROG transfer [K]            hand leadership to node K (default: the most
                                up-to-date follower)
  $PROG gen-configs N DIR       write N node configs into DIR
                                (config/node1..3.toml are '$PROG gen-configs 3 config')
  $PROG -h | --help             this help

Options:
  --clean      delete data/, logs/ and run/ before starting (refused while nodes run)
  --nodes N    cluster size; N=3 uses config/node{1..3}.toml, any other N uses
               configs generated into config/generated/nN/
Node K listens on 127.0.0.1:800K (HTTP client API) and 127.0.0.1:900K (Raft),
stores data in data/nodeK, logs to logs/nodeK.log (appended), pid in run/nodeK.pid.
The script always works from its own directory (the repo root).

Environment:
  RAFTKV_BIN=PATH      binary to run (default target/release/raftkv; relative
                       paths are relative to the repo root)
  RAFTKV_SKIP_BUILD=1  do not run 'cargo build --release' first
  RUST_LOG             passed through to the nodes (the binary defaults to info)
EOF
}

die() {
	echo "run-cluster: error: $*" >&2
	exit 1
}

usage_error() {
	echo "run-cluster: error: $* (see $PROG --help)" >&2
	exit 2
}

note() {
	echo "run-cluster: $*"
}

valid_node_count() {
	[[ $1 =~ ^[1-9]$ ]] && ((10#$1 <= MAX_NODES))
}

# ---------------------------------------------------------------- configs ---

# gen_config N K FILE: config of node K in an N-node cluster.
gen_config() {
	local n=$1 k=$2 file=$3 p
	{
		cat <<EOF
# raftkv node $k of a local $n-node cluster.
# Written by run-cluster.sh; regenerate with: $PROG gen-configs $n <dir>
# Relative paths are resolved against the current directory of the process
# (run-cluster.sh always starts nodes from the repo root).
# Node K: client HTTP API on 127.0.0.1:800K, Raft peer traffic on 127.0.0.1:900K.

id = $k
data_dir = "data/node$k"
http_addr = "127.0.0.1:800$k"   # client API
raft_addr = "127.0.0.1:900$k"   # peer traffic
# Peers prove they know this secret before any Raft message is read. The same file
# for every node; run-cluster.sh creates it with random bytes if it is missing.
cluster_secret_file = "data/cluster.secret"
# Mutual TLS between peers: run-cluster.sh makes the CA and the node certificates
# with 'raftkv certs --out data/tls' if they are missing.
tls_ca_file = "data/tls/ca.pem"
tls_cert_file = "data/tls/node$k.pem"
tls_key_file = "data/tls/node$k.key"

# Optional tuning (defaults shown):
# election_timeout_min_ms = 300
# election_timeout_max_ms = 600
# heartbeat_interval_ms = 50
EOF
		for ((p = 1; p <= n; p++)); do
			((p == k)) && continue
			cat <<EOF

[[peers]]
id = $p
http_addr = "127.0.0.1:800$p"
raft_addr = "127.0.0.1:900$p"
EOF
		done
	} >"$file"
}

# gen_join_config K FILE PEERS...: config of a new node K that joins a running cluster
# whose members include PEERS (node numbers).
gen_join_config() {
	local k=$1 file=$2 p
	shift 2
	{
		cat <<EOF
# raftkv node $k, joining a running cluster.
# Written by '$PROG add $k'. It starts with no membership and never stands for
# election until the cluster adds it (as a learner) and promotes it (to voter).
# [[peers]] only says where the existing members are; once the node has received the
# cluster's membership, that record is authoritative.

id = $k
data_dir = "data/node$k"
http_addr = "127.0.0.1:800$k"   # client API
raft_addr = "127.0.0.1:900$k"   # peer traffic
cluster_secret_file = "data/cluster.secret"
tls_ca_file = "data/tls/ca.pem"
tls_cert_file = "data/tls/node$k.pem"
tls_key_file = "data/tls/node$k.key"
join = true
EOF
		for p in "$@"; do
			cat <<EOF

[[peers]]
id = $p
http_addr = "127.0.0.1:800$p"
raft_addr = "127.0.0.1:900$p"
EOF
		done
	} >"$file"
}

# gen_configs N DIR: DIR/node1.toml .. DIR/nodeN.toml
gen_configs() {
	local n=$1 dir=$2 k
	mkdir -p "$dir"
	for ((k = 1; k <= n; k++)); do
		gen_config "$n" "$k" "$dir/node$k.toml"
	done
}

# ensure_secret FILE: the cluster secret every node's config names, created (random, readable
# only by this user) if missing.
ensure_secret() {
	[[ -s $1 ]] && return 0
	(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1") ||
		die "cannot write the cluster secret $1"
	note "created the cluster secret $1"
}

# ensure_certs K...: the cluster CA (data/tls/ca.pem, created once) and a certificate for
# each node K that lacks one.
ensure_certs() {
	local ids
	ids=$(
		IFS=,
		echo "$*"
	)
	"$BIN" certs --out data/tls --nodes "$ids" >/dev/null ||
		die "cannot make TLS certificates in data/tls"
}

# config_dir N: where the configs of an N-node cluster live.
config_dir() {
	if (($1 == 3)); then echo config; else echo "config/generated/n$1"; fi
}

# cfg_get FILE KEY: a top-level string value (before the first [table]).
cfg_get() {
	sed -n -e '/^[[:space:]]*\[/q' \
		-e "/^[[:space:]]*$2[[:space:]]*=/{s/^[^\"]*\"\\([^\"]*\\)\".*/\\1/p;q;}" "$1"
}

# node_config K: the config node K last ran with, else config/nodeK.toml.
node_config() {
	local k=$1 cfg=""
	if [[ -f run/node$k.config ]]; then
		cfg=$(<"run/node$k.config")
	fi
	if [[ -z $cfg ]]; then
		cfg=config/node$k.toml
	fi
	echo "$cfg"
}

# node_http K: node K's http_addr (from its config), or the default scheme.
node_http() {
	local cfg addr=""
	cfg=$(node_config "$1")
	if [[ -f $cfg ]]; then
		addr=$(cfg_get "$cfg" http_addr)
	fi
	echo "${addr:-127.0.0.1:800$1}"
}

# --------------------------------------------------------------- processes ---

# node_alive PID: true if PID is a live raftkv node. On Linux the command line
# is checked too, so a zombie or a recycled pid does not count as alive.
node_alive() {
	local pid=$1 cmd
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	if [[ -d /proc/$pid ]]; then
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
		[[ $cmd == *--config* ]] || return 1
	fi
	return 0
}

# pid_of K: the pid recorded for node K (empty if none).
pid_of() {
	if [[ -f run/node$1.pid ]]; then
		cat "run/node$1.pid" 2>/dev/null || true
	fi
}

# remove_pidfile K PID: remove run/nodeK.pid unless it now names another pid
# (someone may have restarted the node meanwhile).
remove_pidfile() {
	if [[ $(pid_of "$1") == "$2" ]]; then
		rm -f "run/node$1.pid"
	fi
}

# running_nodes: "K:PID" for every recorded node that is alive.
running_nodes() {
	local k pid
	for ((k = 1; k <= MAX_NODES; k++)); do
		pid=$(pid_of "$k")
		if [[ -n $pid ]] && node_alive "$pid"; then
			echo "$k:$pid"
		fi
	done
}

# stop_nodes [quiet]: SIGTERM every recorded node (and the "K:PID" entries
# of EXTRA_STOP), wait up to 5 s, then SIGKILL what is left; removes the
# pidfiles.
EXTRA_STOP=()
stop_nodes() {
	local quiet=${1:-} k pid i alive e
	local ks=() pids=()
	# A launcher watching the nodes must not report them as crashed.
	mkdir -p run && : >run/stopping
	for ((k = 1; k <= MAX_NODES; k++)); do
		[[ -f run/node$k.pid ]] || continue
		pid=$(pid_of "$k")
		if node_alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			ks+=("$k")
			pids+=("$pid")
		else
			[[ -n $quiet ]] || echo "node $k: was not running (stale pid ${pid:-?})"
			remove_pidfile "$k" "$pid"
		fi
	done
	for e in ${EXTRA_STOP[@]+"${EXTRA_STOP[@]}"}; do
		k=${e%%:*}
		pid=${e#*:}
		[[ " ${pids[*]-} " == *" $pid "* ]] && continue
		if node_alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			ks+=("$k")
			pids+=("$pid")
		fi
	done
	if ((${#pids[@]} == 0)); then
		rm -f run/stopping
		[[ -n $quiet ]] || echo "no running nodes"
		return 0
	fi
	echo "stopping ${#pids[@]} node(s)..."
	for ((i = 0; i < STOP_GRACE_TENTHS; i++)); do
		alive=0
		for pid in "${pids[@]}"; do
			if node_alive "$pid"; then
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
		if node_alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			echo "node $k: stopped (pid $pid, SIGKILL after $((STOP_GRACE_TENTHS / 10)) s)"
		else
			echo "node $k: stopped (pid $pid)"
		fi
		remove_pidfile "$k" "$pid"
	done
	rm -f run/stopping
}

have_curl() {
	command -v curl >/dev/null 2>&1
}

# status_json K: node K's /status body, or fails.
status_json() {
	curl -s -f --connect-timeout 1 -m 1 "http://$(node_http "$1")/status" 2>/dev/null
}

# json_str JSON KEY / json_num JSON KEY: crude flat-JSON field extraction.
json_str() {
	sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" <<<"$1"
}
json_num() {
	sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\\([0-9][0-9]*\\).*/\\1/p" <<<"$1"
}

# check_port_free K: refuse if something already answers on node K's HTTP
# port (e.g. a node whose pidfile was deleted).
check_port_free() {
	local k=$1 addr json pid
	have_curl || return 0
	addr=$(node_http "$k")
	if json=$(curl -s --connect-timeout 1 -m 1 "http://$addr/status" 2>/dev/null); then
		pid=$(json_num "$json" pid)
		die "something already serves http://$addr (node $k's port)${pid:+ — a raftkv with pid $pid; stop it with: kill $pid}"
	fi
}

# start_node K CONFIG: start node K in the background; sets STARTED_PID.
STARTED_PID=
start_node() {
	local k=$1 cfg=$2
	mkdir -p logs run
	printf '==== %s run-cluster.sh: starting node %s: %s serve --config %s\n' \
		"$(date '+%Y-%m-%d %H:%M:%S')" "$k" "$BIN" "$cfg" >>"logs/node$k.log"
	"$BIN" serve --config "$cfg" </dev/null >>"logs/node$k.log" 2>&1 &
	STARTED_PID=$!
	disown "$STARTED_PID" 2>/dev/null || true # no "Killed" job notices on kill -9
	echo "$STARTED_PID" >"run/node$k.pid"
	echo "$cfg" >"run/node$k.config"
}

check_bin() {
	[[ -x $BIN ]] || die "binary '$BIN' not found or not executable (build it with 'cargo build --release', run $PROG, or set RAFTKV_BIN)"
}

hint() {
	printf '  %-55s # %s\n' "$1" "$2"
}

show_log_tail() {
	echo "---- last lines of logs/node$1.log ----" >&2
	tail -n 10 "logs/node$1.log" >&2 || true
	echo "----" >&2
}

# -------------------------------------------------------------- commands ---

cmd_start() {
	local k=${1:-} cfg pid
	valid_node_count "$k" || usage_error "usage: $PROG start K   (K in 1..$MAX_NODES)"
	pid=$(pid_of "$k")
	if [[ -n $pid ]] && node_alive "$pid"; then
		die "node $k is already running (pid $pid); stop it first: kill $pid"
	fi
	cfg=$(node_config "$k")
	[[ -f $cfg ]] || die "no config for node $k: '$cfg' not found (start a cluster that has node $k first, e.g. $PROG --nodes $k)"
	check_bin
	check_port_free "$k"
	start_node "$k" "$cfg"
	pid=$STARTED_PID
	sleep 0.3
	if ! node_alive "$pid"; then
		show_log_tail "$k"
		remove_pidfile "$k" "$pid"
		die "node $k exited right after starting (see logs/node$k.log)"
	fi
	echo "node $k: started (pid $pid, config $cfg, http http://$(node_http "$k"), log logs/node$k.log)"
}

cmd_stop() {
	stop_nodes
}

cmd_status() {
	local k pid cfg json found=0 curl_ok=1
	have_curl || curl_ok=0
	for ((k = 1; k <= MAX_NODES; k++)); do
		[[ -f run/node$k.pid ]] || continue
		found=1
		pid=$(pid_of "$k")
		cfg=$(node_config "$k")
		if node_alive "$pid"; then
			echo "node $k: alive (pid $pid, config $cfg, http http://$(node_http "$k"))"
			if ((curl_ok)); then
				if json=$(status_json "$k"); then
					echo "  $json"
				else
					echo "  (no answer from http://$(node_http "$k")/status)"
				fi
			fi
		else
			echo "node $k: dead (pid ${pid:-?}, config $cfg) — restart with: $PROG start $k"
		fi
	done
	if ((!found)); then
		echo "no nodes recorded in run/ (start a cluster with $PROG)"
	elif ((!curl_ok)); then
		echo "(curl not found: /status not queried)"
	fi
}

# alive_http: comma-separated HTTP addresses of the recorded nodes that are alive.
alive_http() {
	local e out=""
	for e in $(running_nodes); do
		out+="${out:+,}$(node_http "${e%%:*}")"
	done
	echo "$out"
}

# alive_http_except K: alive_http without node K.
alive_http_except() {
	local e out=""
	for e in $(running_nodes); do
		[[ ${e%%:*} == "$1" ]] && continue
		out+="${out:+,}$(node_http "${e%%:*}")"
	done
	echo "$out"
}

# await_leader: until some running node says it leads (10 s at most).
await_leader() {
	local deadline=$((SECONDS + 10)) e json
	while ((SECONDS < deadline)); do
		for e in $(running_nodes); do
			json=$(status_json "${e%%:*}") || continue
			[[ $(json_str "$json" role) == leader ]] && return 0
		done
		sleep 0.2
	done
	return 1
}

# cli ARGS...: the raftkv CLI against the running nodes.
cli() {
	local nodes
	nodes=$(alive_http)
	[[ -n $nodes ]] || die "no running nodes (start a cluster with $PROG)"
	"$BIN" "$@" --nodes "$nodes"
}

cmd_members() {
	check_bin
	cli member list
}

cmd_add() {
	local k=${1:-} e peers=() cfg pid
	check_bin
	[[ -n $(running_nodes) ]] || die "no running nodes: start the cluster first ($PROG)"
	if [[ -z $k ]]; then
		# The next number after every node this directory has seen (a new member never
		# reuses the id of one that was removed).
		local top=0 j
		[[ -f data/cluster-size ]] && top=$(<data/cluster-size)
		for ((j = 1; j <= MAX_NODES; j++)); do
			if [[ -f run/node$j.config || -d data/node$j ]] && ((j > top)); then top=$j; fi
		done
		k=$((top + 1))
		((k <= MAX_NODES)) || die "no free node number left (1..$MAX_NODES are all used); name one: $PROG add K"
	fi
	valid_node_count "$k" || usage_error "usage: $PROG add [K]   (K in 1..$MAX_NODES)"
	pid=$(pid_of "$k")
	if [[ -n $pid ]] && node_alive "$pid"; then
		die "node $k is running already (pid $pid)"
	fi
	if [[ -d data/node$k ]] && [[ -n $(ls -A "data/node$k") ]]; then
		die "data/node$k holds an earlier node's data; a new member starts empty: rm -rf data/node$k"
	fi
	for e in $(running_nodes); do
		peers+=("${e%%:*}")
	done
	mkdir -p config/generated
	cfg=config/generated/node$k-join.toml
	gen_join_config "$k" "$cfg" "${peers[@]}"
	ensure_certs "$k"
	check_port_free "$k"
	start_node "$k" "$cfg"
	pid=$STARTED_PID
	sleep 0.3
	if ! node_alive "$pid"; then
		show_log_tail "$k"
		remove_pidfile "$k" "$pid"
		die "node $k exited right after starting (see logs/node$k.log)"
	fi
	echo "node $k: started in join mode (pid $pid, config $cfg, log logs/node$k.log)"
	await_leader || die "no leader among the running nodes; node $k keeps running, waiting to be added"
	if ! cli member add "$k" "127.0.0.1:900$k" "127.0.0.1:800$k"; then
		die "the cluster did not add node $k (it keeps running, waiting; retry with: $BIN member add $k 127.0.0.1:900$k 127.0.0.1:800$k)"
	fi
	echo "node $k: added as a learner; the leader promotes it once it has caught up"
	echo "  watch it: $PROG members     (or: grep -h promot logs/*.log)"
}

cmd_remove() {
	local k=${1:-} pid i nodes
	valid_node_count "$k" || usage_error "usage: $PROG remove K   (K in 1..$MAX_NODES)"
	check_bin
	# Ask the other nodes: node K may be cut off from the answer once it is removed.
	nodes=$(alive_http_except "$k")
	[[ -n $nodes ]] || die "no other running node to ask"
	"$BIN" member remove "$k" --nodes "$nodes" || die "the cluster did not remove node $k"
	echo "node $k: removed from the cluster"
	pid=$(pid_of "$k")
	if [[ -n $pid ]] && node_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < STOP_GRACE_TENTHS; i++)); do
			node_alive "$pid" || break
			sleep 0.1
		done
		if node_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
		echo "node $k: stopped (pid $pid); its data/node$k is no longer needed"
	fi
	rm -f "run/node$k.pid" "run/node$k.config"
	# A removed leader steps down: wait for the next one, so the next command finds it.
	await_leader || echo "run-cluster: warning: no leader yet among the remaining nodes" >&2
}

cmd_transfer() {
	check_bin
	if [[ -n ${1:-} ]]; then
		valid_node_count "$1" || usage_error "usage: $PROG transfer [K]"
		cli transfer-leader "$1"
	else
		cli transfer-leader
	fi
}

cmd_gen_configs() {
	local n=${1:-} dir=${2:-}
	if ! valid_node_count "$n" || [[ -z $dir ]]; then
		usage_error "usage: $PROG gen-configs N DIR   (N in 1..$MAX_NODES)"
	fi
	gen_configs "$n" "$dir"
	note "wrote $dir/node1.toml .. $dir/node$n.toml"
}

# -------------------------------------------------------------- launcher ---

NODES=0
CLEANED_UP=0
SLEEP_PID=

cleanup_launcher() {
	((CLEANED_UP)) && return 0
	CLEANED_UP=1
	trap '' INT TERM # a second Ctrl-C must not abort the shutdown
	if [[ -n $SLEEP_PID ]]; then
		kill "$SLEEP_PID" 2>/dev/null || true
	fi
	echo
	stop_nodes quiet || true
}

on_signal() {
	cleanup_launcher
	trap - EXIT
	exit "$1"
}

# wait_for_leader: poll /status until a node says it leads. Sets LEADER.
LEADER=
wait_for_leader() {
	local deadline=$((SECONDS + LEADER_WAIT_SECS)) k pid json role term best_term alive
	local reported=()
	note "waiting up to ${LEADER_WAIT_SECS} s for a leader..."
	while :; do
		best_term=-1
		alive=0
		for ((k = 1; k <= NODES; k++)); do
			pid=$(pid_of "$k")
			if [[ -n $pid ]] && node_alive "$pid"; then
				alive=$((alive + 1))
			else
				if [[ -z ${reported[k]:-} ]]; then
					reported[k]=1
					if [[ -n $pid ]]; then
						echo "run-cluster: warning: node $k exited during startup" >&2
						show_log_tail "$k"
					else
						note "node $k was stopped (pidfile removed)"
					fi
				fi
				continue
			fi
			json=$(status_json "$k") || continue
			role=$(json_str "$json" role)
			term=$(json_num "$json" term)
			if [[ $role == leader && ${term:-0} -gt $best_term ]]; then
				LEADER=$k
				best_term=${term:-0}
			fi
		done
		if [[ -n $LEADER ]]; then
			echo "leader: node $LEADER (term $best_term)"
			return 0
		fi
		if ((alive == 0)); then
			if [[ -z $(running_nodes) ]] && ! compgen -G 'run/node*.pid' >/dev/null; then
				note "all nodes were stopped from elsewhere; exiting"
				exit 0
			fi
			die "all nodes exited; see logs/node*.log"
		fi
		if ((SECONDS >= deadline)); then
			echo "run-cluster: warning: no leader after ${LEADER_WAIT_SECS} s; the nodes keep running — check '$PROG status' and logs/*.log" >&2
			return 0
		fi
		sleep 0.2
	done
}

# monitor: report nodes that died or came back (called once a second).
LAST_PID=()
LAST_ALIVE=()
monitor() {
	local k pid any=0 alive
	for ((k = 1; k <= MAX_NODES; k++)); do
		pid=$(pid_of "$k")
		[[ -n $pid ]] || continue
		any=1
		alive=0
		if node_alive "$pid"; then alive=1; fi
		if [[ $pid != "${LAST_PID[k]:-}" ]]; then
			if ((alive)); then note "node $k is up (pid $pid)"; fi
		elif ((!alive && ${LAST_ALIVE[k]:-0})) && [[ ! -e run/stopping ]]; then
			note "node $k (pid $pid) is down — restart it with: $PROG start $k"
		fi
		LAST_PID[k]=$pid
		LAST_ALIVE[k]=$alive
	done
	if ((!any)); then
		note "no nodes left in run/ (stopped from elsewhere?); exiting"
		exit 0
	fi
}

cmd_launch() {
	local clean=0 k cfg dir running a b
	NODES=3
	while (($#)); do
		case $1 in
		--clean) clean=1 ;;
		--nodes)
			(($# >= 2)) || usage_error "--nodes needs a value"
			NODES=$2
			shift
			;;
		--nodes=*) NODES=${1#--nodes=} ;;
		-h | --help)
			usage
			return 0
			;;
		*) usage_error "unknown argument '$1'" ;;
		esac
		shift
	done
	valid_node_count "$NODES" || usage_error "--nodes must be a number in 1..$MAX_NODES (got '$NODES')"
	NODES=$((10#$NODES))

	running=$(running_nodes)
	if [[ -n $running ]]; then
		echo "run-cluster: error: nodes from a previous run are still running:" >&2
		for k in $running; do
			echo "  node ${k%%:*} (pid ${k#*:})" >&2
		done
		echo "stop them first with: $PROG stop" >&2
		exit 1
	fi

	if ((clean)); then
		note "--clean: removing data/ logs/ run/"
		rm -rf -- data logs run
	fi
	# No node is alive: forget pidfiles/configs of earlier runs.
	rm -f run/node*.pid run/node*.config run/stopping

	# data/ belongs to one membership: a 5-node run must not reuse a 3-node run's logs.
	if [[ ! -f data/cluster-size ]] && compgen -G "data/node*" >/dev/null; then
		# Data from before the size was recorded: count the node directories.
		find data -maxdepth 1 -name 'node*' -type d | wc -l | tr -d ' ' >data/cluster-size
	fi
	if [[ -f data/cluster-size ]] && [[ $(cat data/cluster-size) != "$NODES" ]]; then
		die "data/ holds a $(cat data/cluster-size)-node cluster; start it with --nodes $(cat data/cluster-size), or wipe it with --clean"
	fi

	if [[ ${RAFTKV_SKIP_BUILD:-0} == 1 ]]; then
		note "RAFTKV_SKIP_BUILD=1: skipping cargo build"
	else
		command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust, or set RAFTKV_SKIP_BUILD=1 with a prebuilt RAFTKV_BIN)"
		note "cargo build --release"
		cargo build --release
	fi
	check_bin

	dir=$(config_dir "$NODES")
	if ((NODES == 3)); then
		for ((k = 1; k <= NODES; k++)); do
			[[ -f $dir/node$k.toml ]] || die "$dir/node$k.toml is missing (recreate with: $PROG gen-configs 3 config)"
		done
	else
		gen_configs "$NODES" "$dir"
	fi
	mkdir -p data logs run
	ensure_secret data/cluster.secret
	ensure_certs $(seq 1 "$NODES")
	echo "$NODES" >data/cluster-size
	for ((k = 1; k <= NODES; k++)); do
		echo "$dir/node$k.toml" >"run/node$k.config"
		check_port_free "$k"
	done

	trap 'on_signal 130' INT
	trap 'on_signal 143' TERM
	trap cleanup_launcher EXIT

	echo
	echo "Starting a $NODES-node raftkv cluster ($BIN):"
	for ((k = 1; k <= NODES; k++)); do
		cfg=$dir/node$k.toml
		start_node "$k" "$cfg"
		EXTRA_STOP+=("$k:$STARTED_PID") # stopped on exit even if its pidfile vanishes
		printf '  node %s  pid %-7s http http://%s  raft %s  config %s  log logs/node%s.log\n' \
			"$k" "$STARTED_PID" "$(cfg_get "$cfg" http_addr)" "$(cfg_get "$cfg" raft_addr)" "$cfg" "$k"
	done
	echo

	if have_curl; then
		wait_for_leader
	else
		note "curl not found: not waiting for a leader (install curl to use the HTTP API)"
		sleep 1
		for ((k = 1; k <= NODES; k++)); do
			node_alive "$(pid_of "$k")" || {
				echo "run-cluster: warning: node $k exited during startup" >&2
				show_log_tail "$k"
			}
		done
		[[ -n $(running_nodes) ]] || die "all nodes exited; see logs/node*.log"
	fi

	a=$(node_http 1)
	b=$(node_http $((NODES >= 2 ? 2 : 1)))
	k=${LEADER:-1}
	echo
	echo "Try it (from $PWD):"
	hint "curl -X PUT -d hello http://$a/kv/greeting" "write (any node; followers forward)"
	if ((NODES >= 2)); then
		hint "curl http://$b/kv/greeting" "read it back from another node"
	else
		hint "curl http://$b/kv/greeting" "read it back"
	fi
	hint "curl -X DELETE http://$a/kv/greeting" "delete"
	hint "curl http://$a/status" "role, term, leader, commit index"
	hint "tail -f logs/*.log" "follow the node logs"
	hint "kill -9 \$(cat run/node$k.pid)" "crash node $k${LEADER:+ (the leader)}"
	hint "$PROG start $k" "restart it (same config, log appended)"
	hint "$PROG status" "alive/dead + /status of every node"
	hint "$PROG stop" "stop all nodes (or press Ctrl-C here)"
	echo
	echo "Running in the foreground; press Ctrl-C to stop all nodes."

	for ((k = 1; k <= MAX_NODES; k++)); do
		LAST_PID[k]=$(pid_of "$k")
		LAST_ALIVE[k]=0
		if node_alive "${LAST_PID[k]}"; then LAST_ALIVE[k]=1; fi
	done
	while :; do
		sleep 1 &
		SLEEP_PID=$!
		wait "$SLEEP_PID" || true
		SLEEP_PID=
		monitor
	done
}

# ------------------------------------------------------------------ main ---

case ${1:-} in
-h | --help | help) usage ;;
start)
	shift
	(($# == 1)) || usage_error "usage: $PROG start K"
	cmd_start "$1"
	;;
stop) cmd_stop ;;
status) cmd_status ;;
members) cmd_members ;;
add)
	shift
	(($# <= 1)) || usage_error "usage: $PROG add [K]"
	cmd_add "${1:-}"
	;;
remove)
	shift
	(($# == 1)) || usage_error "usage: $PROG remove K"
	cmd_remove "$1"
	;;
transfer)
	shift
	(($# <= 1)) || usage_error "usage: $PROG transfer [K]"
	cmd_transfer "${1:-}"
	;;
gen-configs)
	shift
	cmd_gen_configs "$@"
	;;
*) cmd_launch "$@" ;;
esac
