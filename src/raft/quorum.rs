//! Majority arithmetic.

use super::types::LogIndex;

/// Votes or acknowledgements needed out of `voters`.
pub fn quorum_size(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest value that a majority of `values` (one per voter) has reached: the
/// candidate commit index when `values` are match indexes.
pub fn quorum_value(values: &mut [LogIndex]) -> LogIndex {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[quorum_size(values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_match_indexes() {
        assert_eq!(quorum_value(&mut [5]), 5);
        assert_eq!(quorum_value(&mut [5, 3, 1]), 3);
        assert_eq!(quorum_value(&mut [1, 3, 5, 7]), 3); // 3 of 4 must hold it
        assert_eq!(quorum_value(&mut [9, 9, 0, 0, 1]), 1);
        assert_eq!(quorum_size(5), 3);
        assert_eq!(quorum_size(4), 3);
    }
}
