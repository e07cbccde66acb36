//! When a sweep ends: every host's per-machine report (the same format as the
//! standalone `fleetbench-agent bench`) and the fleet report, written under
//! `<data>/reports/<sweep id>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetbench_common::{HostInventory, MachineReport, PointResult};
use fleetbench_report::compare::{DevicePoints, compare};
use fleetbench_report::{
    FleetOptions, FleetReport, HostOutcome, PriceTable, ReportError, machine_report_stems,
    safe_file_stem, write_fleet_reports, write_machine_reports,
};
use thiserror::Error;

use crate::state::HostState;
use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum ReportsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("sweep '{0}' not found")]
    NotFound(String),
}

/// The machine reports of a sweep, one per host and device, from the store.
pub fn machine_reports(store: &Store, sweep_id: &str) -> Result<Vec<MachineReport>, ReportsError> {
    let sweep = store
        .sweep(sweep_id)?
        .ok_or_else(|| ReportsError::NotFound(sweep_id.to_string()))?;
    let spec = sweep.spec()?;
    let hosts = store.sweep_hosts(sweep_id)?;
    let agents = store.agents()?;
    let results = store.results(sweep_id)?;

    // (host, device) -> its results, in the spec's batch order.
    let mut groups: BTreeMap<(String, String), Vec<&crate::store::ResultRow>> = BTreeMap::new();
    for r in &results {
        groups
            .entry((r.host.clone(), r.device_id.clone()))
            .or_default()
            .push(r);
    }
    let generated_at = fleetbench_common::time::now_rfc3339();
    let mut machines = Vec::new();
    for ((host, _device), rows) in &groups {
        let Some(last) = rows.last() else { continue };
        let device = last.device()?;
        let model = last.model()?;
        let environment = last.environment()?;
        let mut points: Vec<PointResult> =
            rows.iter().map(|r| r.point()).collect::<Result<_, _>>()?;
        points.sort_by_key(|p| {
            spec.batch_sizes
                .iter()
                .position(|b| *b == p.batch_size)
                .unwrap_or(usize::MAX)
        });
        // A host that sent results has registered; an unreadable inventory
        // is an error, not an empty one.
        let mut inventory = match agents.iter().find(|a| &a.name == host) {
            Some(a) => a.inventory()?,
            None => HostInventory::default(),
        };
        inventory.hostname = host.clone();
        let outcome = hosts.iter().find(|h| &h.host == host);
        let mut notes: Vec<String> = outcome.map(|h| h.notes.clone()).unwrap_or_default();
        if let Some(h) = outcome.filter(|h| h.state != HostState::Completed) {
            notes.push(format!(
                "this host's part of the sweep ended as {}{}: the report shows the points received before that",
                h.state,
                h.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        let missing: Vec<String> = spec
            .batch_sizes
            .iter()
            .filter(|b| !points.iter().any(|p| p.batch_size == **b))
            .map(|b| b.to_string())
            .collect();
        if !missing.is_empty() {
            notes.push(format!(
                "batch sizes without a result: {}",
                missing.join(", ")
            ));
        }
        machines.push(MachineReport {
            generated_at: generated_at.clone(),
            host: inventory,
            device,
            model,
            spec: spec.clone(),
            points,
            environment,
            notes,
        });
    }
    Ok(machines)
}

/// What `compare` needs of a sweep's machine reports.
pub fn device_points(machines: &[MachineReport]) -> Vec<DevicePoints> {
    machines
        .iter()
        .map(|m| DevicePoints {
            host: m.host.hostname.clone(),
            device_id: m.device.id.clone(),
            hardware: fleetbench_common::hardware::lookup_gpu_model(&m.device.name)
                .map(|g| g.key.to_string())
                .unwrap_or_else(|| m.device.name.clone()),
            points: m.points.clone(),
        })
        .collect()
}

/// Builds the machine reports and the fleet report of a sweep from the store,
/// with a history section when an earlier sweep had the same spec.
pub fn build_sweep_reports(
    store: &Store,
    sweep_id: &str,
    prices: Option<&PriceTable>,
) -> Result<(Vec<MachineReport>, FleetReport), ReportsError> {
    let sweep = store
        .sweep(sweep_id)?
        .ok_or_else(|| ReportsError::NotFound(sweep_id.to_string()))?;
    let spec = sweep.spec()?;
    let options = sweep.options()?;
    let machines = machine_reports(store, sweep_id)?;
    let outcomes: Vec<HostOutcome> = store
        .sweep_hosts(sweep_id)?
        .iter()
        .map(|h| HostOutcome {
            host: h.host.clone(),
            status: h.state.as_str().to_string(),
            error: h.error.clone(),
            simulated: h.simulated,
        })
        .collect();
    let fleet_options = FleetOptions {
        baseline: options.baseline,
        prices: prices.cloned(),
    };
    let generated_at = fleetbench_common::time::now_rfc3339();
    let mut fleet = FleetReport::build(
        sweep_id,
        sweep.state.as_str(),
        &spec,
        &machines,
        &outcomes,
        &fleet_options,
        generated_at,
    );
    if let Some(previous) = store.previous_with_same_spec(&sweep)? {
        let before = machine_reports(store, &previous.id)?;
        fleet.history = Some(compare(
            &previous.id,
            &device_points(&before),
            sweep_id,
            &device_points(&machines),
        ));
    }
    Ok((machines, fleet))
}

/// Where a sweep's reports live: `<data>/reports/<sweep id as a file stem>/`.
pub fn sweep_reports_dir(data_dir: &Path, sweep_id: &str) -> PathBuf {
    data_dir.join("reports").join(safe_file_stem(sweep_id))
}

/// The report formats by file extension ("md", "json", "csv", "html").
pub fn report_formats() -> Vec<&'static str> {
    fleetbench_report::all_exporters()
        .iter()
        .map(|e| e.extension())
        .collect()
}

/// The report files in `dir` whose extension is one of `formats` (every
/// format when empty), sorted by name; the fleet report first. Temporary
/// files of an interrupted write (dot files) are not reports.
pub fn report_files(dir: &Path, formats: &[String]) -> std::io::Result<Vec<PathBuf>> {
    let known = report_formats();
    let wanted = |ext: &str| {
        known.contains(&ext) && (formats.is_empty() || formats.iter().any(|f| f == ext))
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !name.starts_with('.') && entry.file_type()?.is_file() && wanted(ext) {
            files.push(path);
        }
    }
    files.sort_by_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (!name.starts_with("fleet."), name)
    });
    Ok(files)
}

/// Writes every report of a sweep; returns the directory.
pub fn write_sweep_reports(
    store: &Store,
    data_dir: &Path,
    sweep_id: &str,
    prices: Option<&PriceTable>,
) -> Result<PathBuf, ReportsError> {
    let dir = sweep_reports_dir(data_dir, sweep_id);
    let (machines, fleet) = build_sweep_reports(store, sweep_id, prices)?;
    let keys: Vec<(&str, String)> = machines
        .iter()
        .map(|m| (m.host.hostname.as_str(), m.device.file_stem()))
        .collect();
    let keys: Vec<(&str, &str)> = keys.iter().map(|(h, d)| (*h, d.as_str())).collect();
    for (m, stem) in machines.iter().zip(machine_report_stems(&keys)) {
        write_machine_reports(&dir, &stem, m)?;
    }
    write_fleet_reports(&dir, &fleet)?;
    Ok(dir)
}
