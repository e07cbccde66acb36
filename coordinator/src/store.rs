//! The coordinator's embedded store: SQLite in the data directory.
//!
//! Durability is the point: a result is acknowledged to its agent only after
//! the transaction that holds it has committed with `synchronous=FULL`, so an
//! acknowledged result survives a crash of the coordinator or of the machine.
//! Results are keyed by (sweep, host, device, batch size) and inserted with
//! `INSERT OR IGNORE`: the agent's re-sends after a reconnect are harmless.
//!
//! The schema evolves through numbered migrations recorded in
//! `PRAGMA user_version`, from the first release on.

use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use fleetbench_common::{
    DeviceDescription, HostInventory, ModelInfo, PointResult, RunEnvironment, SweepSpec,
};
use rusqlite::types::{ToSqlOutput, Type};
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior, params};
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::state::{HostState, SweepState, UnknownState};

// Messages include their cause: most of them reach people as one line (a
// gRPC status, a log field) that shows no source chain.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "the database at {path} was written by a newer fleetbench (schema {found}, this one knows {known}): upgrade the coordinator"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("corrupt record in the store: {0}")]
    Corrupt(#[source] BadRecord),
    /// A batch of writes came back with an outcome of another kind: a bug.
    #[error("the store answered a {0} write with no outcome of its kind")]
    NoOutcome(&'static str),
}

/// A stored value that does not read back: which row, which column, why.
#[derive(Debug, Error)]
#[error("{record}, {column}: {source}")]
pub struct BadRecord {
    /// e.g. "sweep '20261127-112319-3f9a'".
    pub record: String,
    pub column: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl From<rusqlite::Error> for StoreError {
    /// A row-reading closure can only fail with a `rusqlite::Error`; a bad
    /// record travels inside one and is unwrapped again here.
    fn from(e: rusqlite::Error) -> StoreError {
        match e {
            rusqlite::Error::FromSqlConversionFailure(i, t, inner) => {
                match inner.downcast::<BadRecord>() {
                    Ok(bad) => StoreError::Corrupt(*bad),
                    Err(inner) => {
                        StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(i, t, inner))
                    }
                }
            }
            e => StoreError::Sqlite(e),
        }
    }
}

impl BadRecord {
    fn new(
        record: String,
        column: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BadRecord {
        BadRecord {
            record,
            column,
            source: Box::new(source),
        }
    }

    /// For use inside a row closure (see `From<rusqlite::Error>`).
    fn in_row(self, index: usize) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(self))
    }
}

/// Parses a JSON column that was read as text, naming the record if it fails.
fn parse_json<T: DeserializeOwned>(
    json: &str,
    record: impl FnOnce() -> String,
    column: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(BadRecord::new(record(), column, e)))
}

/// Reads a state column inside a row closure; an unknown text names its row.
fn state_column<S: FromStr<Err = UnknownState>>(
    r: &rusqlite::Row<'_>,
    index: usize,
    record: impl FnOnce() -> String,
) -> rusqlite::Result<S> {
    let text: String = r.get(index)?;
    text.parse()
        .map_err(|e| BadRecord::new(record(), "state", e).in_row(index))
}

// States are stored as their text, which every database since the first
// release holds.
impl ToSql for SweepState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl ToSql for HostState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// Each entry moves the schema one version up. Never edit a released entry:
/// add a new one.
const UPSERT_AGENT: &str = "INSERT INTO agents (name, agent_version, inventory_json, simulated, first_seen_ms, last_seen_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?5)
     ON CONFLICT(name) DO UPDATE SET agent_version = ?2, inventory_json = ?3, simulated = ?4, last_seen_ms = ?5";

const MIGRATIONS: &[&str] = &[
    // 1: the first release.
    "CREATE TABLE agents (
        name TEXT PRIMARY KEY,
        agent_version TEXT NOT NULL,
        inventory_json TEXT NOT NULL,
        simulated INTEGER NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE TABLE sweeps (
        id TEXT PRIMARY KEY,
        spec_json TEXT NOT NULL,
        state TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        reports_dir TEXT
    );
    CREATE TABLE sweep_hosts (
        sweep_id TEXT NOT NULL REFERENCES sweeps(id),
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        notes_json TEXT NOT NULL DEFAULT '[]',
        simulated INTEGER NOT NULL,
        deadline_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        PRIMARY KEY (sweep_id, host)
    );
    CREATE TABLE results (
        sweep_id TEXT NOT NULL REFERENCES sweeps(id),
        host TEXT NOT NULL,
        device_id TEXT NOT NULL,
        batch_size INTEGER NOT NULL,
        device_json TEXT NOT NULL,
        model_json TEXT NOT NULL,
        environment_json TEXT NOT NULL,
        point_json TEXT NOT NULL,
        agent_seq INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (sweep_id, host, device_id, batch_size)
    );
    CREATE INDEX sweeps_by_state ON sweeps(state);
    CREATE INDEX sweep_hosts_by_state ON sweep_hosts(sweep_id, state);",
    // 2: report options chosen with the sweep (e.g. the baseline hardware).
    "ALTER TABLE sweeps ADD COLUMN options_json TEXT NOT NULL DEFAULT '{}';",
    // 3: a host's sweeps without a scan of every sweep's hosts (the
    // console's GPU-model filter).
    "CREATE INDEX sweep_hosts_by_host ON sweep_hosts(host);",
];

/// The columns of a [`ResultRow`], in [`result_row`]'s order.
const RESULT_COLUMNS: &str = "host, device_id, batch_size, device_json, model_json, environment_json, point_json, received_ms";

fn result_row(sweep: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<ResultRow> {
    Ok(ResultRow {
        sweep_id: sweep.to_string(),
        host: r.get(0)?,
        device_id: r.get(1)?,
        batch_size: r.get(2)?,
        device_json: r.get(3)?,
        model_json: r.get(4)?,
        environment_json: r.get(5)?,
        point_json: r.get(6)?,
        received_ms: r.get(7)?,
    })
}

/// A result's key within its sweep: where a page of results ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResultKey {
    pub host: String,
    pub device_id: String,
    pub batch_size: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub name: String,
    pub agent_version: String,
    pub inventory_json: String,
    pub simulated: bool,
    pub last_seen_ms: i64,
}

impl AgentRow {
    pub fn inventory(&self) -> Result<HostInventory, StoreError> {
        parse_json(
            &self.inventory_json,
            || format!("agent '{}'", self.name),
            "inventory_json",
        )
    }
}

/// Report options chosen when the sweep started, kept with it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepOptions {
    pub baseline: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub id: String,
    pub spec_json: String,
    pub options_json: String,
    pub state: SweepState,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
    pub reports_dir: Option<String>,
}

impl SweepRow {
    pub fn spec(&self) -> Result<SweepSpec, StoreError> {
        parse_json(&self.spec_json, || self.record(), "spec_json")
    }

    pub fn options(&self) -> Result<SweepOptions, StoreError> {
        parse_json(&self.options_json, || self.record(), "options_json")
    }

    fn record(&self) -> String {
        format!("sweep '{}'", self.id)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepHostRow {
    pub host: String,
    pub state: HostState,
    pub error: Option<String>,
    pub notes: Vec<String>,
    pub simulated: bool,
    pub deadline_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub sweep_id: String,
    pub host: String,
    pub device_id: String,
    pub batch_size: i64,
    pub device_json: String,
    pub model_json: String,
    pub environment_json: String,
    pub point_json: String,
    pub received_ms: i64,
}

impl ResultRow {
    pub fn device(&self) -> Result<DeviceDescription, StoreError> {
        parse_json(&self.device_json, || self.record(), "device_json")
    }

    pub fn model(&self) -> Result<ModelInfo, StoreError> {
        parse_json(&self.model_json, || self.record(), "model_json")
    }

    pub fn environment(&self) -> Result<RunEnvironment, StoreError> {
        parse_json(&self.environment_json, || self.record(), "environment_json")
    }

    pub fn point(&self) -> Result<PointResult, StoreError> {
        parse_json(&self.point_json, || self.record(), "point_json")
    }

    fn record(&self) -> String {
        format!(
            "result of sweep '{}', host '{}', device '{}', batch size {}",
            self.sweep_id, self.host, self.device_id, self.batch_size
        )
    }
}

/// A new result, as the session hands it over.
#[derive(Debug, Clone)]
pub struct NewResult {
    pub sweep_id: String,
    pub host: String,
    pub device_id: String,
    pub batch_size: i64,
    pub device_json: String,
    pub model_json: String,
    pub environment_json: String,
    pub point_json: String,
    pub agent_seq: u64,
    pub received_ms: i64,
}

/// A host's terminal verdict in a sweep.
#[derive(Debug, Clone)]
pub struct HostVerdict {
    pub sweep_id: String,
    pub host: String,
    /// A terminal state.
    pub state: HostState,
    pub error: Option<String>,
    pub notes: Vec<String>,
    pub now: i64,
}

/// An agent as it introduced itself.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub name: String,
    pub version: String,
    pub inventory_json: String,
    pub simulated: bool,
    pub now: i64,
}

/// A write the group-commit writer batches.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Result(NewResult),
    FinishHost(HostVerdict),
    UpsertAgent(AgentRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Result(Inserted),
    /// Whether the host's state changed (false: it was already terminal).
    HostChanged(bool),
    AgentStored,
}

/// Whether a result was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    Duplicate,
    /// The sweep does not exist or does not include this host.
    UnknownSweep,
}

/// The store. One connection behind a mutex: SQLite serialises writers anyway,
/// and every statement here is short.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn, &path.display().to_string())
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(conn: Connection, path: &str) -> Result<Store, StoreError> {
        // WAL lets readers (reports, the control API) run beside the writer;
        // FULL makes each commit durable before we acknowledge anything.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_string(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock leaves the connection itself intact.
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut guard)?)
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    pub fn upsert_agent(
        &self,
        name: &str,
        version: &str,
        inventory_json: &str,
        simulated: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        self.apply(&[WriteOp::UpsertAgent(AgentRecord {
            name: name.into(),
            version: version.into(),
            inventory_json: inventory_json.into(),
            simulated,
            now,
        })])?;
        Ok(())
    }

    /// One host's row of a sweep.
    pub fn sweep_host(&self, sweep: &str, host: &str) -> Result<Option<SweepHostRow>, StoreError> {
        Ok(self.sweep_hosts_where(sweep, Some(host))?.pop())
    }

    pub fn touch_agent(&self, name: &str, now: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE agents SET last_seen_ms = ?2 WHERE name = ?1",
                params![name, now],
            )
        })?;
        Ok(())
    }

    /// Forgets agents last seen before `before_ms` that no running sweep
    /// waits for; `keep` (the connected ones) are never forgotten. The
    /// table would otherwise grow with every name anyone ever connected as.
    /// Returns how many were removed.
    pub fn prune_agents(&self, before_ms: i64, keep: &[String]) -> Result<usize, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let stale: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT name FROM agents WHERE last_seen_ms < ?1
                     AND name NOT IN (SELECT host FROM sweep_hosts WHERE state = ?2)",
                )?;
                let rows = st.query_map(params![before_ms, HostState::Running], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut removed = 0;
            for name in stale.iter().filter(|n| !keep.contains(n)) {
                removed += tx.execute("DELETE FROM agents WHERE name = ?1", params![name])?;
            }
            tx.commit()?;
            Ok(removed)
        })
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, agent_version, inventory_json, simulated, last_seen_ms FROM agents ORDER BY name")?;
            let rows = st.query_map([], |r| {
                Ok(AgentRow {
                    name: r.get(0)?,
                    agent_version: r.get(1)?,
                    inventory_json: r.get(2)?,
                    simulated: r.get(3)?,
                    last_seen_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The sweeps with a host whose inventory has a GPU whose name contains
    /// `gpu` (case-insensitive): one query, the agents scanned once and each
    /// matching host's sweeps found by the host index.
    pub fn sweeps_with_gpu(
        &self,
        gpu: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT sh.sweep_id FROM agents a JOIN sweep_hosts sh ON sh.host = a.name
                 WHERE EXISTS (SELECT 1 FROM json_each(a.inventory_json, '$.gpus') g
                               WHERE instr(lower(json_extract(g.value, '$.name')), lower(?1)) > 0)",
            )?;
            let rows = st.query_map([gpu], |r| r.get(0))?;
            rows.collect()
        })
    }

    pub fn agent(&self, name: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(self.agents()?.into_iter().find(|a| a.name == name))
    }

    /// Creates a running sweep with its hosts, all in one transaction.
    pub fn create_sweep(
        &self,
        id: &str,
        spec_json: &str,
        options_json: &str,
        now: i64,
        hosts: &[(String, bool, i64)],
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO sweeps (id, spec_json, options_json, state, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, spec_json, options_json, SweepState::Running, now],
            )?;
            for (host, simulated, deadline) in hosts {
                tx.execute(
                    "INSERT INTO sweep_hosts (sweep_id, host, state, simulated, deadline_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, host, HostState::Running, simulated, deadline],
                )?;
            }
            tx.commit()
        })
    }

    pub fn sweep(&self, id: &str) -> Result<Option<SweepRow>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, spec_json, options_json, state, created_ms, ended_ms, reports_dir FROM sweeps WHERE id = ?1",
                params![id],
                sweep_row,
            )
            .optional()
        })
    }

    /// Newest first.
    pub fn sweeps(&self, limit: u32) -> Result<Vec<SweepRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, spec_json, options_json, state, created_ms, ended_ms, reports_dir FROM sweeps ORDER BY created_ms DESC, id DESC LIMIT ?1",
            )?;
            let rows = st.query_map(params![limit], sweep_row)?;
            rows.collect()
        })
    }

    /// How many sweeps are in each state.
    pub fn sweep_state_counts(&self) -> Result<Vec<(SweepState, i64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT state, COUNT(*) FROM sweeps GROUP BY state")?;
            let rows = st.query_map([], |r| {
                let n: i64 = r.get(1)?;
                let state = state_column(r, 0, || format!("{n} sweeps"))?;
                Ok((state, n))
            })?;
            rows.collect()
        })
    }

    /// The id of the newest sweep that has ended, if any.
    pub fn last_ended_sweep(&self) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id FROM sweeps WHERE state != ?1 ORDER BY created_ms DESC, id DESC LIMIT 1",
                [SweepState::Running],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// The most recent ended sweep before `sweep` with the same spec, for the
    /// fleet report's history section.
    pub fn previous_with_same_spec(
        &self,
        sweep: &SweepRow,
    ) -> Result<Option<SweepRow>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, spec_json, options_json, state, created_ms, ended_ms, reports_dir FROM sweeps
                 WHERE spec_json = ?1 AND id != ?2 AND created_ms <= ?3 AND state IN (?4, ?5)
                 ORDER BY created_ms DESC, id DESC LIMIT 1",
                params![
                    sweep.spec_json,
                    sweep.id,
                    sweep.created_ms,
                    SweepState::Completed,
                    SweepState::Partial
                ],
                sweep_row,
            )
            .optional()
        })
    }

    /// Ended sweeps whose reports were never recorded as written (the
    /// coordinator stopped between a sweep's end and its reports).
    pub fn ended_sweeps_without_reports(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM sweeps WHERE state != ?1 AND reports_dir IS NULL ORDER BY created_ms",
            )?;
            let rows = st.query_map([SweepState::Running], |r| r.get(0))?;
            rows.collect()
        })
    }

    pub fn running_sweeps(&self) -> Result<Vec<SweepRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, spec_json, options_json, state, created_ms, ended_ms, reports_dir FROM sweeps WHERE state = ?1 ORDER BY created_ms",
            )?;
            let rows = st.query_map([SweepState::Running], sweep_row)?;
            rows.collect()
        })
    }

    pub fn sweep_hosts(&self, id: &str) -> Result<Vec<SweepHostRow>, StoreError> {
        self.sweep_hosts_where(id, None)
    }

    fn sweep_hosts_where(
        &self,
        id: &str,
        host: Option<&str>,
    ) -> Result<Vec<SweepHostRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT host, state, error, notes_json, simulated, deadline_ms FROM sweep_hosts
                 WHERE sweep_id = ?1 AND (?2 IS NULL OR host = ?2) ORDER BY host",
            )?;
            let rows = st.query_map(params![id, host], |r| {
                let host: String = r.get(0)?;
                let record = || format!("host '{host}' of sweep '{id}'");
                let notes: String = r.get(3)?;
                Ok(SweepHostRow {
                    state: state_column(r, 1, record)?,
                    error: r.get(2)?,
                    notes: serde_json::from_str(&notes)
                        .map_err(|e| BadRecord::new(record(), "notes_json", e).in_row(3))?,
                    simulated: r.get(4)?,
                    deadline_ms: r.get(5)?,
                    host,
                })
            })?;
            rows.collect()
        })
    }

    /// Moves a host to a terminal state unless it is in one already (the
    /// first verdict stands: a late "finished" cannot undo a missed deadline).
    /// Returns whether it changed.
    pub fn finish_host(
        &self,
        sweep: &str,
        host: &str,
        state: HostState,
        error: Option<&str>,
        notes: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        let op = WriteOp::FinishHost(HostVerdict {
            sweep_id: sweep.into(),
            host: host.into(),
            state,
            error: error.map(Into::into),
            notes: notes.to_vec(),
            now,
        });
        match self.apply(std::slice::from_ref(&op))?.pop() {
            Some(WriteOutcome::HostChanged(changed)) => Ok(changed),
            _ => Err(StoreError::NoOutcome("host verdict")),
        }
    }

    /// Number of hosts of a sweep not yet in a terminal state.
    pub fn unfinished_hosts(&self, sweep: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row(
                // `state = 'running'` (the one unfinished state) is answered by
                // the (sweep_id, state) index alone; NOT IN read every host of
                // the sweep, ~2 ms per finished host at 10,000 hosts (bench/RESULTS.md).
                "SELECT COUNT(*) FROM sweep_hosts WHERE sweep_id = ?1 AND state = ?2",
                params![sweep, HostState::Running],
                |r| r.get(0),
            )
        })
    }

    /// Ends a running sweep; false when it had already ended (so exactly one
    /// caller goes on to write its reports).
    pub fn end_sweep(&self, id: &str, state: SweepState, now: i64) -> Result<bool, StoreError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE sweeps SET state = ?2, ended_ms = ?3 WHERE id = ?1 AND state = ?4",
                params![id, state, now, SweepState::Running],
            )
        })?;
        Ok(n > 0)
    }

    pub fn set_reports_dir(&self, id: &str, dir: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sweeps SET reports_dir = ?2 WHERE id = ?1",
                params![id, dir],
            )
        })?;
        Ok(())
    }

    /// Stores a result once; the commit is durable when this returns.
    pub fn insert_result(&self, r: &NewResult) -> Result<Inserted, StoreError> {
        match self.apply(&[WriteOp::Result(r.clone())])?.pop() {
            Some(WriteOutcome::Result(inserted)) => Ok(inserted),
            _ => Err(StoreError::NoOutcome("result")),
        }
    }

    /// Applies writes in ONE transaction (group commit: one fsync for the
    /// batch); each gets its own outcome. Durable when this returns.
    pub fn apply(&self, batch: &[WriteOp]) -> Result<Vec<WriteOutcome>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(batch.len());
            {
                let mut known = tx.prepare_cached("SELECT 1 FROM sweep_hosts WHERE sweep_id = ?1 AND host = ?2")?;
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO results (sweep_id, host, device_id, batch_size, device_json, model_json,
                         environment_json, point_json, agent_seq, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                let mut upsert = tx.prepare_cached(UPSERT_AGENT)?;
                // Only a running host takes a verdict: the first one stands.
                let mut finish = tx.prepare_cached(
                    "UPDATE sweep_hosts SET state = ?3, error = ?4, notes_json = ?5, ended_ms = ?6
                     WHERE sweep_id = ?1 AND host = ?2 AND state = ?7",
                )?;
                for op in batch {
                    match op {
                        WriteOp::Result(r) => {
                            if !known.exists(params![r.sweep_id, r.host])? {
                                out.push(WriteOutcome::Result(Inserted::UnknownSweep));
                                continue;
                            }
                            let n = insert.execute(params![
                                r.sweep_id,
                                r.host,
                                r.device_id,
                                r.batch_size,
                                r.device_json,
                                r.model_json,
                                r.environment_json,
                                r.point_json,
                                r.agent_seq as i64,
                                r.received_ms
                            ])?;
                            out.push(WriteOutcome::Result(if n == 1 { Inserted::New } else { Inserted::Duplicate }));
                        }
                        WriteOp::UpsertAgent(a) => {
                            upsert.execute(params![a.name, a.version, a.inventory_json, a.simulated, a.now])?;
                            out.push(WriteOutcome::AgentStored);
                        }
                        WriteOp::FinishHost(v) => {
                            let notes = serde_json::to_string(&v.notes)
                                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                            let n = finish.execute(params![
                                v.sweep_id,
                                v.host,
                                v.state,
                                v.error,
                                notes,
                                v.now,
                                HostState::Running
                            ])?;
                            out.push(WriteOutcome::HostChanged(n > 0));
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    pub fn results(&self, sweep: &str) -> Result<Vec<ResultRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                &format!(
                "SELECT {RESULT_COLUMNS} FROM results WHERE sweep_id = ?1 ORDER BY host, device_id, received_ms"
            ),
            )?;
            let rows = st.query_map(params![sweep], |r| result_row(sweep, r))?;
            rows.collect()
        })
    }

    /// Up to `limit` results of a sweep in key order (host, device, batch
    /// size), after the key `after`: one page of `GetSweep`. Keyset paging,
    /// so results stored meanwhile neither shift nor repeat a page.
    pub fn results_page(
        &self,
        sweep: &str,
        after: Option<&ResultKey>,
        limit: usize,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let (host, device, batch) = match after {
            Some(k) => (k.host.as_str(), k.device_id.as_str(), k.batch_size),
            // Before every key: '' sorts first and batch sizes are positive.
            None => ("", "", i64::MIN),
        };
        self.with(|c| {
            let mut st = c.prepare(
                &format!(
                "SELECT {RESULT_COLUMNS} FROM results WHERE sweep_id = ?1 AND (host, device_id, batch_size) > (?2, ?3, ?4)
                 ORDER BY host, device_id, batch_size LIMIT ?5"
            ),
            )?;
            let rows = st.query_map(params![sweep, host, device, batch, limit as i64], |r| result_row(sweep, r))?;
            rows.collect()
        })
    }

    /// (device, batch size) of every stored result of one host in a sweep.
    pub fn completed_points(
        &self,
        sweep: &str,
        host: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT device_id, batch_size FROM results WHERE sweep_id = ?1 AND host = ?2",
            )?;
            let rows = st.query_map(params![sweep, host], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Per host of a sweep: (results stored, distinct devices), in one query.
    pub fn result_counts(
        &self,
        sweep: &str,
    ) -> Result<std::collections::HashMap<String, (i64, i64)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT host, COUNT(*), COUNT(DISTINCT device_id) FROM results WHERE sweep_id = ?1 GROUP BY host",
            )?;
            let rows = st.query_map(params![sweep], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect()
        })
    }

    pub fn count_results(&self, sweep: &str, host: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM results WHERE sweep_id = ?1 AND host = ?2",
                params![sweep, host],
                |r| r.get(0),
            )
        })
    }
}

fn sweep_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SweepRow> {
    let id: String = r.get(0)?;
    Ok(SweepRow {
        state: state_column(r, 3, || format!("sweep '{id}'"))?,
        id,
        spec_json: r.get(1)?,
        options_json: r.get(2)?,
        created_ms: r.get(4)?,
        ended_ms: r.get(5)?,
        reports_dir: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(sweep: &str, host: &str, batch: i64) -> NewResult {
        NewResult {
            sweep_id: sweep.into(),
            host: host.into(),
            device_id: "cpu".into(),
            batch_size: batch,
            device_json: "{}".into(),
            model_json: "{}".into(),
            environment_json: "{}".into(),
            point_json: "{}".into(),
            agent_seq: 1,
            received_ms: 0,
        }
    }

    #[test]
    fn sweeps_are_found_by_their_hosts_gpu_model() {
        let store = Store::open_in_memory().expect("open");
        let inventory =
            |gpu: &str| format!("{{\"hostname\":\"x\",\"gpus\":[{{\"name\":\"{gpu}\"}}]}}");
        store
            .upsert_agent(
                "h100-host",
                "0.1.0",
                &inventory("NVIDIA H100 80GB HBM3"),
                false,
                1,
            )
            .expect("agent");
        store
            .upsert_agent("t4-host", "0.1.0", &inventory("Tesla T4"), false, 1)
            .expect("agent");
        store
            .create_sweep(
                "both",
                "{}",
                "{}",
                1,
                &[
                    ("h100-host".into(), false, 100),
                    ("t4-host".into(), false, 100),
                ],
            )
            .expect("sweep");
        store
            .create_sweep("t4-only", "{}", "{}", 2, &[("t4-host".into(), false, 100)])
            .expect("sweep");
        let found = |gpu: &str| {
            let mut v: Vec<String> = store
                .sweeps_with_gpu(gpu)
                .expect("query")
                .into_iter()
                .collect();
            v.sort();
            v
        };
        assert_eq!(found("h100"), vec!["both".to_string()]);
        assert_eq!(found("T4"), vec!["both".to_string(), "t4-only".to_string()]);
        assert!(found("A100").is_empty());
    }

    #[test]
    fn results_are_stored_once_and_only_for_known_sweeps() {
        let store = Store::open_in_memory().expect("open");
        assert_eq!(
            store.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
        store
            .create_sweep("s1", "{}", "{}", 1, &[("a".into(), false, 100)])
            .expect("create");
        assert_eq!(
            store.insert_result(&result("s1", "a", 8)).expect("insert"),
            Inserted::New
        );
        assert_eq!(
            store.insert_result(&result("s1", "a", 8)).expect("insert"),
            Inserted::Duplicate
        );
        assert_eq!(
            store.insert_result(&result("s1", "b", 8)).expect("insert"),
            Inserted::UnknownSweep
        );
        assert_eq!(
            store
                .insert_result(&result("nope", "a", 8))
                .expect("insert"),
            Inserted::UnknownSweep
        );
        assert_eq!(store.count_results("s1", "a").expect("count"), 1);
        assert_eq!(
            store.completed_points("s1", "a").expect("points"),
            vec![("cpu".to_string(), 8)]
        );
    }

    #[test]
    fn the_first_terminal_verdict_stands() {
        let store = Store::open_in_memory().expect("open");
        store
            .create_sweep("s1", "{}", "{}", 1, &[("a".into(), false, 100)])
            .expect("create");
        assert!(
            store
                .finish_host(
                    "s1",
                    "a",
                    HostState::Failed,
                    Some("missed its deadline"),
                    &[],
                    2
                )
                .expect("finish")
        );
        assert!(
            !store
                .finish_host("s1", "a", HostState::Completed, None, &[], 3)
                .expect("finish")
        );
        assert_eq!(
            store.sweep_hosts("s1").expect("hosts")[0].state,
            HostState::Failed
        );
    }

    #[test]
    fn an_unknown_state_or_bad_json_names_its_row() {
        let store = Store::open_in_memory().expect("open");
        store
            .create_sweep("s1", "{}", "{}", 1, &[("a".into(), false, 100)])
            .expect("create");
        store
            .with(|c| {
                c.execute("UPDATE sweeps SET state = 'runing' WHERE id = 's1'", [])?;
                c.execute(
                    "UPDATE sweep_hosts SET notes_json = 'x' WHERE host = 'a'",
                    [],
                )
            })
            .expect("damage");
        let err = store.sweep("s1").expect_err("unknown sweep state");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "corrupt record in the store: sweep 's1', state: unknown sweep state 'runing'"
        );
        let err = store.sweep_hosts("s1").expect_err("bad notes");
        assert!(
            err.to_string()
                .contains("host 'a' of sweep 's1', notes_json:"),
            "{err}"
        );
    }

    #[test]
    fn databases_of_the_first_schema_keep_their_state_text() {
        // The text is the stored format: a change here would orphan every
        // existing database's sweeps.
        let store = Store::open_in_memory().expect("open");
        store
            .create_sweep("s1", "{}", "{}", 1, &[("a".into(), false, 100)])
            .expect("create");
        assert!(store.end_sweep("s1", SweepState::Partial, 2).expect("end"));
        let text: String = store
            .with(|c| c.query_row("SELECT state FROM sweeps", [], |r| r.get(0)))
            .expect("raw");
        assert_eq!(text, "partial");
        assert_eq!(
            store.sweep_state_counts().expect("counts"),
            vec![(SweepState::Partial, 1)]
        );
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleetbench.db");
        {
            let store = Store::open(&path).expect("open");
            store
                .upsert_agent("a", "0.1.0", "{}", false, 5)
                .expect("agent");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.agents().expect("agents").len(), 1);
        drop(store);
        let conn = Connection::open(&path).expect("raw");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = Store::open(&path).expect_err("too new");
        assert!(err.to_string().contains("newer fleetbench"), "{err}");
    }

    #[test]
    fn stale_agents_are_pruned_unless_connected_or_awaited() {
        let store = Store::open_in_memory().expect("open");
        for (name, seen) in [
            ("old", 1_000),
            ("old-busy", 1_000),
            ("old-live", 1_000),
            ("new", 9_000),
        ] {
            store
                .upsert_agent(name, "v", "{}", false, seen)
                .expect("upsert");
        }
        store
            .create_sweep("s1", "{}", "{}", 1, &[("old-busy".into(), false, 100)])
            .expect("create");
        let removed = store
            .prune_agents(5_000, &["old-live".to_string()])
            .expect("prune");
        assert_eq!(removed, 1);
        let names: Vec<String> = store
            .agents()
            .expect("agents")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["new", "old-busy", "old-live"]);
    }
}
