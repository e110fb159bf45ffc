use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{ApplyResult, ClientSession};
use crate::raft::LogIndex;

/// Sessions kept at most; the one used longest ago (by log index) is dropped first.
/// Expiry depends only on the log, so every replica drops the same sessions at the same entry.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct SessionRecord {
    last_seq: u64,
    last_result: ApplyResult,
    last_index: LogIndex,
}

/// Per-client memory of the newest applied request, replicated through the log and snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTable {
    clients: BTreeMap<String, SessionRecord>,
    /// (last_index, client_id): the eviction order.
    by_index: BTreeSet<(LogIndex, String)>,
    capacity: Option<usize>,
}

impl SessionTable {
    pub fn with_capacity(capacity: usize) -> Self {
        SessionTable {
            capacity: Some(capacity),
            ..Default::default()
        }
    }

    /// If `session` was applied before, the result to return instead of applying again,
    /// with the log index it was applied at (for a superseded request, the index of the
    /// newest request of that client).
    pub fn duplicate(&self, session: &ClientSession) -> Option<(ApplyResult, LogIndex)> {
        let rec = self.clients.get(&session.client_id)?;
        if session.seq == rec.last_seq {
            Some((rec.last_result.clone(), rec.last_index))
        } else if session.seq < rec.last_seq {
            Some((ApplyResult::Superseded, rec.last_index))
        } else {
            None
        }
    }

    /// Records that `session` was applied at `index` with `result`.
    pub fn record(&mut self, session: &ClientSession, index: LogIndex, result: ApplyResult) {
        if let Some(old) = self.clients.get(&session.client_id) {
            self.by_index
                .remove(&(old.last_index, session.client_id.clone()));
        }
        self.clients.insert(
            session.client_id.clone(),
            SessionRecord {
                last_seq: session.seq,
                last_result: result,
                last_index: index,
            },
        );
        self.by_index.insert((index, session.client_id.clone()));
        let cap = self.capacity.unwrap_or(MAX_SESSIONS);
        while self.clients.len() > cap {
            match self.by_index.pop_first() {
                Some((_, id)) => {
                    self.clients.remove(&id);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, seq: u64) -> ClientSession {
        ClientSession {
            client_id: id.into(),
            seq,
        }
    }

    #[test]
    fn retry_returns_recorded_result_and_older_is_superseded() {
        let mut t = SessionTable::default();
        assert_eq!(t.duplicate(&s("a", 1)), None);
        t.record(&s("a", 1), 10, ApplyResult::Deleted { existed: true });
        assert_eq!(
            t.duplicate(&s("a", 1)),
            Some((ApplyResult::Deleted { existed: true }, 10))
        );
        t.record(&s("a", 2), 11, ApplyResult::Put);
        assert_eq!(t.duplicate(&s("a", 1)), Some((ApplyResult::Superseded, 11)));
        assert_eq!(t.duplicate(&s("a", 3)), None);
        assert_eq!(t.duplicate(&s("b", 1)), None);
    }

    #[test]
    fn eviction_is_by_oldest_log_index() {
        let mut t = SessionTable::with_capacity(2);
        t.record(&s("a", 1), 1, ApplyResult::Put);
        t.record(&s("b", 1), 2, ApplyResult::Put);
        t.record(&s("a", 2), 3, ApplyResult::Put); // a is now the most recent
        t.record(&s("c", 1), 4, ApplyResult::Put); // evicts b
        assert_eq!(t.len(), 2);
        assert_eq!(t.duplicate(&s("b", 1)), None);
        assert_eq!(t.duplicate(&s("a", 2)), Some((ApplyResult::Put, 3)));
    }
}
