/// The state machine's store failed; `path` names the file (or the in-memory store).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StoreError {
    pub path: String,
    pub reason: String,
}
