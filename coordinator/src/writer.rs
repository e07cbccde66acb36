//! Group commit for results (and host verdicts). Every result must be durable before its ack, and
//! a durable SQLite commit costs an fsync (milliseconds). Committing each
//! result on its own would cap the coordinator at a few hundred results per
//! second and queue everyone behind everyone else; instead one writer thread
//! takes whatever results are waiting, commits them in one transaction, and
//! answers each. Under load batches grow by themselves (the fsync of one
//! batch is the time in which the next one gathers); when idle a result is
//! committed alone, at once. Durability is unchanged: nobody is answered
//! before the commit that holds their result.

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::store::{
    AgentRecord, HostVerdict, Inserted, NewResult, Store, StoreError, WriteOp, WriteOutcome,
};

/// Why the writer could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the result writer thread")]
    Thread(#[source] std::io::Error),
}

/// Why a write was not stored.
#[derive(Debug, Clone, Error)]
pub enum WriteError {
    /// The batch's commit failed; every write in it shares the one error.
    #[error("{0}")]
    Commit(#[source] Arc<StoreError>),
    #[error("the result writer has stopped")]
    Stopped,
    /// The writer answered with an outcome of another kind: a bug.
    #[error("the result writer answered a {0} with an outcome of another kind")]
    WrongOutcome(&'static str),
}

/// Largest batch per transaction: bounds the latency one commit adds.
const MAX_BATCH: usize = 1024;
/// Results waiting for the writer; a full queue makes sessions wait (backpressure).
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<WriteOutcome, WriteError>>;

#[derive(Debug, Clone)]
pub struct ResultWriter {
    tx: mpsc::Sender<(WriteOp, Reply)>,
}

impl ResultWriter {
    /// Starts the writer thread on its own connection to the database at `path`.
    pub fn start(path: &Path) -> Result<ResultWriter, StartError> {
        let store = Store::open(path)?;
        let (tx, mut rx) = mpsc::channel::<(WriteOp, Reply)>(QUEUE);
        std::thread::Builder::new()
            .name("result-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch.into_iter().unzip();
                    match store.apply(&ops) {
                        Ok(verdicts) => {
                            for (reply, verdict) in replies.into_iter().zip(verdicts) {
                                // A caller that stopped waiting needs no answer.
                                let _ = reply.send(Ok(verdict));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, batch = ops.len(), "could not commit results");
                            let e = Arc::new(e);
                            for reply in replies {
                                // A caller that stopped waiting needs no answer.
                                let _ = reply.send(Err(WriteError::Commit(e.clone())));
                            }
                        }
                    }
                }
            })
            .map_err(StartError::Thread)?;
        Ok(ResultWriter { tx })
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((op, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Stores `result`; returns once it is committed (or could not be).
    pub async fn insert(&self, result: NewResult) -> Result<Inserted, WriteError> {
        match self.submit(WriteOp::Result(result)).await? {
            WriteOutcome::Result(inserted) => Ok(inserted),
            _ => Err(WriteError::WrongOutcome("result")),
        }
    }

    /// Records a host's verdict unless it already has one; true if it changed.
    pub async fn finish_host(&self, verdict: HostVerdict) -> Result<bool, WriteError> {
        match self.submit(WriteOp::FinishHost(verdict)).await? {
            WriteOutcome::HostChanged(changed) => Ok(changed),
            _ => Err(WriteError::WrongOutcome("host verdict")),
        }
    }

    /// Records an agent's introduction (name, version, inventory).
    pub async fn upsert_agent(&self, agent: AgentRecord) -> Result<(), WriteError> {
        match self.submit(WriteOp::UpsertAgent(agent)).await? {
            WriteOutcome::AgentStored => Ok(()),
            _ => Err(WriteError::WrongOutcome("agent")),
        }
    }
}
