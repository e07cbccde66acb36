//! fleetbench-report: what is made of results for people. Insights (the
//! seed report's figures and wording), sweep comparison (Welch's t-test),
//! and the exporters (Markdown, HTML with inline SVG, JSON, CSV) of the
//! per-machine and fleet reports, with the one function that writes them.
//! The seed report is `testdata/seed/distilbert-benchmark-report.md`.
//!
//! It sits above `fleetbench-common`'s core types (spec, results,
//! statistics), so a change to a chart never rebuilds what every crate needs.
//!
//! Reports: one exporter per format behind the [`Exporter`] trait, used for
//! both the per-machine report and the fleet report so that the two share
//! their tables and wording.

pub mod compare;
pub mod insights;

mod csv;
mod fleet;
mod format;
mod html;
mod json;
mod markdown;
mod svg;

/// Text escaped for HTML content and attribute values (the reports' and the
/// web console's one escaping function).
pub use svg::escape as html_escape;
mod table;
mod tables;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use csv::CsvExporter;
pub use fleet::{
    CurvePoint, FailureRow, FleetHostRow, FleetOptions, FleetReport, FleetTotals, HardwareGroup,
    HostOutcome, Outlier, PriceTable,
};
pub use format::text_table;
pub use html::HtmlExporter;
pub use json::JsonExporter;
pub use markdown::MarkdownExporter;

use fleetbench_common::result::MachineReport;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("could not serialise the report: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("could not write report {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One output format.
pub trait Exporter {
    /// File extension without the dot, e.g. `md`.
    fn extension(&self) -> &'static str;
    fn machine(&self, report: &MachineReport) -> Result<String, ReportError>;
    fn fleet(&self, report: &FleetReport) -> Result<String, ReportError>;
}

/// Every format a report is written in.
pub fn all_exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(MarkdownExporter),
        Box::new(JsonExporter),
        Box::new(CsvExporter),
        Box::new(HtmlExporter),
    ]
}

/// Writes `<stem>.<ext>` for every exporter into `dir`, atomically per file
/// (a reader never sees half a report). Returns the paths written.
pub fn write_machine_reports(
    dir: &Path,
    stem: &str,
    report: &MachineReport,
) -> Result<Vec<PathBuf>, ReportError> {
    all_exporters()
        .iter()
        .map(|e| {
            write_atomic(
                dir,
                &format!("{stem}.{}", e.extension()),
                &e.machine(report)?,
            )
        })
        .collect()
}

/// Writes `fleet.<ext>` for every exporter into `dir`.
pub fn write_fleet_reports(dir: &Path, report: &FleetReport) -> Result<Vec<PathBuf>, ReportError> {
    all_exporters()
        .iter()
        .map(|e| write_atomic(dir, &format!("fleet.{}", e.extension()), &e.fleet(report)?))
        .collect()
}

fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let err = |source| ReportError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    // Written, flushed to disk, then renamed over the old file, and the
    // directory flushed too: after a crash the report is the old one or the
    // new one, never a torn one or a missing one.
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(contents.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(path)
}

/// The file stem of each machine report of a sweep, given each report's
/// (host, device file stem) in order: the host's name when it has one
/// device, `host-device` when it has several; never `fleet` (the fleet
/// report's), and never one already taken, compared without case (a file
/// system may not tell `GPU-1` from `gpu-1`): a clash gets `-2`, `-3`, ...
pub fn machine_report_stems(reports: &[(&str, &str)]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut devices: BTreeMap<&str, usize> = BTreeMap::new();
    for (host, _) in reports {
        *devices.entry(host).or_default() += 1;
    }
    let mut taken: BTreeSet<String> = ["fleet".to_string()].into();
    reports
        .iter()
        .map(|(host, device)| {
            let base = if devices.get(host).copied().unwrap_or(0) > 1 {
                format!("{}-{device}", safe_file_stem(host))
            } else {
                safe_file_stem(host)
            };
            let mut stem = base.clone();
            let mut n = 1;
            while !taken.insert(stem.to_lowercase()) {
                n += 1;
                stem = format!("{base}-{n}");
            }
            stem
        })
        .collect()
}

/// A file-name-safe version of a host name.
pub fn safe_file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("host{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::machine_report_stems;

    #[test]
    fn report_file_names_never_collide_with_each_other_or_the_fleet_report() {
        let stems = machine_report_stems(&[
            ("fleet", "cpu"),
            ("gpu_01", "cuda0"),
            ("gpu~01", "cuda0"),
            ("GPU_01", "cuda0"),
            ("big", "cuda0"),
            ("big", "cuda1"),
            ("big-cuda1", "cuda0"),
        ]);
        assert_eq!(
            stems,
            [
                "fleet-2",
                "gpu_01",
                "gpu_01-2",
                "GPU_01-3",
                "big-cuda0",
                "big-cuda1",
                "big-cuda1-2"
            ]
        );
    }
}
