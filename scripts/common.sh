# common.sh — sourced by the benchmark scripts in this directory.

# refuse_busy_ports NAME: exits (naming NAME) if a port of the local 3-node cluster,
# 8001-8003 or 9001-9003, is already listening.
refuse_busy_ports() {
	local port
	for port in 8001 8002 8003 9001 9002 9003; do
		if ss -ltn "sport = :$port" 2>/dev/null | grep -q LISTEN; then
			echo "$1: port $port is in use (a cluster still running? ./run-cluster.sh stop)" >&2
			exit 1
		fi
	done
}

# make_cluster_configs BIN DIR [EXTRA]: a cluster secret, TLS certificates (made by BIN)
# and node1.toml..node3.toml in DIR, copied from config/ with the data directories, the
# secret and the certificates moved into DIR. EXTRA: more top-level keys for every node
# (e.g. "store_cache_mb = 64").
make_cluster_configs() {
	local bin=$1 dir=$2 extra=${3:-}
	(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cluster.secret")
	"$bin" certs --out "$dir/tls" --nodes 1,2,3 >/dev/null
	for k in 1 2 3; do
		sed -e "s#^data_dir = .*#data_dir = \"$dir/node$k\"\n$extra#" \
			-e "s#^cluster_secret_file = .*#cluster_secret_file = \"$dir/cluster.secret\"#" \
			-e "s#\"data/tls/#\"$dir/tls/#" \
			"config/node$k.toml" >"$dir/node$k.toml"
	done
}

# The helpers below use the caller's globals: PROG (its name), DIR (configs, data,
# logs and pid files), BIN (raftkv) and BENCH (the bench example).

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# json_field FILE KEY: a top-level number or string of a bench JSON report.
json_field() {
	python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

status() { curl -s --max-time 2 "http://127.0.0.1:800$1/status" || true; }
field() { sed -n "s/.*\"$2\":\\([0-9]*\\).*/\\1/p" <<<"$1"; }

leader() {
	local k s
	for k in 1 2 3; do
		s=$(status "$k")
		if [[ $s == *'"role":"leader"'* ]]; then
			echo "$k"
			return
		fi
	done
}

wait_leader() {
	local i
	for ((i = 0; i < 300; i++)); do
		[[ -n $(leader) ]] && return 0
		sleep 0.1
	done
	echo "$PROG: no leader within 30 s" >&2
	return 1
}

start_node() {
	local k=$1
	RUST_LOG=${RUST_LOG:-info} "$BIN" serve --config "$DIR/node$k.toml" >>"$DIR/node$k.log" 2>&1 &
	echo $! >"$DIR/node$k.pid"
}

# wait_serving K: until node K answers /status with the pid we started (not another
# process on its port).
wait_serving() {
	local i pid
	pid=$(cat "$DIR/node$1.pid")
	for ((i = 0; i < 600; i++)); do
		[[ $(status "$1") == *"\"pid\":$pid,"* ]] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "$PROG: node $1 (pid $pid) does not serve; see $DIR/node$1.log" >&2
	exit 1
}

kill9() {
	local pid
	pid=$(cat "$DIR/node$1.pid")
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

stop_all() {
	local k
	for k in 1 2 3; do
		[[ -f $DIR/node$k.pid ]] && kill9 "$k"
	done
}

# wait_caught_up K TARGET: until node K has applied TARGET; prints the seconds it took.
wait_caught_up() {
	local k=$1 target=$2 t0 i s
	t0=$(now)
	for ((i = 0; i < 6000; i++)); do
		s=$(status "$k")
		if [[ -n $s ]] && (($(field "$s" last_applied) >= target)); then
			since "$t0"
			return 0
		fi
		sleep 0.1
	done
	echo "never"
}

bench() {
	local out=$1
	shift
	"$BENCH" --json "$@" >"$DIR/$out.json" 2> >(tee "$DIR/$out.txt" >&2)
}

# drop_data DIR: at exit, the nodes' data directories go (a run leaves several GB);
# the logs, configs and reports stay. KEEP_DATA=1 keeps everything.
drop_data() {
	[[ ${KEEP_DATA:-0} == 1 ]] || rm -rf "$1"/node[0-9]/ "$1"/etcd/member[0-9]/ 2>/dev/null || true
}

rss_mib() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
hwm_mib() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
