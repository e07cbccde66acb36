//! The connected agents: one entry per live session, with the channel that
//! reaches it. The store keeps every agent ever seen; this map knows which of
//! them can be talked to right now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetbench_proto::v1;
use tokio::sync::mpsc;

/// Messages to one agent's session. Bounded so one stuck agent cannot make
/// the coordinator buffer without limit; a full queue ends that session.
pub type AgentSender = mpsc::Sender<Result<v1::CoordinatorMessage, tonic::Status>>;

#[derive(Debug, Clone)]
pub struct Connected {
    pub session_id: u64,
    pub sender: AgentSender,
    pub last_seen_ms: i64,
    pub active_sweep: String,
    /// What the agent said it is doing, e.g. "cuda:0 batch 64 timed".
    pub current: String,
    pub points_total: u32,
    /// Which agent process family holds the name (see `Hello.instance_id`).
    pub instance_id: String,
    pub peer: String,
}

/// A live session of another agent already holds the name.
#[derive(Debug)]
pub struct NameTaken {
    pub peer: String,
}

#[derive(Debug, Default)]
pub struct Fleet {
    sessions: Mutex<HashMap<String, Connected>>,
    next_session: AtomicU64,
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connected>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session under `name`, replacing (and so closing) an older
    /// one of the same agent: a restarted agent must not wait for its dead
    /// twin to time out. A different agent (another `instance_id`) is refused
    /// while the holder was heard from within `alive_ms`.
    pub fn connect(
        &self,
        name: &str,
        instance_id: &str,
        peer: &str,
        sender: AgentSender,
        now: i64,
        alive_ms: i64,
    ) -> Result<u64, NameTaken> {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = self.lock();
        if let Some(old) = map.get(name)
            && !instance_id.is_empty()
            && !old.instance_id.is_empty()
            && old.instance_id != instance_id
            && now - old.last_seen_ms < alive_ms
        {
            return Err(NameTaken {
                peer: old.peer.clone(),
            });
        }
        let previous = map.insert(
            name.to_string(),
            Connected {
                session_id,
                sender,
                last_seen_ms: now,
                active_sweep: String::new(),
                current: String::new(),
                points_total: 0,
                instance_id: instance_id.to_string(),
                peer: peer.to_string(),
            },
        );
        drop(map);
        if previous.is_some() {
            tracing::info!(
                agent = name,
                "a new session replaces the agent's previous one"
            );
        }
        Ok(session_id)
    }

    /// Removes the session if it is still the current one for `name`.
    pub fn disconnect(&self, name: &str, session_id: u64) -> bool {
        let mut map = self.lock();
        if map.get(name).is_some_and(|c| c.session_id == session_id) {
            map.remove(name);
            true
        } else {
            false
        }
    }

    pub fn is_current(&self, name: &str, session_id: u64) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|c| c.session_id == session_id)
    }

    pub fn update(&self, name: &str, session_id: u64, f: impl FnOnce(&mut Connected)) {
        if let Some(c) = self
            .lock()
            .get_mut(name)
            .filter(|c| c.session_id == session_id)
        {
            f(c);
        }
    }

    pub fn get(&self, name: &str) -> Option<Connected> {
        self.lock().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends without waiting; a full or closed queue is reported as false.
    pub fn send(&self, name: &str, msg: v1::CoordinatorMessage) -> bool {
        match self.get(name) {
            Some(c) => c.sender.try_send(Ok(msg)).is_ok(),
            None => false,
        }
    }
}
