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

use tokio::sync::{mpsc, oneshot};

use crate::store::{
    AgentRecord, HostVerdict, Inserted, NewResult, Store, StoreError, WriteOp, WriteOutcome,
};

/// Largest batch per transaction: bounds the latency one commit adds.
const MAX_BATCH: usize = 1024;
/// Results waiting for the writer; a full queue makes sessions wait (backpressure).
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<WriteOutcome, String>>;

#[derive(Debug, Clone)]
pub struct ResultWriter {
    tx: mpsc::Sender<(WriteOp, Reply)>,
}

impl ResultWriter {
    /// Starts the writer thread on its own connection to the database at `path`.
    pub fn start(path: &Path) -> Result<ResultWriter, StoreError> {
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
                                let _ = reply.send(Ok(verdict));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, batch = ops.len(), "could not commit results");
                            for reply in replies {
                                let _ = reply.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the result writer: {e}")))?;
        Ok(ResultWriter { tx })
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((op, reply))
            .await
            .map_err(|_| "the result writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the result writer has stopped".to_string())?
    }

    /// Stores `result`; returns once it is committed (or could not be).
    pub async fn insert(&self, result: NewResult) -> Result<Inserted, String> {
        match self.submit(WriteOp::Result(result)).await? {
            WriteOutcome::Result(inserted) => Ok(inserted),
            _ => Err("unexpected write outcome".into()),
        }
    }

    /// Records a host's verdict unless it already has one; true if it changed.
    pub async fn finish_host(&self, verdict: HostVerdict) -> Result<bool, String> {
        match self.submit(WriteOp::FinishHost(verdict)).await? {
            WriteOutcome::HostChanged(changed) => Ok(changed),
            _ => Err("unexpected write outcome".into()),
        }
    }

    /// Records an agent's introduction (name, version, inventory).
    pub async fn upsert_agent(&self, agent: AgentRecord) -> Result<(), String> {
        self.submit(WriteOp::UpsertAgent(agent)).await.map(|_| ())
    }
}
