#!/usr/bin/env bash
# deploy/cluster.sh — raftkv one node per container, with docker compose.
#
#   deploy/cluster.sh build          build the static binary and the image raftkv:local
#   deploy/cluster.sh up [3|5]       build if needed, then start the 3- (default) or 5-node
#                                    cluster and wait until every node is healthy
#   deploy/cluster.sh down [3|5]     stop it and delete its containers, network and volumes
#   deploy/cluster.sh ps [3|5]       its containers
#
# Node K's client API is published at http://127.0.0.1:800K. Peers talk mutual TLS with
# the certificates in deploy/config/tls/ (ca.pem, nodeK.pem, nodeK.key) and prove the
# cluster secret deploy/config/cluster.secret; both are created on first use.
# Environment: RAFTKV_PROJECT (compose project name, default raftkv), COMPOSE (the compose
# command, default docker-compose, e.g. COMPOSE="docker compose").
set -euo pipefail

DEPLOY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$DEPLOY")
PROJECT=${RAFTKV_PROJECT:-raftkv}
COMPOSE=${COMPOSE:-docker-compose}
TARGET=x86_64-unknown-linux-gnu
IMAGE=raftkv:local

die() {
	echo "deploy: error: $*" >&2
	exit 1
}

compose_file() {
	case ${1:-3} in
	3) echo "$DEPLOY/docker-compose.yml" ;;
	5) echo "$DEPLOY/docker-compose.5.yml" ;;
	*) die "cluster size must be 3 or 5 (got '$1')" ;;
	esac
}

compose() {
	local n=$1
	shift
	# shellcheck disable=SC2086 # COMPOSE may be two words ("docker compose")
	$COMPOSE -p "$PROJECT" -f "$(compose_file "$n")" "$@"
}

build() {
	command -v cargo >/dev/null || die "cargo not found"
	echo "deploy: building a statically linked raftkv ($TARGET, +crt-static)"
	# Without debug info: the image strips it anyway, and it is most of the link time.
	(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=false \
		cargo build --release --target "$TARGET" --bin raftkv)
	local ctx
	ctx=$(mktemp -d)
	cp "${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/raftkv" "$ctx/raftkv"
	# Debug info is most of the file; the image does not need it.
	if command -v strip >/dev/null; then strip --strip-debug "$ctx/raftkv"; fi
	cp "$DEPLOY/Dockerfile" "$ctx/Dockerfile"
	docker build -q -t "$IMAGE" "$ctx" >/dev/null
	rm -rf "$ctx"
	echo "deploy: built image $IMAGE"
}

# ensure_certs: the cluster CA and a certificate per node (1..5, the spare included) in
# deploy/config/tls, made with the binary just built.
ensure_certs() {
	local dir=$DEPLOY/config/tls bin
	[[ -s $dir/ca.pem && -s $dir/node5.key ]] && return 0
	bin="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/raftkv"
	[[ -x $bin ]] || build
	"$bin" certs --out "$dir" --nodes 1,2,3,4,5 >/dev/null
	# The containers read the keys through a read-only bind mount.
	chmod 644 "$dir"/node*.key
	echo "deploy: created the cluster CA and node certificates in $dir"
}

ensure_secret() {
	local f=$DEPLOY/config/cluster.secret
	[[ -s $f ]] && return 0
	(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
	# The containers run as root, but the file must be readable through the bind mount.
	chmod 644 "$f"
	echo "deploy: created the cluster secret $f"
}

# wait_healthy N: until every node answers /status from the host (60 s at most).
wait_healthy() {
	local n=$1 k deadline=$((SECONDS + 60))
	for ((k = 1; k <= n; k++)); do
		until curl -sf -m 1 "http://127.0.0.1:800$k/status" >/dev/null; do
			((SECONDS < deadline)) || die "node $k did not answer within 60 s (see: $COMPOSE -p $PROJECT -f $(compose_file "$n") logs node$k)"
			sleep 0.5
		done
	done
	echo "deploy: all $n nodes answer on 127.0.0.1:8001..800$n"
}

up() {
	local n=${1:-3}
	compose_file "$n" >/dev/null
	docker image inspect "$IMAGE" >/dev/null 2>&1 || build
	ensure_secret
	ensure_certs
	local k
	for ((k = 1; k <= n; k++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/800$k") 2>/dev/null; then
			die "127.0.0.1:800$k is in use (a ./run-cluster.sh node? stop it with ./run-cluster.sh stop); the compose cluster publishes its client ports there"
		fi
	done
	compose "$n" up -d
	wait_healthy "$n"
}

case ${1:-} in
build) build ;;
up) up "${2:-3}" ;;
down) compose "${2:-3}" --profile spare down -v --remove-orphans ;;
ps) compose "${2:-3}" ps ;;
-h | --help | help | "") sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command '$1' (see deploy/cluster.sh --help)" ;;
esac
