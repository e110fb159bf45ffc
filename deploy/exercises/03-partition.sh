#!/usr/bin/env bash
# Exercise 3, a network partition in a 5-node cluster: two nodes are cut off from their
# peers; the other three still commit; a write sent to the isolated two is answered 503
# or 504, never 2xx; after reconnecting they catch up and all five hold the same data.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_cluster partition 5

l=$(leader)
put "$l" before 1
# Cut off two nodes, the leader among them: the majority side must elect its own.
cut=("$l")
for k in 1 2 3 4 5; do
	((${#cut[@]} < 2 && k != l)) && cut+=("$k")
done
major=()
for k in 1 2 3 4 5; do [[ " ${cut[*]} " == *" $k "* ]] || major+=("$k"); done
net="${RAFTKV_PROJECT//-/}_peers"
docker network ls --format '{{.Name}}' | grep -qx "$net" || net="${RAFTKV_PROJECT}_peers"
# Both at once, so neither hears of the other side's new leader in between.
pids=()
for k in "${cut[@]}"; do
	docker network disconnect "$net" "$(container "$k")" &
	pids+=($!)
done
wait "${pids[@]}"
step "nodes ${cut[*]} are cut off from their peers (network $net); ${major[*]} remain"
nl=$(leader "${major[@]}")
step "node $nl leads the majority"
for i in $(seq 1 10); do put "${major[0]}" "during$i" "m$i"; done
step "the majority committed 10 writes"
declare -A answer
for k in "${cut[@]}"; do
	r=$(http PUT "$k" "/kv/minority$k" nope)
	code=${r%% *}
	[[ $code == 503 || $code == 504 ]] || fail "a write to isolated node $k was answered $r"
	answer[$k]=$code
	if [[ $code == 503 ]]; then
		step "a write to isolated node $k: 503 (not applied, and never will be)"
	else
		step "a write to isolated node $k: 504 (outcome unknown: a request it forwarded before the cut may still arrive)"
	fi
done
for k in "${cut[@]}"; do
	docker network connect --alias "raft-node$k" "$net" "$(container "$k")"
done
step "reconnected; waiting for everyone to catch up"
for k in 1 2 3 4 5; do
	eventually 30 has "$k" during10 m10 || fail "node $k did not catch up"
done
for k in "${cut[@]}"; do
	r=$(http GET "${major[0]}" "/kv/minority$k")
	if [[ ${answer[$k]} == 503 ]]; then
		[[ ${r%% *} == 404 ]] || fail "a write answered 503 through node $k exists: $r"
	else
		step "the 504 write through node $k: $([[ ${r%% *} == 200 ]] && echo "applied after all" || echo "not applied")"
	fi
done
for k in 1 2 3 4 5; do
	[[ $(get "$k" during3 stale) == m3 ]] || fail "node $k differs"
done
echo "PASS: partition"
