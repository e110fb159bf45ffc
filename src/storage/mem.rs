//! In-memory storage for the simulator: a "disk" that survives a simulated crash of the
//! node that owns it. What was synced is kept; a write still in flight when the node
//! crashes is lost, because a crash moves the disk to a new incarnation and writes from
//! the old one are ignored. The same disk carries the state machine's store
//! ([`MemStoreDisk`]), which loses every write not synced before the crash.

use std::sync::{Arc, Mutex};

use super::{apply_batch_to, slice_entries, InitialState, Storage, StorageError};
use crate::kv::MemStoreDisk;
use crate::raft::{Entry, LogIndex, PersistBatch};

#[derive(Default)]
struct DiskImage {
    durable: InitialState,
    incarnation: u64,
}

/// The durable image shared between a simulated node and the test harness.
#[derive(Clone, Default)]
pub struct MemDisk {
    inner: Arc<Mutex<DiskImage>>,
    store: MemStoreDisk,
}

impl MemDisk {
    pub fn new() -> Self {
        MemDisk::default()
    }

    /// What a node starting now would load from its log.
    pub fn load(&self) -> InitialState {
        self.inner
            .lock()
            .map(|d| d.durable.clone())
            .unwrap_or_default()
    }

    /// The state machine's store on this disk.
    pub fn store(&self) -> MemStoreDisk {
        self.store.clone()
    }

    /// The owning node crashed: writes still on their way are dropped, and the store
    /// loses what it had not synced.
    pub fn crash(&self) {
        if let Ok(mut d) = self.inner.lock() {
            d.incarnation += 1;
        }
        self.store.crash();
    }

    /// Storage for the node incarnation starting now.
    pub fn storage(&self) -> MemStorage {
        let incarnation = self.inner.lock().map(|d| d.incarnation).unwrap_or(0);
        MemStorage {
            disk: self.clone(),
            incarnation,
        }
    }
}

/// Storage whose `persist` lands in a [`MemDisk`].
pub struct MemStorage {
    disk: MemDisk,
    incarnation: u64,
}

impl Storage for MemStorage {
    fn persist(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        if let Ok(mut d) = self.disk.inner.lock() {
            if d.incarnation == self.incarnation {
                apply_batch_to(&mut d.durable, batch);
            }
        }
        Ok(())
    }

    fn is_blocking(&self) -> bool {
        false
    }

    fn read_entries(
        &self,
        from: LogIndex,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        Ok(self
            .disk
            .inner
            .lock()
            .ok()
            .and_then(|d| slice_entries(&d.durable.entries, from, max_entries, max_bytes)))
    }
}
