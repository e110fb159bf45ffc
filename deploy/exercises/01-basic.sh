#!/usr/bin/env bash
# Exercise 1, basic operations: start, wait for a leader, write through one node, and read
# the same value from every node.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_cluster basic 3

l=$(leader)
step "node $l leads"
step "PUT greeting=hello through node 1"
put 1 greeting hello
for k in 1 2 3; do
	v=$(get "$k" greeting)
	[[ $v == hello ]] || fail "node $k read '$v'"
	step "node $k reads greeting=$v (linearizable)"
	eventually 10 has "$k" greeting hello || fail "node $k never applied greeting=hello"
	step "node $k has applied it (stale read)"
done
step "DELETE greeting through node 2"
r=$(http DELETE 2 /kv/greeting)
[[ ${r%% *} == 200 ]] || fail "DELETE: $r"
r=$(http GET 3 /kv/greeting)
[[ ${r%% *} == 404 ]] || fail "after DELETE node 3 answered $r"
echo "PASS: basic operations"
