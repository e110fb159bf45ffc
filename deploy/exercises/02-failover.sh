#!/usr/bin/env bash
# Exercise 2, leader failover: write, kill the leader's container, a new leader is elected
# and writes continue; restart the old leader: it catches up and rejoins as a follower.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start_cluster failover 3

for i in $(seq 1 20); do put 1 "before$i" "v$i"; done
old=$(leader)
step "node $old leads; wrote 20 keys; docker-compose kill node$old"
dc kill "node$old" >/dev/null 2>&1
others=()
for k in 1 2 3; do ((k == old)) || others+=("$k"); done
new=$(leader "${others[@]}")
[[ $new != "$old" ]] || fail "no new leader"
step "node $new leads now; writing through node ${others[0]}"
for i in $(seq 1 20); do put "${others[0]}" "after$i" "w$i"; done
step "restarting node$old"
dc start "node$old" >/dev/null 2>&1
eventually 30 has "$old" after20 w20 || fail "node $old did not catch up"
s=$(curl -s -m 2 "$(url "$old")/status")
[[ $(field "$s" role) == follower ]] || fail "node $old is not a follower: $s"
[[ $(get "$old" before7) == v7 ]] || fail "node $old lost before7"
step "node $old caught up and follows node $(field "$s" leader)"
echo "PASS: leader failover"
