//! The in-memory view of the replicated log: index arithmetic over the entries that follow
//! the last snapshot. The LogStore actor makes the same sequence of changes durable.

use super::types::{Entry, LogIndex, Term};

/// Entries `snapshot_index + 1 ..= last_index()`, plus the index and term the snapshot ends at.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log that starts after a snapshot ending at (`snapshot_index`, `snapshot_term`).
    pub fn new(snapshot_index: LogIndex, snapshot_term: Term, entries: Vec<Entry>) -> Self {
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: Vec::new(),
        };
        for e in entries {
            if e.index == log.last_index() + 1 {
                log.entries.push(e);
            }
        }
        log
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`; `None` if it is compacted away or beyond the end.
    /// Index 0 (before the first entry) has term 0; the snapshot's last index has its term.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries from `from` on, at most `max_entries` of them and about `max_bytes` (at least
    /// one entry is returned when any exists).
    pub fn slice(&self, from: LogIndex, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        if from <= self.snapshot_index || from > self.last_index() {
            return Vec::new();
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let mut bytes = 0;
        let mut out = Vec::new();
        for e in self.entries[start..].iter().take(max_entries) {
            bytes += e.approx_size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// Entries in `from ..= to`.
    pub fn range(&self, from: LogIndex, to: LogIndex) -> Vec<Entry> {
        if to < from {
            return Vec::new();
        }
        self.slice(from, (to - from + 1) as usize, usize::MAX)
    }

    /// First index of the run of entries with term `term` that contains `index`.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut i = index;
        while i > self.snapshot_index + 1 && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Appends one entry; its index must be `last_index() + 1`.
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push(entry);
    }

    /// Removes every entry with index `>= from`.
    pub fn truncate_from(&mut self, from: LogIndex) {
        if from <= self.snapshot_index {
            self.entries.clear();
        } else {
            self.entries
                .truncate((from - self.snapshot_index - 1) as usize);
        }
    }

    /// Forgets entries up to `index` (covered by a snapshot whose last entry has `term`).
    /// Entries after `index` are kept when the log holds `index` with that term (Figure 13,
    /// step 6); otherwise the whole log is discarded.
    pub fn compact_to(&mut self, index: LogIndex, term: Term) {
        if index <= self.snapshot_index {
            return;
        }
        if self.term_at(index) == Some(term) {
            let drop = (index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Figure 2, RequestVote rule 2: is a log ending at (`last_term`, `last_index`) at least
    /// as up to date as this one? Compare last terms first, then lengths (§5.4.1).
    pub fn candidate_is_up_to_date(&self, last_term: Term, last_index: LogIndex) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Number of entries held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Payload;

    fn e(index: LogIndex, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: Payload::Noop,
        }
    }

    #[test]
    fn index_arithmetic_after_compaction() {
        let mut log = RaftLog::new(0, 0, vec![e(1, 1), e(2, 1), e(3, 2), e(4, 2)]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.first_index_of_term_at(4), 3);
        log.compact_to(2, 1);
        assert_eq!(log.snapshot_index(), 2);
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(1), None);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.slice(3, 10, usize::MAX).len(), 2);
        assert!(log.slice(2, 10, usize::MAX).is_empty());
    }

    #[test]
    fn compaction_with_mismatched_term_discards_everything() {
        let mut log = RaftLog::new(0, 0, vec![e(1, 1), e(2, 1)]);
        log.compact_to(5, 3);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.last_term(), 3);
        assert!(log.is_empty());
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let log = RaftLog::new(0, 0, vec![e(1, 1), e(2, 2)]);
        assert!(log.candidate_is_up_to_date(3, 1));
        assert!(log.candidate_is_up_to_date(2, 2));
        assert!(!log.candidate_is_up_to_date(2, 1));
        assert!(!log.candidate_is_up_to_date(1, 9));
    }
}
