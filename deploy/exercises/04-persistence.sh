#!/usr/bin/env bash
# Exercise 4, persistence: write, stop every container, start them again: every
# acknowledged write is there.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_cluster persistence 3

for i in $(seq 1 50); do put $(((i % 3) + 1)) "key$i" "value$i"; done
step "50 writes acknowledged; stopping every container"
dc stop >/dev/null 2>&1
step "starting them again"
dc start >/dev/null 2>&1
l=$(leader)
step "node $l leads after the restart"
# A follower that has not heard from the new leader yet rightly refuses a linearizable
# read (503, no leader known): wait until every node knows who leads.
for k in 1 2 3; do
	eventually 10 follows "$k" "$l" || fail "node $k does not know that node $l leads"
done
for i in $(seq 1 50); do
	v=$(get $(((i % 3) + 1)) "key$i")
	[[ $v == "value$i" ]] || fail "key$i is '$v' after the restart"
done
echo "PASS: persistence (50 of 50 writes survived)"
