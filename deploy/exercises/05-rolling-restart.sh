#!/usr/bin/env bash
# Exercise 5, a rolling restart: one container at a time is restarted (SIGTERM: a leader
# hands leadership over first) while a client writes; then node 3 is replaced by a fresh
# node 4 (added as a learner, promoted once caught up, node 3 removed), the client still
# writing. No acknowledged write is lost.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_cluster rolling 3

acked=$(mktemp)
stop_file=$(mktemp)
rm -f "$stop_file"
writer() {
	local i=0 k r
	while [[ ! -e $stop_file ]]; do
		i=$((i + 1))
		k=$(((i % 2) + 1)) # nodes 1 and 2 stay members throughout
		r=$(http PUT "$k" "/kv/roll$i" "r$i")
		[[ ${r%% *} == 200 ]] && echo "roll$i r$i" >>"$acked"
	done
}
writer &
wpid=$!
sleep 1
for k in 1 2 3; do
	step "restarting node$k (SIGTERM, then start)"
	dc restart -t 10 "node$k" >/dev/null 2>&1
	eventually 30 curl -sf -m 1 "$(url "$k")/status" -o /dev/null || fail "node $k did not come back"
	sleep 1
done
step "replacing node 3: a fresh node4 joins"
dc --profile spare up -d node4 >/dev/null 2>&1
eventually 30 curl -sf -m 1 "$(url 4)/status" -o /dev/null || fail "node 4 did not start"
r=$(http POST 1 /cluster/members '{"id": 4, "raft_addr": "raft-node4:9000", "http_addr": "node4:8000"}')
[[ ${r%% *} == 200 ]] || fail "adding node 4: $r"
step "node 4 added as a learner: $r"
promoted() {
	curl -s -m 2 "$(url 1)/cluster/members" | tr '{' '\n' | grep -q '"id":4,.*"role":"voter"'
}
eventually 30 promoted || fail "node 4 was not promoted: $(curl -s "$(url 1)/cluster/members")"
step "node 4 is a voter; removing node 3"
r=$(http DELETE 1 /cluster/members/3)
[[ ${r%% *} == 200 ]] || fail "removing node 3: $r"
dc stop node3 >/dev/null 2>&1
sleep 1
touch "$stop_file"
wait "$wpid" || true
n=$(wc -l <"$acked")
((n > 20)) || fail "only $n writes were acknowledged"
step "$n writes acknowledged during the restarts; checking every one"
while read -r key value; do
	[[ $(get 4 "$key") == "$value" ]] || fail "$key lost"
done <"$acked"
rm -f "$acked"
echo "PASS: rolling restart and replacement ($n of $n acknowledged writes present, read through node 4)"
