//! The agent's on-disk spool: every result (and every "sweep finished") is
//! written here before it is sent, and removed only when the coordinator
//! acknowledges it. After a crash, a restart or a lost connection, whatever is
//! still here is sent again; the coordinator's idempotent insert makes the
//! repeat harmless. That is the agent's half of at-least-once delivery.
//!
//! One file per message, named by its sequence number, written to a temporary
//! name, flushed and renamed into place: a reader (or a crash) never sees half
//! a message. The next sequence number is persisted the same way so numbers
//! never go backwards across restarts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetbench_proto::v1;
use prost::Message as _;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool directory {path} is not usable ({source}): give a writable --spool DIR")]
    Unusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not write to the spool at {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Unacknowledged messages, in memory and on disk.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next_seq: u64,
    pending: BTreeMap<u64, v1::AgentMessage>,
    /// This agent's identity across restarts (see `Hello.instance_id`).
    instance_id: String,
    /// Encoded bytes of `pending`, shared with the benchmark thread so it can
    /// wait while the spool is over its limit (see [`Spool::usage`]).
    bytes: Arc<AtomicU64>,
}

const SEQ_FILE: &str = "next-seq";
const INSTANCE_FILE: &str = "instance-id";
const EXTENSION: &str = "pb";

impl Spool {
    /// Opens (creating) the spool in `dir` and loads what a previous run left.
    /// Corrupt entries (impossible with the rename protocol, but a disk can
    /// lie) are moved aside rather than crashing the agent.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let unusable = |source| SpoolError::Unusable {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(unusable)?;
        // Prove the directory is writable now, not at the first result.
        let probe = dir.join(".write-test");
        fs::write(&probe, b"ok").map_err(unusable)?;
        let _ = fs::remove_file(&probe);

        let mut pending = BTreeMap::new();
        let mut max_seen = 0u64;
        for entry in fs::read_dir(dir).map_err(unusable)? {
            let path = entry.map_err(unusable)?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name
                .strip_suffix(&format!(".{EXTENSION}"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            max_seen = max_seen.max(seq);
            match fs::read(&path)
                .ok()
                .and_then(|b| v1::AgentMessage::decode(b.as_slice()).ok())
            {
                Some(msg) => {
                    pending.insert(seq, msg);
                }
                None => {
                    tracing::warn!(path = %path.display(), "unreadable spool entry moved aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        let stored_next = fs::read_to_string(dir.join(SEQ_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1);
        let bytes = pending.values().map(|m| m.encoded_len() as u64).sum();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            next_seq: stored_next.max(max_seen + 1),
            pending,
            instance_id: String::new(),
            bytes: Arc::new(AtomicU64::new(bytes)),
        };
        spool.instance_id = match fs::read_to_string(dir.join(INSTANCE_FILE)) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = format!(
                    "{:016x}",
                    fleetbench_common::rng::SplitMix64::from_entropy().next_u64()
                );
                spool.write_atomic(INSTANCE_FILE, id.as_bytes())?;
                id
            }
        };
        Ok(spool)
    }

    /// Gives `msg` the next sequence number, stores it durably, and returns the
    /// message with its number filled in, ready to send.
    pub fn append(&mut self, mut msg: v1::AgentMessage) -> Result<v1::AgentMessage, SpoolError> {
        let seq = self.next_seq;
        match msg.body.as_mut() {
            Some(v1::agent_message::Body::Result(r)) => r.seq = seq,
            Some(v1::agent_message::Body::Finished(f)) => f.seq = seq,
            _ => {}
        }
        self.write_atomic(&format!("{seq:020}.{EXTENSION}"), &msg.encode_to_vec())?;
        self.next_seq = seq + 1;
        self.write_atomic(SEQ_FILE, self.next_seq.to_string().as_bytes())?;
        self.bytes
            .fetch_add(msg.encoded_len() as u64, Ordering::Relaxed);
        self.pending.insert(seq, msg.clone());
        Ok(msg)
    }

    /// Forgets an acknowledged message. Unknown numbers are ignored: an ack
    /// can arrive twice after a reconnect.
    pub fn ack(&mut self, seq: u64) {
        if let Some(m) = self.pending.remove(&seq) {
            self.bytes
                .fetch_sub(m.encoded_len() as u64, Ordering::Relaxed);
            let _ = fs::remove_file(self.dir.join(format!("{seq:020}.{EXTENSION}")));
        }
    }

    /// Every unacknowledged message, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &v1::AgentMessage> {
        self.pending.values()
    }

    /// Stable across restarts of the agent that owns this spool.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Bytes waiting for acknowledgement, readable from other threads.
    pub fn usage(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// (device, batch size) of every result of `sweep_id` waiting here, so a
    /// resumed sweep need not measure them again.
    pub fn points_of(&self, sweep_id: &str) -> Vec<(String, usize)> {
        self.pending
            .values()
            .filter_map(|m| match &m.body {
                Some(v1::agent_message::Body::Result(r)) if r.sweep_id == sweep_id => Some((
                    r.device.as_ref()?.id.clone(),
                    r.point.as_ref()?.batch_size as usize,
                )),
                _ => None,
            })
            .collect()
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let err = |source| SpoolError::Write {
            path: path.clone(),
            source,
        };
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        // The rename itself is durable only once the directory is synced.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(sweep: &str, batch: u32) -> v1::AgentMessage {
        v1::AgentMessage {
            body: Some(v1::agent_message::Body::Result(v1::PointResultMsg {
                sweep_id: sweep.into(),
                device: Some(v1::DeviceDescription {
                    id: "cpu".into(),
                    kind: "cpu".into(),
                    ..Default::default()
                }),
                point: Some(v1::PointResult {
                    batch_size: batch,
                    seq_len: 128,
                    outcome: None,
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn messages_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path()).expect("open");
        let a = spool.append(result("s1", 8)).expect("append");
        let b = spool.append(result("s1", 16)).expect("append");
        let seq = |m: &v1::AgentMessage| match &m.body {
            Some(v1::agent_message::Body::Result(r)) => r.seq,
            _ => 0,
        };
        assert_eq!((seq(&a), seq(&b)), (1, 2));
        spool.ack(1);
        drop(spool);

        let mut reopened = Spool::open(dir.path()).expect("reopen");
        assert_eq!(reopened.len(), 1);
        assert_eq!(reopened.points_of("s1"), vec![("cpu".to_string(), 16)]);
        assert!(reopened.points_of("s2").is_empty());
        // Numbers never go backwards, even once everything is acknowledged.
        reopened.ack(2);
        drop(reopened);
        let mut again = Spool::open(dir.path()).expect("reopen");
        assert!(again.is_empty());
        assert_eq!(seq(&again.append(result("s2", 8)).expect("append")), 3);
    }

    #[test]
    fn leftover_temporary_files_are_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("00000000000000000005.pb.tmp"), b"half").expect("write");
        let spool = Spool::open(dir.path()).expect("open");
        assert!(spool.is_empty());
        assert!(!dir.path().join("00000000000000000005.pb.tmp").exists());
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").expect("write");
        let err = Spool::open(&file.join("spool")).expect_err("must fail");
        assert!(err.to_string().contains("--spool DIR"), "{err}");
    }
}
