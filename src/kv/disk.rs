//! Where the state machine's store lives: a file in the data directory, or the
//! simulator's crashable memory. Both give a redb [`Database`], and both can build a new
//! store beside the current one (a snapshot being installed) and swap it in atomically.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::warn;
use redb::{Builder, Database, StorageBackend};

use super::error::StoreError;

/// The store's file in the data directory.
pub const STORE_FILE: &str = "store.redb";
/// A snapshot being installed is built here and renamed over `STORE_FILE` when complete.
pub const STAGING_FILE: &str = "store.redb.installing";

/// The seam: a directory on disk in production, memory in the simulator.
#[derive(Clone, Debug)]
pub enum StoreDisk {
    Dir(PathBuf),
    Mem(MemStoreDisk),
}

impl fmt::Display for StoreDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreDisk::Dir(d) => write!(f, "{}", d.join(STORE_FILE).display()),
            StoreDisk::Mem(_) => f.write_str("<memory store>"),
        }
    }
}

fn builder(cache_bytes: usize) -> Builder {
    let mut b = Builder::new();
    b.set_cache_size(cache_bytes);
    b
}

fn err(path: &Path, what: &str, e: impl fmt::Display) -> StoreError {
    StoreError {
        path: path.display().to_string(),
        reason: format!("{}: {}", what, e),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, "cannot sync the directory", e))
}

impl StoreDisk {
    /// Opens (or creates) the current store. A half-built store left by a crash during a
    /// snapshot install is removed: it was never swapped in, so the old state stands.
    pub fn open(&self, cache_bytes: usize) -> Result<Database, StoreError> {
        match self {
            StoreDisk::Dir(dir) => {
                let staging = dir.join(STAGING_FILE);
                if staging.exists() {
                    warn!(
                        "{}: removing a snapshot install that a crash interrupted",
                        staging.display()
                    );
                    fs::remove_file(&staging)
                        .map_err(|e| err(&staging, "cannot remove the unfinished install", e))?;
                }
                let path = dir.join(STORE_FILE);
                let existed = path.exists();
                let db = builder(cache_bytes)
                    .create(&path)
                    .map_err(|e| err(&path, "cannot open the state machine store", e))?;
                if !existed {
                    sync_dir(dir)?;
                }
                Ok(db)
            }
            StoreDisk::Mem(m) => builder(cache_bytes)
                .create_with_backend(m.backend(false))
                .map_err(|e| err(Path::new("<memory store>"), "cannot open", e)),
        }
    }

    /// Creates an empty store beside the current one, for a snapshot being installed.
    pub fn create_staging(&self, cache_bytes: usize) -> Result<Database, StoreError> {
        match self {
            StoreDisk::Dir(dir) => {
                let staging = dir.join(STAGING_FILE);
                if staging.exists() {
                    fs::remove_file(&staging)
                        .map_err(|e| err(&staging, "cannot remove an earlier install", e))?;
                }
                builder(cache_bytes)
                    .create(&staging)
                    .map_err(|e| err(&staging, "cannot create", e))
            }
            StoreDisk::Mem(m) => builder(cache_bytes)
                .create_with_backend(m.backend(true))
                .map_err(|e| err(Path::new("<memory staging store>"), "cannot create", e)),
        }
    }

    /// Makes the staging store (committed durably and closed by the caller) the current
    /// one in a single atomic step.
    pub fn promote_staging(&self) -> Result<(), StoreError> {
        match self {
            StoreDisk::Dir(dir) => {
                let staging = dir.join(STAGING_FILE);
                let path = dir.join(STORE_FILE);
                fs::rename(&staging, &path)
                    .map_err(|e| err(&path, "cannot swap in the installed snapshot", e))?;
                sync_dir(dir)
            }
            StoreDisk::Mem(m) => {
                m.promote();
                Ok(())
            }
        }
    }

    /// Drops a staging store that will not be used.
    pub fn discard_staging(&self) {
        match self {
            StoreDisk::Dir(dir) => {
                let _ = fs::remove_file(dir.join(STAGING_FILE));
            }
            StoreDisk::Mem(m) => m.discard(),
        }
    }
}

/// One in-memory "file": what the store wrote, and what had been synced when.
#[derive(Default, Debug)]
struct MemFile {
    data: Mutex<Vec<u8>>,
    durable: Mutex<Vec<u8>>,
}

#[derive(Default, Debug)]
struct MemStoreState {
    current: Arc<MemFile>,
    staging: Option<Arc<MemFile>>,
    incarnation: u64,
}

/// The simulator's store disk: survives a simulated crash, losing every write the store
/// had not synced (redb's non-durable commits), like a real disk losing its page cache.
#[derive(Clone, Default, Debug)]
pub struct MemStoreDisk {
    inner: Arc<Mutex<MemStoreState>>,
}

impl MemStoreDisk {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemStoreState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backend(&self, staging: bool) -> MemBackend {
        let mut s = self.lock();
        let file = if staging {
            let f = Arc::new(MemFile::default());
            s.staging = Some(f.clone());
            f
        } else {
            s.current.clone()
        };
        MemBackend {
            file,
            disk: self.clone(),
            incarnation: s.incarnation,
        }
    }

    fn promote(&self) {
        let mut s = self.lock();
        if let Some(f) = s.staging.take() {
            s.current = f;
        }
    }

    fn discard(&self) {
        self.lock().staging = None;
    }

    /// The node crashed: unsynced writes are gone, a half-built staging store too, and the
    /// crashed incarnation can no longer write.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.incarnation += 1;
        s.staging = None;
        let current = s.current.clone();
        drop(s);
        let durable = current
            .durable
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let mut data = current.data.lock().unwrap_or_else(|p| p.into_inner());
        *data = durable;
    }

    fn incarnation(&self) -> u64 {
        self.lock().incarnation
    }
}

/// A redb storage backend over a [`MemFile`].
#[derive(Debug)]
struct MemBackend {
    file: Arc<MemFile>,
    disk: MemStoreDisk,
    incarnation: u64,
}

fn crashed() -> std::io::Error {
    std::io::Error::other("the node that opened this store crashed")
}

impl MemBackend {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.disk.incarnation() == self.incarnation {
            Ok(())
        } else {
            Err(crashed())
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.file.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StorageBackend for MemBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.data().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let data = self.data();
        let start = offset as usize;
        let end = start + out.len();
        if end > data.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.data().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        let data = self.data().clone();
        if let Ok(mut d) = self.file.durable.lock() {
            *d = data;
        }
        Ok(())
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        let mut data = self.data();
        let start = offset as usize;
        let end = start + bytes.len();
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        Ok(())
    }
}
