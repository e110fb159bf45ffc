use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{ApplyResult, Command, KvOp};
use super::sessions::SessionTable;
use crate::raft::LogIndex;

/// The key-value map plus the session table: everything a snapshot must capture.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<String, Vec<u8>>,
    sessions: SessionTable,
}

impl KvStore {
    /// Applies the committed command at `index`. Returns its result and the index it took
    /// effect at: for a retried request, the recorded result and the original index.
    pub fn apply(&mut self, index: LogIndex, cmd: &Command) -> (ApplyResult, LogIndex) {
        if let Some(session) = &cmd.session {
            if let Some(previous) = self.sessions.duplicate(session) {
                return previous;
            }
        }
        let result = match &cmd.op {
            KvOp::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                ApplyResult::Put
            }
            KvOp::Delete { key } => ApplyResult::Deleted {
                existed: self.data.remove(key).is_some(),
            },
        };
        if let Some(session) = &cmd.session {
            self.sessions.record(session, index, result.clone());
        }
        (result, index)
    }

    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        self.data.get(key)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// Every key and value, in key order (used by tests to compare replicas).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.data.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::ClientSession;

    fn put(k: &str, v: &str) -> Command {
        Command {
            op: KvOp::Put {
                key: k.into(),
                value: v.as_bytes().to_vec(),
            },
            session: None,
        }
    }

    #[test]
    fn put_get_delete() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(1, &put("a", "1")), (ApplyResult::Put, 1));
        assert_eq!(kv.get("a").map(|v| v.as_slice()), Some(&b"1"[..]));
        let del = Command {
            op: KvOp::Delete { key: "a".into() },
            session: None,
        };
        assert_eq!(kv.apply(2, &del).0, ApplyResult::Deleted { existed: true });
        assert_eq!(kv.apply(3, &del).0, ApplyResult::Deleted { existed: false });
        assert!(kv.get("a").is_none());
    }

    #[test]
    fn retried_request_applies_once() {
        let mut kv = KvStore::default();
        let mut first = put("a", "1");
        first.session = Some(ClientSession {
            client_id: "c".into(),
            seq: 1,
        });
        kv.apply(1, &first);
        kv.apply(2, &put("a", "2"));
        // The retry of seq 1 arrives after another client's write: it must not reapply.
        assert_eq!(
            kv.apply(3, &first),
            (ApplyResult::Put, 1),
            "the original index"
        );
        assert_eq!(kv.get("a").map(|v| v.as_slice()), Some(&b"2"[..]));
    }
}
