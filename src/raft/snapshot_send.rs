//! A leader streaming a snapshot to one follower (Figure 13, sender side): which chunks are
//! in flight, what the follower has stored, when to resend and when to start over. Pure, so
//! tests drive it without a runtime; the Replicator owns one while a transfer runs and
//! moves the bytes.

use std::collections::VecDeque;

use super::types::LogPoint;

/// A chunk to put on the wire as an InstallSnapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub offset: u64,
    pub data: Vec<u8>,
    pub last: bool,
}

/// What a follower's answer means for the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReply {
    /// The follower stored more (or the same); keep streaming.
    Progress,
    /// The follower holds the snapshot: the transfer is over.
    Installed,
    /// The follower lost what it had stored (it restarted, or started another snapshot):
    /// start a fresh stream.
    Restart,
}

/// Heartbeat intervals without progress before the unconfirmed chunks are resent. A
/// follower storing a chunk can take longer than one interval; only a real loss (a
/// reconnect) stalls for this long.
pub const STALL_TICKS: u32 = 8;

/// One transfer: up to `window` chunks in flight, go-back-N on a stall.
#[derive(Debug)]
pub struct SnapshotSend {
    pub point: LogPoint,
    /// Identifies this transfer on the wire.
    pub stream: u64,
    window: usize,
    unacked: VecDeque<SnapshotChunk>,
    /// Where the next chunk taken from the stream starts.
    next_offset: u64,
    /// Bytes the follower has confirmed storing.
    acked: u64,
    /// The stream's last chunk has been taken.
    ended: bool,
    /// Heartbeat intervals since the follower last confirmed more.
    idle_ticks: u32,
}

impl SnapshotSend {
    pub fn new(point: LogPoint, stream: u64, window: usize) -> Self {
        SnapshotSend {
            point,
            stream,
            window: window.max(1),
            unacked: VecDeque::new(),
            next_offset: 0,
            acked: 0,
            ended: false,
            idle_ticks: 0,
        }
    }

    /// Is there room in the window for another chunk from the stream?
    pub fn wants_chunk(&self) -> bool {
        !self.ended && self.unacked.len() < self.window
    }

    /// Takes the stream's next chunk; returns it to send.
    pub fn push_chunk(&mut self, data: Vec<u8>, last: bool) -> SnapshotChunk {
        let chunk = SnapshotChunk {
            offset: self.next_offset,
            data,
            last,
        };
        self.next_offset += chunk.data.len() as u64;
        self.ended |= last;
        self.unacked.push_back(chunk.clone());
        chunk
    }

    /// The follower answered: it stores `next_offset` bytes, or has `installed` it all.
    pub fn on_response(&mut self, next_offset: u64, installed: bool) -> SnapshotReply {
        if installed {
            return SnapshotReply::Installed;
        }
        if next_offset < self.acked || next_offset > self.next_offset {
            return SnapshotReply::Restart;
        }
        if next_offset > self.acked {
            self.acked = next_offset;
            self.idle_ticks = 0;
        }
        while self
            .unacked
            .front()
            .is_some_and(|c| c.offset + c.data.len() as u64 <= next_offset && !c.last)
        {
            self.unacked.pop_front();
        }
        SnapshotReply::Progress
    }

    /// A heartbeat interval passed. If the follower confirmed nothing for `STALL_TICKS` of
    /// them, a chunk was lost: resend everything unconfirmed. Otherwise an empty chunk at
    /// the confirmed offset keeps the follower from starting an election.
    pub fn on_tick(&mut self) -> Vec<SnapshotChunk> {
        self.idle_ticks += 1;
        let stalled = self.idle_ticks >= STALL_TICKS;
        if stalled {
            self.idle_ticks = 0;
        }
        if stalled && !self.unacked.is_empty() {
            return self.unacked.iter().cloned().collect();
        }
        // Nothing to resend: an empty chunk tells the follower the leader is alive (and
        // its answer says where it stands).
        vec![SnapshotChunk {
            offset: self.acked,
            data: Vec::new(),
            last: false,
        }]
    }

    /// Bytes the follower has confirmed.
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point() -> LogPoint {
        LogPoint { index: 50, term: 2 }
    }

    #[test]
    fn window_limits_chunks_in_flight_and_acks_open_it() {
        let mut s = SnapshotSend::new(point(), 1, 2);
        assert!(s.wants_chunk());
        assert_eq!(s.push_chunk(vec![1; 10], false).offset, 0);
        assert_eq!(s.push_chunk(vec![2; 10], false).offset, 10);
        assert!(!s.wants_chunk(), "window of 2 is full");
        assert_eq!(s.on_response(10, false), SnapshotReply::Progress);
        assert!(s.wants_chunk());
        let last = s.push_chunk(vec![3; 5], true);
        assert_eq!((last.offset, last.last), (20, true));
        assert!(!s.wants_chunk(), "the stream has ended");
        assert_eq!(s.on_response(25, true), SnapshotReply::Installed);
    }

    #[test]
    fn a_stall_resends_everything_unconfirmed_and_idle_sends_keep_alives() {
        let mut s = SnapshotSend::new(point(), 1, 4);
        s.push_chunk(vec![1; 10], false);
        s.push_chunk(vec![2; 10], false);
        // A slow follower is not a lost chunk: only keep-alives for a while.
        for _ in 1..STALL_TICKS {
            let k = s.on_tick();
            assert!(k.len() == 1 && k[0].data.is_empty());
        }
        // The first chunk was lost: the follower keeps answering 0.
        assert_eq!(s.on_response(0, false), SnapshotReply::Progress);
        let resent = s.on_tick();
        assert_eq!(
            resent.iter().map(|c| c.offset).collect::<Vec<_>>(),
            vec![0, 10]
        );
        s.on_response(20, false);
        let idle = s.on_tick();
        assert_eq!(idle.len(), 1);
        assert!(idle[0].data.is_empty() && idle[0].offset == 20 && !idle[0].last);
    }

    #[test]
    fn a_follower_that_lost_its_partial_store_restarts_the_transfer() {
        let mut s = SnapshotSend::new(point(), 1, 4);
        s.push_chunk(vec![1; 10], false);
        s.push_chunk(vec![2; 10], false);
        assert_eq!(s.on_response(20, false), SnapshotReply::Progress);
        assert_eq!(s.acked(), 20);
        assert_eq!(s.on_response(0, false), SnapshotReply::Restart);
        assert_eq!(s.on_response(99, false), SnapshotReply::Restart);
    }
}
