//! In-memory storage for the simulator: a "disk" that survives a simulated crash of the
//! node that owns it (what was synced is kept, what was in flight is lost).

use std::sync::{Arc, Mutex};

use super::{apply_batch_to, InitialState, Storage, StorageError};
use crate::raft::PersistBatch;

/// The durable image shared between a simulated node and the test harness.
pub type MemDisk = Arc<Mutex<InitialState>>;

/// Storage whose `persist` lands in a [`MemDisk`].
pub struct MemStorage {
    disk: MemDisk,
}

impl MemStorage {
    pub fn new(disk: MemDisk) -> Self {
        MemStorage { disk }
    }

    /// What a node restarting from `disk` would load.
    pub fn load(disk: &MemDisk) -> InitialState {
        disk.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

impl Storage for MemStorage {
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        if let Ok(mut d) = self.disk.lock() {
            apply_batch_to(&mut d, batch);
        }
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        false
    }
}
