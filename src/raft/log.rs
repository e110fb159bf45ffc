//! The in-memory view of the replicated log: index arithmetic over the entries that follow
//! the last snapshot. The LogStore actor makes the same sequence of changes durable.

use super::types::{Entry, LogIndex, Term};

/// Entries `snapshot_index + 1 ..= last_index()`, plus the index and term the snapshot ends at.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: Vec<Entry>,
    /// `ends[i]`: approximate bytes of every entry ever appended through `entries[i]` (a
    /// running total), so the bytes between two indexes is one subtraction.
    ends: Vec<u64>,
    /// The running total before `entries[0]`.
    start_bytes: u64,
}

impl RaftLog {
    /// A log that starts after a snapshot ending at (`snapshot_index`, `snapshot_term`).
    pub fn new(snapshot_index: LogIndex, snapshot_term: Term, entries: Vec<Entry>) -> Self {
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: Vec::new(),
            ends: Vec::new(),
            start_bytes: 0,
        };
        for e in entries {
            if e.index == log.last_index() + 1 {
                log.append(e);
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

    /// Every entry in the log, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
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
        let end = self.ends.last().copied().unwrap_or(self.start_bytes);
        self.ends.push(end + entry.approx_size() as u64);
        self.entries.push(entry);
    }

    /// Removes every entry with index `>= from`.
    pub fn truncate_from(&mut self, from: LogIndex) {
        let keep = if from <= self.snapshot_index {
            0
        } else {
            (from - self.snapshot_index - 1) as usize
        };
        self.entries.truncate(keep);
        self.ends.truncate(keep);
    }

    /// The running byte total through `index`, clamped to the entries held.
    fn total_through(&self, index: LogIndex) -> u64 {
        if index <= self.snapshot_index || self.ends.is_empty() {
            return self.start_bytes;
        }
        let i = ((index - self.snapshot_index) as usize).min(self.ends.len());
        self.ends[i - 1]
    }

    /// Approximate bytes of every entry ever appended through `index` (a running total
    /// that survives compaction), clamped to the entries held.
    pub fn running_total(&self, index: LogIndex) -> u64 {
        self.total_through(index)
    }

    /// Approximate bytes of the entries held in `after + 1 ..= through`.
    pub fn bytes_between(&self, after: LogIndex, through: LogIndex) -> u64 {
        self.total_through(through)
            .saturating_sub(self.total_through(after))
    }

    /// The lowest index `p` (at least the snapshot index) such that the entries held in
    /// `p + 1 ..= through` take at most `budget` bytes.
    pub fn start_keeping_bytes(&self, through: LogIndex, budget: u64) -> LogIndex {
        let target = self.total_through(through).saturating_sub(budget);
        if self.start_bytes >= target {
            return self.snapshot_index;
        }
        // ends is increasing: the first entry whose running total reaches the target.
        let i = self.ends.partition_point(|&end| end < target);
        self.snapshot_index + i as u64 + 1
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
            self.start_bytes = self.ends[drop - 1];
            self.entries.drain(..drop);
            self.ends.drain(..drop);
        } else {
            self.entries.clear();
            self.ends.clear();
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
    fn byte_accounting_follows_appends_truncation_and_compaction() {
        let sized = |index, n: usize| Entry {
            index,
            term: 1,
            payload: crate::raft::Payload::Command(vec![0; n].into()),
        };
        // Sizes 32 + 100, 32 + 200, ... (approx_size adds 32).
        let mut log = RaftLog::new(0, 0, (1..=5).map(|i| sized(i, i as usize * 100)).collect());
        assert_eq!(log.bytes_between(0, 5), 5 * 32 + 1500);
        assert_eq!(log.bytes_between(2, 4), 2 * 32 + 700);
        assert_eq!(
            log.bytes_between(4, 99),
            32 + 500,
            "clamped to the entries held"
        );
        // Keep at most 600 bytes ending at 5: entry 5 alone (532) fits, 4 and 5 do not.
        assert_eq!(log.start_keeping_bytes(5, 600), 4);
        assert_eq!(log.start_keeping_bytes(5, 10_000), 0);
        assert_eq!(log.start_keeping_bytes(5, 0), 5);
        log.compact_to(2, 1);
        assert_eq!(log.bytes_between(2, 5), 3 * 32 + 1200);
        assert_eq!(log.start_keeping_bytes(5, 10_000), 2);
        log.truncate_from(5);
        log.append(sized(5, 1));
        assert_eq!(log.bytes_between(2, 5), 3 * 32 + 700 + 1);
        log.compact_to(9, 3); // not held: everything goes
        assert_eq!(log.bytes_between(0, 20), 0);
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
