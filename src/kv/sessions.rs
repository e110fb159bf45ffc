//! Client sessions (exactly-once writes): the per-client record of the newest applied
//! request, kept in the store next to the data it describes and written in the same
//! transaction.
//!
//! The rule (in the spirit of the thesis, §6.3):
//! - A session opens with the client's request of seq 1 (`FIRST_SEQ`).
//! - It lives while it is used: it expires once it has been idle for `SESSION_TTL_MS` of
//!   *log time*, the time the leaders stamped on the entries (never going backwards), so
//!   every replica expires the same sessions at the same entry, replays included.
//! - A request of a session that is unknown (expired, or never opened) with a seq above
//!   the first is refused with "session expired": the server can no longer tell whether
//!   it was applied, so it never applies it. The client starts a new session.
//! - While `MAX_SESSIONS` sessions are live, no new one opens ("too many sessions"):
//!   evicting a live session early would let its retries apply twice.

use serde::{Deserialize, Serialize};

use super::command::{ApplyResult, ClientSession};
use crate::raft::LogIndex;

/// Live sessions kept at most; past it, new sessions are refused until some expire.
pub const MAX_SESSIONS: usize = 100_000;

/// A session expires after this long without a request, in log time (1 hour). A client
/// must not retry a request longer than this after its session's previous request.
pub const SESSION_TTL_MS: u64 = 60 * 60 * 1000;

/// The seq that opens a session.
pub const FIRST_SEQ: u64 = 1;

/// What the store remembers about one client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub last_seq: u64,
    pub last_result: ApplyResult,
    pub last_index: LogIndex,
    /// Log time of the client's newest request (ms).
    pub last_ms: u64,
}

/// What becomes of a request that carries a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// Apply it (and record it in the session).
    Apply,
    /// Applied before: answer this instead (with the index it took effect at).
    Duplicate(ApplyResult, LogIndex),
    /// The session is unknown and this is not its first request: it may have been applied
    /// under a session that expired since. Refuse it.
    Expired,
}

/// The rule for a request of `session`, given the client's record if it has one.
pub fn check(record: Option<&SessionRecord>, session: &ClientSession) -> SessionCheck {
    match record {
        None if session.seq > FIRST_SEQ => SessionCheck::Expired,
        None => SessionCheck::Apply,
        Some(rec) if session.seq == rec.last_seq => {
            SessionCheck::Duplicate(rec.last_result.clone(), rec.last_index)
        }
        // Older than the newest applied: applied (or superseded) before; its own result
        // is no longer kept.
        Some(rec) if session.seq < rec.last_seq => {
            SessionCheck::Duplicate(ApplyResult::Superseded, rec.last_index)
        }
        Some(_) => SessionCheck::Apply,
    }
}

/// Has a session last used at log time `last_ms` expired at log time `now_ms`?
pub fn expired(last_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(last_ms) > SESSION_TTL_MS
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
            last_ms: 0,
        };
        assert_eq!(
            check(Some(&rec), &s(2)),
            SessionCheck::Duplicate(ApplyResult::Deleted { existed: true }, 10)
        );
        assert_eq!(
            check(Some(&rec), &s(1)),
            SessionCheck::Duplicate(ApplyResult::Superseded, 10)
        );
        assert_eq!(check(Some(&rec), &s(3)), SessionCheck::Apply);
    }

    #[test]
    fn an_unknown_session_opens_only_with_its_first_request() {
        assert_eq!(check(None, &s(FIRST_SEQ)), SessionCheck::Apply);
        assert_eq!(check(None, &s(FIRST_SEQ + 1)), SessionCheck::Expired);
        assert_eq!(check(None, &s(u64::MAX)), SessionCheck::Expired);
    }

    #[test]
    fn expiry_is_by_idle_log_time() {
        assert!(!expired(1_000, 1_000 + SESSION_TTL_MS));
        assert!(expired(1_000, 1_001 + SESSION_TTL_MS));
        // Log time never goes backwards, but a record from the future expires nothing.
        assert!(!expired(5_000, 1_000));
    }
}
