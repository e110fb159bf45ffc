//! Linearizable reads by read index (§6.4 of the thesis).

use super::*;

impl RaftCore {
    pub(super) fn start_read_round(&mut self) {
        self.read_seq += 1;
        self.round_inflight = true;
        self.effects.push(Effect::BroadcastHeartbeat {
            read_seq: self.read_seq,
        });
    }

    pub(super) fn check_reads(&mut self) {
        if self.role != Role::Leader || self.pending_reads.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = self
            .membership()
            .voters
            .keys()
            .map(|p| {
                if *p == self.id {
                    self.read_seq
                } else {
                    self.peer_read_ack.get(p).copied().unwrap_or(0)
                }
            })
            .collect();
        let acked = quorum_value(&mut acks);
        // Reads wait until this term's no-op is committed: before that the leader may not
        // know the latest committed index.
        if self.commit_index < self.noop_index {
            return;
        }
        while let Some(front) = self.pending_reads.front() {
            if front.seq > acked {
                break;
            }
            if let Some(read) = self.pending_reads.pop_front() {
                self.effects.push(Effect::ReadReady {
                    id: read.id,
                    read_index: read.read_index,
                });
            }
        }
        if acked >= self.read_seq {
            self.round_inflight = false;
            if !self.pending_reads.is_empty() {
                self.start_read_round();
            }
        }
    }
}
