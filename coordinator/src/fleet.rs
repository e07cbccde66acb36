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
    /// twin to time out. While the holder was heard from within `alive_ms`,
    /// only a session presenting the holder's own `instance_id` may take the
    /// name over; an empty one proves nothing and never does (it used to,
    /// which let any agent with the shared token hijack a live host).
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
            && (instance_id.is_empty() || old.instance_id != instance_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> AgentSender {
        mpsc::channel(1).0
    }

    #[test]
    fn a_live_name_is_taken_over_only_with_the_holders_instance_id() {
        let fleet = Fleet::default();
        let alive = 15_000;
        fleet
            .connect("gpu-07", "inst-a", "10.0.0.7:1", sender(), 1_000, alive)
            .expect("first session");
        // Another instance, or none at all, is refused while the holder lives.
        for intruder in ["inst-b", ""] {
            let refused = fleet
                .connect("gpu-07", intruder, "10.6.6.6:1", sender(), 2_000, alive)
                .expect_err(intruder);
            assert_eq!(refused.peer, "10.0.0.7:1");
        }
        // The same instance (a restarted agent) replaces its old session.
        let second = fleet
            .connect("gpu-07", "inst-a", "10.0.0.7:2", sender(), 3_000, alive)
            .expect("same instance");
        assert!(fleet.is_current("gpu-07", second));
        // A silent holder is presumed dead after `alive`: then the name is free.
        fleet
            .connect(
                "gpu-07",
                "inst-b",
                "10.0.0.8:1",
                sender(),
                3_000 + alive,
                alive,
            )
            .expect("holder silent");
    }

    #[test]
    fn an_empty_instance_id_never_takes_a_live_name_even_from_an_empty_one() {
        let fleet = Fleet::default();
        fleet
            .connect("gpu-01", "", "a", sender(), 0, 15_000)
            .expect("first");
        assert!(
            fleet
                .connect("gpu-01", "", "b", sender(), 1, 15_000)
                .is_err()
        );
    }
}
