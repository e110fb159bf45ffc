//! The LogStore actor: makes each [`PersistBatch`] durable and answers only once it is.
//!
//! Real disk writes run on tokio's blocking pool (`spawn_blocking`) so they never stall the
//! async threads; the in-memory storage of the simulator answers on the actor's own thread,
//! after a configurable simulated fsync latency, so simulated runs stay deterministic.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{error, warn};

use crate::metrics::Metrics;
use crate::raft::{Entry, LogIndex, PersistBatch};
use crate::storage::{Storage, StorageError};

/// Make this batch durable; the reply comes after the fsync.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct PersistCmd(pub PersistBatch);

/// Read durable entries from `from` on (see [`Storage::read_entries`]): a Replicator
/// whose peer needs entries no longer held in memory.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<Entry>>, StorageError>")]
pub struct ReadEntries {
    pub from: LogIndex,
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// Stop the actor (node shutdown or simulated crash: an unfinished write is lost).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopLogStore;

pub struct LogStore {
    storage: Option<Box<dyn Storage>>,
    /// Simulated fsync time for non-blocking (in-memory) storage.
    sim_latency: Duration,
    metrics: Arc<Metrics>,
}

impl LogStore {
    pub fn new(storage: Box<dyn Storage>, sim_latency: Duration, metrics: Arc<Metrics>) -> Self {
        LogStore {
            storage: Some(storage),
            sim_latency,
            metrics,
        }
    }
}

impl Actor for LogStore {
    type Context = Context<Self>;
}

fn missing() -> StorageError {
    StorageError::Io {
        path: "<log store>".into(),
        source: std::io::Error::other("storage lost after an earlier failure"),
    }
}

impl Handler<PersistCmd> for LogStore {
    type Result = AtomicResponse<Self, Result<(), StorageError>>;

    fn handle(&mut self, PersistCmd(batch): PersistCmd, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(storage) = self.storage.take() else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(missing()))));
        };
        if storage.is_blocking() {
            let mut storage = storage;
            let metrics = self.metrics.clone();
            let job = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let result = storage.persist(&batch);
                let took = started.elapsed();
                metrics.fsync_latency.observe(took.as_secs_f64());
                metrics
                    .fsync_batch_entries
                    .observe(batch.entries.len() as f64);
                if took >= Duration::from_millis(50) {
                    warn!(
                        "log write of {} entries took {} ms (a slow or busy disk)",
                        batch.entries.len(),
                        took.as_millis()
                    );
                }
                (storage, result)
            });
            AtomicResponse::new(Box::pin(fut::wrap_future::<_, Self>(job).map(
                |joined, act, _| match joined {
                    Ok((storage, result)) => {
                        act.storage = Some(storage);
                        result
                    }
                    Err(e) => {
                        error!("log store write task failed: {}", e);
                        Err(missing())
                    }
                },
            )))
        } else {
            self.storage = Some(storage);
            let latency = self.sim_latency;
            AtomicResponse::new(Box::pin(
                fut::wrap_future::<_, Self>(tokio::time::sleep(latency)).map(move |_, act, _| {
                    match act.storage.as_mut() {
                        Some(s) => s.persist(&batch),
                        None => Err(missing()),
                    }
                }),
            ))
        }
    }
}

impl Handler<ReadEntries> for LogStore {
    type Result = ResponseFuture<Result<Option<Vec<Entry>>, StorageError>>;

    /// A file log is read on a blocking thread from a view of its segments taken now, so
    /// that the read neither waits for the writes queued here nor holds them up.
    fn handle(&mut self, msg: ReadEntries, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(storage) = self.storage.as_ref() else {
            return Box::pin(std::future::ready(Err(missing())));
        };
        let Some(reader) = storage.log_reader() else {
            let result = storage.read_entries(msg.from, msg.max_entries, msg.max_bytes);
            return Box::pin(std::future::ready(result));
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                reader.read_entries(msg.from, msg.max_entries, msg.max_bytes)
            })
            .await
            .unwrap_or_else(|e| {
                error!("log read task failed: {}", e);
                Err(missing())
            })
        })
    }
}

impl Handler<StopLogStore> for LogStore {
    type Result = ();

    fn handle(&mut self, _: StopLogStore, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
