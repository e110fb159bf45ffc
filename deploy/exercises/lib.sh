# Shared by the exercise scripts: a compose cluster of its own (project raftkv-ex-NAME),
# torn down on exit whatever happens, and small helpers over curl.
# shellcheck shell=bash
set -euo pipefail

EX_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPLOY=$(dirname "$EX_DIR")
COMPOSE=${COMPOSE:-docker-compose}
export COMPOSE

# start_cluster NAME N: a fresh N-node cluster (3 or 5) for this exercise.
start_cluster() {
	EX_NAME=$1
	N=$2
	export RAFTKV_PROJECT="raftkv-ex-$EX_NAME"
	trap cleanup EXIT
	step "starting a $N-node cluster (compose project $RAFTKV_PROJECT)"
	"$DEPLOY/cluster.sh" down "$N" >/dev/null 2>&1 || true
	"$DEPLOY/cluster.sh" up "$N"
}

cleanup() {
	local rc=$?
	if ((rc != 0)); then
		echo "---- exercise $EX_NAME failed; the last log lines of each node ----" >&2
		"$DEPLOY/cluster.sh" ps "$N" >&2 || true
		dc logs --tail 15 >&2 || true
	fi
	"$DEPLOY/cluster.sh" down "$N" >/dev/null 2>&1 || true
	exit "$rc"
}

# dc ARGS...: compose on this exercise's cluster.
dc() {
	local f=$DEPLOY/docker-compose.yml
	((N == 5)) && f=$DEPLOY/docker-compose.5.yml
	# shellcheck disable=SC2086
	$COMPOSE -p "$RAFTKV_PROJECT" -f "$f" "$@"
}

step() {
	echo "==> $*"
}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

url() {
	echo "http://127.0.0.1:800$1"
}

# http METHOD K PATH [BODY]: prints "STATUS BODY" (status 000: no answer).
http() {
	local out
	out=$(curl -s -m 8 -o /dev/stdout -w ' %{http_code}' -X "$1" ${4+--data-binary "$4"} "$(url "$2")$3" || true)
	echo "${out##* } ${out% *}"
}

# put K KEY VALUE: the write through node K must be acknowledged (retries 503/504).
put() {
	local i r
	for ((i = 0; i < 30; i++)); do
		r=$(http PUT "$1" "/kv/$2" "$3")
		[[ ${r%% *} == 200 ]] && return 0
		sleep 0.5
	done
	fail "PUT $2 via node $1: $r"
}

# get K KEY [stale]: the value, linearizable unless "stale"; fails on anything but 200.
get() {
	local q="" r
	[[ ${3:-} == stale ]] && q="?consistency=stale"
	r=$(http GET "$1" "/kv/$2$q")
	[[ ${r%% *} == 200 ]] || fail "GET $2 via node $1: $r"
	echo "${r#* }"
}

# field JSON KEY: a top-level number or string of flat JSON.
field() {
	sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1"
}

# leader [NODES...]: the id of the node that says it leads (among NODES, default all).
leader() {
	local k s nodes=("$@") deadline=$((SECONDS + 30))
	((${#nodes[@]})) || nodes=($(seq 1 "$N"))
	while ((SECONDS < deadline)); do
		for k in "${nodes[@]}"; do
			s=$(curl -s -m 1 "$(url "$k")/status" || true)
			if [[ $(field "$s" role) == leader ]]; then
				echo "$k"
				return 0
			fi
		done
		sleep 0.3
	done
	fail "no leader among nodes ${nodes[*]} within 30 s"
}

# follows K L: node K's /status names node L as the leader.
follows() {
	[[ $(field "$(curl -s -m 1 "$(url "$1")/status" || true)" leader) == "$2" ]]
}

# eventually SECONDS CMD...: retry CMD until it succeeds.
eventually() {
	local limit=$1 deadline
	shift
	deadline=$((SECONDS + limit))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.3
	done
}

# has K KEY VALUE: node K's own applied state holds KEY=VALUE (a stale read).
has() {
	local r
	r=$(http GET "$1" "/kv/$2?consistency=stale")
	[[ $r == "200 $3" ]]
}

# container K: node K's container id.
container() {
	dc ps -q "node$1"
}
