//! Client sessions (exactly-once writes): the per-client record of the newest applied
//! request, kept in the store next to the data it describes and written in the same
//! transaction.

use serde::{Deserialize, Serialize};

use super::command::{ApplyResult, ClientSession};
use crate::raft::LogIndex;

/// Sessions kept at most; the one used longest ago (by log index) is dropped first.
/// Expiry depends only on the log, so every replica drops the same sessions at the same entry.
pub const MAX_SESSIONS: usize = 10_000;

/// What the store remembers about one client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub last_seq: u64,
    pub last_result: ApplyResult,
    pub last_index: LogIndex,
}

impl SessionRecord {
    /// If `session` was applied before, the result to return instead of applying again,
    /// with the log index it was applied at (for a superseded request, the index of the
    /// newest request of that client).
    pub fn duplicate(&self, session: &ClientSession) -> Option<(ApplyResult, LogIndex)> {
        if session.seq == self.last_seq {
            Some((self.last_result.clone(), self.last_index))
        } else if session.seq < self.last_seq {
            Some((ApplyResult::Superseded, self.last_index))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seq: u64) -> ClientSession {
        ClientSession {
            client_id: "a".into(),
            seq,
        }
    }

    #[test]
    fn retry_returns_recorded_result_and_older_is_superseded() {
        let rec = SessionRecord {
            last_seq: 2,
            last_result: ApplyResult::Deleted { existed: true },
            last_index: 10,
        };
        assert_eq!(
            rec.duplicate(&s(2)),
            Some((ApplyResult::Deleted { existed: true }, 10))
        );
        assert_eq!(rec.duplicate(&s(1)), Some((ApplyResult::Superseded, 10)));
        assert_eq!(rec.duplicate(&s(3)), None);
    }
}
