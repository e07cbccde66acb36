//! What an agent agrees to run when a coordinator asks.
//!
//! A sweep spec comes from the network: from an operator, or from whoever
//! holds the coordinator. The agent decides for itself what that spec may
//! touch on its host, from its own command line, never from the spec alone:
//!
//! - **Models**: a hub repository must match one of `--allow-model`'s
//!   patterns (default: the SST-2 DistilBERT and nothing else), and an
//!   entry `PATTERN@COMMIT` pins it to that commit, whose weights are
//!   checked against the hub's SHA-256 (see `model::hub`); a local
//!   directory must lie inside one of `--allow-model-dir`'s directories
//!   (default: none), after symbolic links are resolved.
//! - **Points that cannot fit**: a point whose memory estimate exceeds what
//!   the device has is refused before it runs (see `runner`).
//! - **Points that crashed the agent**: marked on disk before they run; a
//!   point that was running when the agent died twice is refused after the
//!   restart instead of crashing the agent again and again (see
//!   [`CrashMarker`]).
//!
//! The standalone `fleetbench-agent bench` is the host owner's own command
//! and is not subject to this policy.

use std::path::{Path, PathBuf};

use fleetbench_common::SweepSpec;
use fleetbench_common::names::clean_text;
use fleetbench_common::spec::DEFAULT_MODEL;

use crate::model::split_revision;

/// The hub repositories an agent runs unless told otherwise: the SST-2
/// DistilBERT under both of its names.
pub const DEFAULT_ALLOWED_MODELS: [&str; 2] = [
    DEFAULT_MODEL,
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
];

/// The agent's model policy (`--allow-model`, `--allow-model-dir`).
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    /// Hub repository patterns; `*` matches any run of characters.
    pub models: Vec<String>,
    /// Directories (canonical) under which local model directories may be.
    pub directories: Vec<PathBuf>,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy {
            models: DEFAULT_ALLOWED_MODELS.map(String::from).into(),
            directories: Vec::new(),
        }
    }
}

impl ModelPolicy {
    /// A policy from the command line. An empty `models` keeps the default;
    /// every directory must exist (it is resolved now, once).
    pub fn new(models: Vec<String>, directories: &[PathBuf]) -> Result<ModelPolicy, String> {
        let mut policy = ModelPolicy::default();
        if !models.is_empty() {
            policy.models = models;
        }
        for dir in directories {
            let canonical = dir.canonicalize().map_err(|e| {
                format!(
                    "--allow-model-dir {}: {e}: give an existing directory",
                    dir.display()
                )
            })?;
            policy.directories.push(canonical);
        }
        Ok(policy)
    }

    /// Whether this agent runs `spec`'s model, and the model to load: the
    /// spec's, pinned to a commit (`org/name@COMMIT`) when the agent's
    /// `--allow-model` entry pins one. The error says what the agent's owner
    /// would have to allow.
    pub fn check(&self, spec: &SweepSpec) -> Result<String, String> {
        let model = spec.model.trim();
        let shown = clean_text(model, 200);
        if is_local(model) {
            let path = Path::new(model);
            let canonical = path
                .canonicalize()
                .map_err(|_| format!("model directory '{shown}' does not exist on this host"))?;
            if self.directories.iter().any(|d| canonical.starts_with(d)) {
                return Ok(model.to_string());
            }
            return Err(format!(
                "this agent does not read local model directories that a sweep names ('{shown}'): its owner can allow one with --allow-model-dir DIR"
            ));
        }
        let (repo, asked) = split_revision(model);
        for entry in &self.models {
            let (pattern, pinned) = split_revision(entry);
            if !glob_match(pattern, repo) {
                continue;
            }
            return match (pinned, asked) {
                (Some(pin), Some(rev)) if !pin.eq_ignore_ascii_case(rev) => Err(format!(
                    "this agent runs {repo} only at commit {pin} (--allow-model), not at {rev}"
                )),
                (Some(pin), _) => Ok(format!("{repo}@{pin}")),
                (None, _) => Ok(model.to_string()),
            };
        }
        Err(format!(
            "this agent does not run model '{shown}': its owner can allow it with --allow-model (allowed now: {})",
            self.models.join(", ")
        ))
    }
}

/// A spec's model names a local directory when it looks like a path, or
/// when a directory of that name exists here (the loader would open it).
fn is_local(model: &str) -> bool {
    model.starts_with(['/', '.', '~'])
        || model.contains('\\')
        || model.split('/').count() > 2
        || Path::new(model).exists()
}

/// `*` matches any run of characters (slashes included); everything else
/// matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// How many times a point may take the agent down before it is refused.
pub const MAX_CRASHES_PER_POINT: u32 = 2;

/// A file in the spool directory that names the point being measured
/// while it runs. If the agent dies during the point (killed by the kernel
/// for memory, a driver fault), the file is still there at the next start:
/// that point is then reported failed instead of being run again, so one bad
/// spec cannot crash-loop a fleet.
#[derive(Debug, Clone)]
pub struct CrashMarker {
    path: PathBuf,
    /// Every point found running at a start, one JSON object per line: kept
    /// so that the point is refused however often the sweep is re-sent.
    history: PathBuf,
}

/// The point that was running when the agent last died.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunningPoint {
    pub sweep_id: String,
    pub device_id: String,
    pub batch_size: usize,
}

impl CrashMarker {
    pub fn in_dir(spool_dir: &Path) -> CrashMarker {
        CrashMarker {
            path: spool_dir.join("running-point.json"),
            history: spool_dir.join("crashed-points.jsonl"),
        }
    }

    /// At start: a point found running (the last process died in it) moves
    /// to the history, and is returned.
    pub fn settle(&self) -> std::io::Result<Option<RunningPoint>> {
        use std::io::Write as _;
        let Some(point) = self.crashed() else {
            self.end();
            return Ok(None);
        };
        let mut line = serde_json::to_string(&point).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.history)?;
        file.write_all(line.as_bytes())?;
        file.sync_all()?;
        self.end();
        Ok(Some(point))
    }

    /// The points of `sweep_id` that crashed this agent
    /// [`MAX_CRASHES_PER_POINT`] times: not to be run again. One crash is
    /// given the benefit of the doubt (the agent may have been killed for
    /// another reason, by an operator or a node drain).
    pub fn given_up_in(&self, sweep_id: &str) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<(String, usize), u32> =
            std::collections::BTreeMap::new();
        for p in self.crashed_in(sweep_id) {
            *counts.entry((p.device_id, p.batch_size)).or_default() += 1;
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n >= MAX_CRASHES_PER_POINT)
            .map(|(key, _)| key)
            .collect()
    }

    /// The points of `sweep_id` that crashed this agent before, once per crash.
    pub fn crashed_in(&self, sweep_id: &str) -> Vec<RunningPoint> {
        std::fs::read_to_string(&self.history)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<RunningPoint>(l).ok())
            .filter(|p| p.sweep_id == sweep_id)
            .collect()
    }

    /// Written (and flushed) before a point runs.
    pub fn begin(&self, point: &RunningPoint) -> std::io::Result<()> {
        use std::io::Write as _;
        let text = serde_json::to_string(point).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&self.path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }

    /// Removed when the point ends, however it ends, short of a crash.
    pub fn end(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The point that was running when the agent died, if any.
    pub fn crashed(&self) -> Option<RunningPoint> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: &str) -> SweepSpec {
        SweepSpec {
            model: model.into(),
            ..SweepSpec::default()
        }
    }

    #[test]
    fn by_default_only_the_sst2_distilbert_runs() {
        let policy = ModelPolicy::default();
        assert!(policy.check(&spec(DEFAULT_MODEL)).is_ok());
        assert!(policy.check(&spec(DEFAULT_ALLOWED_MODELS[1])).is_ok());
        let e = policy
            .check(&spec("evil/huge-model"))
            .expect_err("other repo");
        assert!(
            e.contains("--allow-model") && e.contains("evil/huge-model"),
            "{e}"
        );
        for path in ["/etc", "/root/.ssh", "../../etc", "./models/x"] {
            let e = policy.check(&spec(path)).expect_err(path);
            assert!(
                e.contains("--allow-model-dir") || e.contains("does not exist"),
                "{path}: {e}"
            );
        }
    }

    #[test]
    fn allowed_directories_hold_even_against_links_and_dot_dots() {
        let root = tempfile::tempdir().expect("tempdir");
        let allowed = root.path().join("models");
        let model = allowed.join("tiny");
        std::fs::create_dir_all(&model).expect("mkdir");
        let outside = root.path().join("secret");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, allowed.join("link")).expect("symlink");
        let policy = ModelPolicy::new(vec![], std::slice::from_ref(&allowed)).expect("policy");
        assert!(policy.check(&spec(model.to_str().expect("utf-8"))).is_ok());
        for escape in [allowed.join("link"), allowed.join("../secret")] {
            let e = policy
                .check(&spec(escape.to_str().expect("utf-8")))
                .expect_err("outside");
            assert!(e.contains("--allow-model-dir"), "{e}");
        }
    }

    #[test]
    fn a_pinned_entry_fixes_the_commit_and_refuses_another() {
        let pin = "714eb0fa89d2f80546fda750413ed43d93601a13";
        let other = "0000000000000000000000000000000000000000";
        let policy = ModelPolicy::new(vec![format!("{DEFAULT_MODEL}@{pin}")], &[]).expect("policy");
        assert_eq!(
            policy.check(&spec(DEFAULT_MODEL)),
            Ok(format!("{DEFAULT_MODEL}@{pin}"))
        );
        assert_eq!(
            policy.check(&spec(&format!("{DEFAULT_MODEL}@{pin}"))),
            Ok(format!("{DEFAULT_MODEL}@{pin}"))
        );
        let e = policy
            .check(&spec(&format!("{DEFAULT_MODEL}@{other}")))
            .expect_err("another commit");
        assert!(e.contains("only at commit 714eb0fa"), "{e}");
    }

    #[test]
    fn patterns_match_whole_names() {
        assert!(glob_match("org/*", "org/model"));
        assert!(glob_match("*", "anything/at-all"));
        assert!(glob_match("org/*-sst-2-*", "org/distil-sst-2-english"));
        assert!(!glob_match("org/*", "other/model"));
        assert!(!glob_match("org/model", "org/model-2"));
        assert!(!glob_match("a*b*c", "acb"));
    }

    #[test]
    fn a_point_that_was_running_at_a_crash_is_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = CrashMarker::in_dir(dir.path());
        assert_eq!(marker.crashed(), None);
        let point = RunningPoint {
            sweep_id: "s".into(),
            device_id: "cpu".into(),
            batch_size: 64,
        };
        marker.begin(&point).expect("begin");
        // A new process finds it, and keeps it for every later start.
        let restarted = CrashMarker::in_dir(dir.path());
        assert_eq!(restarted.crashed(), Some(point.clone()));
        assert_eq!(restarted.settle().expect("settle"), Some(point.clone()));
        assert_eq!(restarted.crashed(), None);
        assert_eq!(restarted.settle().expect("again"), None);
        assert_eq!(restarted.crashed_in("s"), std::slice::from_ref(&point));
        assert!(restarted.crashed_in("other").is_empty());
        // Once is forgiven; twice is given up on.
        assert!(restarted.given_up_in("s").is_empty());
        marker.begin(&point).expect("begin");
        restarted.settle().expect("settle");
        assert_eq!(restarted.given_up_in("s"), [("cpu".to_string(), 64)]);
        marker
            .begin(&RunningPoint {
                batch_size: 8,
                ..restarted.crashed_in("s")[0].clone()
            })
            .expect("begin");
        marker.end();
        assert_eq!(marker.crashed(), None);
    }
}
