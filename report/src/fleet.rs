//! The fleet report's data: one row per host and device, the hosts grouped by
//! hardware model (generation) and compared against a baseline group, the
//! outliers of each group with the likely cause the agents saw, cost
//! efficiency, failures, and how the fleet changed since the previous sweep.
//!
//! Group figures are medians, not means: one sick host must not move its
//! group's figure, that is what the outlier list is for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compare::SweepComparison;
use crate::insights::{BatchFigure, Insights, MB};
use fleetbench_common::hardware::lookup_gpu_model;
use fleetbench_common::result::{DeviceKind, GpuInfo, MachineReport};
use fleetbench_common::spec::SweepSpec;
use fleetbench_common::stats::{NOISY_CV, percentile_sorted};

/// A host more than this far below its group's median best throughput is an outlier.
pub const OUTLIER_SHORTFALL: f64 = 0.10;
/// A median SM clock this far below the group's counts as "other clocks".
const CLOCK_SHORTFALL: f64 = 0.10;

/// How one host's part of a sweep ended, as the coordinator recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostOutcome {
    pub host: String,
    /// e.g. "completed", "failed", "cancelled".
    pub status: String,
    pub error: Option<String>,
    pub simulated: bool,
}

/// Throughput and latency at one batch size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub batch_size: usize,
    pub throughput: f64,
    pub latency_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetHostRow {
    pub host: String,
    pub device_id: String,
    pub device_name: String,
    /// The GPU model key from the peak table (e.g. "H100-SXM"), "CPU", or the raw name.
    pub hardware: String,
    /// Architecture generation (e.g. "Hopper") when the model is known.
    pub generation: Option<String>,
    pub simulated: bool,
    pub status: String,
    pub error: Option<String>,
    pub points_measured: usize,
    pub points_failed: usize,
    pub best_throughput: Option<BatchFigure>,
    pub best_latency_ms: Option<BatchFigure>,
    pub peak_cpu_memory_mb: Option<f64>,
    pub peak_gpu_memory_mb: Option<f64>,
    pub daily_samples: Option<f64>,
    /// Samples per joule at the best-throughput batch size (NVML energy).
    pub samples_per_joule: Option<f64>,
    /// Largest coefficient of variation of any point.
    pub max_cv: Option<f64>,
    /// Median SM clock over the points, MHz.
    pub sm_clock_mhz: Option<f64>,
    /// Throttle reasons seen in any point.
    pub throttle_reasons: Vec<String>,
    pub pcie_generation: Option<u32>,
    pub pcie_width: Option<u32>,
    pub driver_version: Option<String>,
    /// Samples per dollar at the best throughput, when a price is known.
    pub samples_per_dollar: Option<f64>,
    pub curve: Vec<CurvePoint>,
}

/// The hosts of one hardware model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardwareGroup {
    pub hardware: String,
    pub generation: Option<String>,
    pub devices: usize,
    pub simulated_devices: usize,
    pub median_best_throughput: f64,
    pub median_best_latency_ms: Option<f64>,
    pub median_samples_per_joule: Option<f64>,
    pub median_peak_gpu_memory_mb: Option<f64>,
    /// Median best throughput over the baseline group's.
    pub speedup_vs_baseline: Option<f64>,
    /// Median throughput and latency per batch size over the group.
    pub curve: Vec<CurvePoint>,
    pub price_per_gpu_hour: Option<f64>,
    pub samples_per_dollar: Option<f64>,
}

/// A host that stands out from its group, and what the agent saw that may explain it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    pub host: String,
    pub device_id: String,
    pub hardware: String,
    /// How far below the group's median best throughput (0.25 = 25% slower).
    pub shortfall: Option<f64>,
    pub unstable: bool,
    pub causes: Vec<String>,
}

impl Outlier {
    /// "27% below the A100-80GB group's median best throughput. Likely cause: ...",
    /// the wording every report format uses.
    pub fn summary(&self) -> String {
        let what = match self.shortfall {
            Some(s) => format!(
                "{:.0}% below the {} group's median best throughput",
                s * 100.0,
                self.hardware
            ),
            None => format!("unstable compared with the {} group", self.hardware),
        };
        format!("{what}. Likely cause: {}.", self.causes.join("; "))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRow {
    pub host: String,
    pub device_id: Option<String>,
    pub batch_size: Option<usize>,
    pub error: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetTotals {
    pub hosts: usize,
    pub hosts_completed: usize,
    pub hosts_failed: usize,
    pub simulated_hosts: usize,
    pub devices_measured: usize,
    /// Sum over devices of each one's best throughput: the fleet's capacity
    /// if every device served at its best batch size.
    pub total_best_throughput: f64,
    pub daily_samples: f64,
}

/// Prices per GPU-hour by hardware model key, for cost efficiency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceTable(pub BTreeMap<String, f64>);

impl PriceTable {
    /// Reads `{"H100-SXM": 3.50, "T4": 0.35}` or lines of `H100-SXM,3.50`
    /// (`#` starts a comment). Keys are hardware model keys (see `fleetbench-agent run --help`).
    pub fn parse(text: &str) -> Result<PriceTable, String> {
        let table: BTreeMap<String, f64> = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| {
                format!("prices file is not valid JSON ({e}): write {{\"H100-SXM\": 3.5}}")
            })?
        } else {
            let mut t = BTreeMap::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let (k, v) = line.split_once(',').ok_or_else(|| {
                    format!(
                        "prices line {}: expected GPU_MODEL,PRICE_PER_HOUR, got '{}'",
                        n + 1,
                        fleetbench_common::spec::one_line(line)
                    )
                })?;
                let price: f64 = v.trim().parse().map_err(|_| {
                    format!(
                        "prices line {}: '{}' is not a number",
                        n + 1,
                        fleetbench_common::spec::one_line(v.trim())
                    )
                })?;
                t.insert(k.trim().to_string(), price);
            }
            t
        };
        for (k, v) in &table {
            if !(v.is_finite() && *v > 0.0) {
                return Err(format!(
                    "price of {} must be a positive number of dollars per GPU-hour, got {v}",
                    fleetbench_common::spec::one_line(k)
                ));
            }
        }
        Ok(PriceTable(table))
    }

    pub fn price(&self, hardware: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(hardware))
            .map(|(_, v)| *v)
    }
}

/// Choices the operator makes about the fleet report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetOptions {
    /// Hardware model the speed-ups are relative to; default the slowest group.
    pub baseline: Option<String>,
    pub prices: Option<PriceTable>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    pub sweep_id: String,
    pub generated_at: String,
    pub state: String,
    pub spec: SweepSpec,
    pub rows: Vec<FleetHostRow>,
    pub groups: Vec<HardwareGroup>,
    pub baseline: Option<String>,
    pub outliers: Vec<Outlier>,
    pub failures: Vec<FailureRow>,
    pub totals: FleetTotals,
    /// Changes since the previous sweep with the same spec, when there is one.
    pub history: Option<SweepComparison>,
    /// Remarks about the report itself, e.g. an unknown baseline.
    pub notes: Vec<String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(percentile_sorted(&v, 0.5))
}

/// The most common value (ties: the smallest), for "what the group runs".
fn mode<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let max = counts.values().copied().max()?;
    counts.into_iter().find(|(_, c)| *c == max).map(|(v, _)| v)
}

impl FleetReport {
    /// Builds the fleet report from every machine report of a sweep and the
    /// coordinator's record of how each host ended. A host without any machine
    /// report (it failed before its first result) still gets a row.
    pub fn build(
        sweep_id: &str,
        state: &str,
        spec: &SweepSpec,
        machines: &[MachineReport],
        outcomes: &[HostOutcome],
        options: &FleetOptions,
        generated_at: String,
    ) -> FleetReport {
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        for outcome in outcomes {
            let mine: Vec<&MachineReport> = machines
                .iter()
                .filter(|m| m.host.hostname == outcome.host)
                .collect();
            if let Some(error) = &outcome.error {
                failures.push(FailureRow {
                    host: outcome.host.clone(),
                    device_id: None,
                    batch_size: None,
                    error: error.clone(),
                });
            }
            if mine.is_empty() {
                rows.push(empty_row(outcome));
            }
            for m in mine {
                for p in &m.points {
                    if let Some(e) = p.error() {
                        failures.push(FailureRow {
                            host: outcome.host.clone(),
                            device_id: Some(m.device.id.clone()),
                            batch_size: Some(p.batch_size),
                            error: e.to_string(),
                        });
                    }
                }
                rows.push(machine_row(m, outcome, options.prices.as_ref()));
            }
        }
        rows.sort_by(|a, b| (&a.host, &a.device_id).cmp(&(&b.host, &b.device_id)));

        let mut notes = Vec::new();
        let mut groups = build_groups(&rows, options.prices.as_ref());
        let baseline = choose_baseline(&groups, options.baseline.as_deref(), &mut notes);
        if let Some(base) = baseline
            .as_ref()
            .and_then(|b| groups.iter().find(|g| &g.hardware == b))
            .map(|g| g.median_best_throughput)
            && base > 0.0
        {
            for g in &mut groups {
                g.speedup_vs_baseline = Some(g.median_best_throughput / base);
            }
        }
        let outliers = find_outliers(&rows, &groups);

        let total_best_throughput: f64 = rows
            .iter()
            .filter_map(|r| r.best_throughput.map(|b| b.value))
            .sum();
        let totals = FleetTotals {
            hosts: outcomes.len(),
            hosts_completed: outcomes.iter().filter(|o| o.status == "completed").count(),
            hosts_failed: outcomes.iter().filter(|o| o.status != "completed").count(),
            simulated_hosts: outcomes.iter().filter(|o| o.simulated).count(),
            devices_measured: rows.iter().filter(|r| r.best_throughput.is_some()).count(),
            total_best_throughput,
            daily_samples: total_best_throughput * 86_400.0,
        };
        FleetReport {
            sweep_id: sweep_id.to_string(),
            generated_at,
            state: state.to_string(),
            spec: spec.clone(),
            rows,
            groups,
            baseline,
            outliers,
            failures,
            totals,
            history: None,
            notes,
        }
    }
}

impl FleetReport {
    /// Every batch size any group measured, ascending.
    pub fn batch_sizes(&self) -> Vec<usize> {
        let mut batches: Vec<usize> = self
            .groups
            .iter()
            .flat_map(|g| g.curve.iter().map(|c| c.batch_size))
            .collect();
        batches.sort_unstable();
        batches.dedup();
        batches
    }
}

fn empty_row(outcome: &HostOutcome) -> FleetHostRow {
    FleetHostRow {
        host: outcome.host.clone(),
        device_id: "-".into(),
        device_name: "-".into(),
        hardware: "-".into(),
        generation: None,
        simulated: outcome.simulated,
        status: outcome.status.clone(),
        error: outcome.error.clone(),
        points_measured: 0,
        points_failed: 0,
        best_throughput: None,
        best_latency_ms: None,
        peak_cpu_memory_mb: None,
        peak_gpu_memory_mb: None,
        daily_samples: None,
        samples_per_joule: None,
        max_cv: None,
        sm_clock_mhz: None,
        throttle_reasons: Vec::new(),
        pcie_generation: None,
        pcie_width: None,
        driver_version: None,
        samples_per_dollar: None,
        curve: Vec::new(),
    }
}

fn gpu_of(m: &MachineReport) -> Option<&GpuInfo> {
    let index: u32 = m.device.id.strip_prefix("cuda:")?.parse().ok()?;
    m.host.gpus.iter().find(|g| g.index == index)
}

fn machine_row(
    m: &MachineReport,
    outcome: &HostOutcome,
    prices: Option<&PriceTable>,
) -> FleetHostRow {
    let ins = Insights::of_report(m);
    let measured: Vec<(usize, &fleetbench_common::result::PointStats)> = m
        .points
        .iter()
        .filter_map(|p| p.stats().map(|s| (p.batch_size, s)))
        .collect();
    let max_mb = |f: fn(&fleetbench_common::result::PointStats) -> Option<u64>| {
        measured
            .iter()
            .filter_map(|(_, s)| f(s))
            .max()
            .map(|b| b as f64 / MB)
    };
    let (hardware, generation) = match m.device.kind {
        DeviceKind::Cpu => ("CPU".to_string(), None),
        DeviceKind::Cuda => match lookup_gpu_model(&m.device.name) {
            Some(g) => (g.key.to_string(), Some(g.generation.to_string())),
            None => (m.device.name.clone(), None),
        },
    };
    let samples_per_joule = ins.best_throughput.and_then(|best| {
        let (b, s) = measured.iter().find(|(b, _)| *b == best.batch_size)?;
        let joules = s.energy_joules.filter(|j| *j > 0.0)?;
        Some(*b as f64 * s.iterations as f64 / joules)
    });
    let mut throttle_reasons: Vec<String> = measured
        .iter()
        .flat_map(|(_, s)| s.throttle_reasons.iter().cloned())
        .collect();
    throttle_reasons.sort();
    throttle_reasons.dedup();
    let gpu = gpu_of(m);
    let samples_per_dollar = ins
        .best_throughput
        .zip(prices.and_then(|p| p.price(&hardware)))
        .map(|(b, price)| b.value * 3600.0 / price);
    FleetHostRow {
        host: outcome.host.clone(),
        device_id: m.device.id.clone(),
        device_name: m.device.name.clone(),
        hardware,
        generation,
        simulated: m.simulated() || outcome.simulated,
        status: outcome.status.clone(),
        error: outcome.error.clone(),
        points_measured: measured.len(),
        points_failed: m.points.len() - measured.len(),
        best_throughput: ins.best_throughput,
        best_latency_ms: ins.best_latency_ms,
        peak_cpu_memory_mb: max_mb(|s| s.peak_rss_bytes),
        peak_gpu_memory_mb: max_mb(|s| s.gpu_memory_bytes()),
        daily_samples: ins.daily_samples,
        samples_per_joule,
        max_cv: measured
            .iter()
            .map(|(_, s)| s.latency.cv)
            .max_by(f64::total_cmp),
        sm_clock_mhz: median(
            measured
                .iter()
                .filter_map(|(_, s)| s.sm_clock_mhz)
                .collect(),
        ),
        throttle_reasons,
        pcie_generation: gpu.and_then(|g| g.pcie_generation),
        pcie_width: gpu.and_then(|g| g.pcie_width),
        driver_version: gpu
            .map(|g| g.driver_version.clone())
            .filter(|d| !d.is_empty()),
        samples_per_dollar,
        curve: measured
            .iter()
            .map(|(b, s)| CurvePoint {
                batch_size: *b,
                throughput: s.throughput,
                latency_ms: s.latency.mean_ms,
            })
            .collect(),
    }
}

fn build_groups(rows: &[FleetHostRow], prices: Option<&PriceTable>) -> Vec<HardwareGroup> {
    let mut by_hw: BTreeMap<&str, Vec<&FleetHostRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.best_throughput.is_some()) {
        by_hw.entry(r.hardware.as_str()).or_default().push(r);
    }
    let mut groups: Vec<HardwareGroup> = by_hw
        .into_iter()
        .map(|(hw, members)| {
            let med = |f: &dyn Fn(&FleetHostRow) -> Option<f64>| {
                median(members.iter().filter_map(|r| f(r)).collect())
            };
            let mut batches: Vec<usize> = members
                .iter()
                .flat_map(|r| r.curve.iter().map(|c| c.batch_size))
                .collect();
            batches.sort_unstable();
            batches.dedup();
            let curve = batches
                .into_iter()
                .filter_map(|b| {
                    let at: Vec<&CurvePoint> = members
                        .iter()
                        .filter_map(|r| r.curve.iter().find(|c| c.batch_size == b))
                        .collect();
                    Some(CurvePoint {
                        batch_size: b,
                        throughput: median(at.iter().map(|c| c.throughput).collect())?,
                        latency_ms: median(at.iter().map(|c| c.latency_ms).collect())?,
                    })
                })
                .collect();
            let median_best_throughput =
                med(&|r| r.best_throughput.map(|b| b.value)).unwrap_or(0.0);
            let price = prices.and_then(|p| p.price(hw));
            HardwareGroup {
                hardware: hw.to_string(),
                generation: members.iter().find_map(|r| r.generation.clone()),
                devices: members.len(),
                simulated_devices: members.iter().filter(|r| r.simulated).count(),
                median_best_throughput,
                median_best_latency_ms: med(&|r| r.best_latency_ms.map(|b| b.value)),
                median_samples_per_joule: med(&|r| r.samples_per_joule),
                median_peak_gpu_memory_mb: med(&|r| r.peak_gpu_memory_mb),
                speedup_vs_baseline: None,
                curve,
                price_per_gpu_hour: price,
                samples_per_dollar: price.map(|p| median_best_throughput * 3600.0 / p),
            }
        })
        .collect();
    // Fastest first: the order a reader ranks generations in.
    groups.sort_by(|a, b| {
        b.median_best_throughput
            .total_cmp(&a.median_best_throughput)
    });
    groups
}

fn choose_baseline(
    groups: &[HardwareGroup],
    wanted: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<String> {
    if let Some(w) = wanted {
        if let Some(g) = groups.iter().find(|g| g.hardware.eq_ignore_ascii_case(w)) {
            return Some(g.hardware.clone());
        }
        notes.push(format!(
            "baseline '{w}' is not among this sweep's hardware ({}): the slowest group is used instead",
            groups.iter().map(|g| g.hardware.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    groups
        .iter()
        .min_by(|a, b| {
            a.median_best_throughput
                .total_cmp(&b.median_best_throughput)
        })
        .map(|g| g.hardware.clone())
}

fn find_outliers(rows: &[FleetHostRow], groups: &[HardwareGroup]) -> Vec<Outlier> {
    let mut out = Vec::new();
    for g in groups {
        let members: Vec<&FleetHostRow> = rows
            .iter()
            .filter(|r| r.hardware == g.hardware && r.best_throughput.is_some())
            .collect();
        let common_pcie = mode(
            members
                .iter()
                .filter_map(|r| r.pcie_generation.zip(r.pcie_width)),
        );
        let common_driver = mode(members.iter().filter_map(|r| r.driver_version.clone()));
        let group_clock = median(members.iter().filter_map(|r| r.sm_clock_mhz).collect());
        for r in &members {
            let best = r.best_throughput.map(|b| b.value).unwrap_or(0.0);
            let shortfall = (g.median_best_throughput > 0.0)
                .then(|| 1.0 - best / g.median_best_throughput)
                .filter(|s| *s > OUTLIER_SHORTFALL);
            let unstable = r.max_cv.is_some_and(|cv| cv > NOISY_CV);
            if shortfall.is_none() && !unstable {
                continue;
            }
            let mut causes = Vec::new();
            if !r.throttle_reasons.is_empty() {
                causes.push(format!(
                    "the GPU throttled its clocks ({})",
                    r.throttle_reasons.join(", ")
                ));
            }
            if let (Some((g_gen, g_width)), Some((r_gen, width))) =
                (common_pcie, r.pcie_generation.zip(r.pcie_width))
                && (r_gen, width) < (g_gen, g_width)
            {
                causes.push(format!(
                    "PCIe gen {r_gen} x{width} where the group runs gen {g_gen} x{g_width}"
                ));
            }
            if let (Some(d), Some(common)) = (&r.driver_version, &common_driver)
                && d != common
            {
                causes.push(format!("driver {d} where the group runs {common}"));
            }
            if let (Some(c), Some(gc)) = (r.sm_clock_mhz, group_clock)
                && c < gc * (1.0 - CLOCK_SHORTFALL)
            {
                causes.push(format!(
                    "SM clock {c:.0} MHz against the group's median {gc:.0} MHz"
                ));
            }
            if unstable {
                causes.push(format!(
                    "unstable measurements (coefficient of variation up to {:.0}%): other work on the host",
                    r.max_cv.unwrap_or(0.0) * 100.0
                ));
            }
            if causes.is_empty() {
                causes.push("nothing the agent could see (no throttling, same PCIe link, driver and clocks): check for other workloads or hardware faults".into());
            }
            out.push(Outlier {
                host: r.host.clone(),
                device_id: r.device_id.clone(),
                hardware: r.hardware.clone(),
                shortfall,
                unstable,
                causes,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_from_json_and_csv_and_bad_ones_say_why() {
        let json = PriceTable::parse(r#"{"H100-SXM": 3.5, "T4": 0.35}"#).expect("json");
        assert_eq!(json.price("h100-sxm"), Some(3.5));
        let csv = PriceTable::parse("# prices\nH100-SXM, 3.5\nT4,0.35\n").expect("csv");
        assert_eq!(csv, json);
        assert!(
            PriceTable::parse("T4 0.35")
                .expect_err("no comma")
                .contains("expected GPU_MODEL,PRICE_PER_HOUR")
        );
        assert!(
            PriceTable::parse("T4,free")
                .expect_err("nan")
                .contains("not a number")
        );
        assert!(
            PriceTable::parse("T4,-1")
                .expect_err("negative")
                .contains("positive")
        );
    }

    use fleetbench_common::result::{
        DeviceDescription, GpuInfo, HostInventory, ModelInfo, PointOutcome, PointResult, PointStats,
    };
    use fleetbench_common::spec::{Engine, Precision};
    use fleetbench_common::stats::LatencySummary;

    /// A GPU host whose points reach `throughputs` (batch, samples/s).
    fn machine(
        host: &str,
        gpu: &str,
        throughputs: &[(usize, f64)],
        throttled: bool,
    ) -> MachineReport {
        let points = throughputs
            .iter()
            .map(|&(b, t)| {
                let ms = 1e3 * b as f64 / t;
                PointResult {
                    batch_size: b,
                    seq_len: 128,
                    outcome: PointOutcome::Measured(PointStats {
                        warmup: 1,
                        iterations: 2,
                        timed_seconds: 2.0 * ms / 1e3,
                        latency: LatencySummary::from_samples_ms(&[ms, ms]).expect("summary"),
                        throughput: t,
                        samples_ms: vec![ms, ms],
                        peak_rss_bytes: None,
                        gpu_process_bytes: None,
                        gpu_device_bytes: None,
                        avg_power_watts: None,
                        energy_joules: Some(b as f64 * 2.0 / 4.0),
                        throttle_reasons: if throttled {
                            vec!["hw-thermal".into()]
                        } else {
                            vec![]
                        },
                        sm_clock_mhz: None,
                        gpu_pool_peak_bytes: None,
                        gpu_temperature_c: None,
                        energy_method: None,
                        gpu_samples: 0,
                    }),
                }
            })
            .collect();
        MachineReport {
            generated_at: String::new(),
            host: HostInventory {
                hostname: host.into(),
                gpus: vec![GpuInfo {
                    index: 0,
                    name: gpu.into(),
                    driver_version: "580".into(),
                    ..GpuInfo::default()
                }],
                ..HostInventory::default()
            },
            device: DeviceDescription {
                id: "cuda:0".into(),
                kind: DeviceKind::Cuda,
                name: gpu.into(),
                simulated: false,
            },
            model: ModelInfo::distilbert_base(
                "m",
                fleetbench_common::result::WeightsSource::Random { seed: 1 },
                Precision::F32,
                Engine::Fleetbench,
            ),
            spec: SweepSpec::default(),
            points,
            environment: Default::default(),
            notes: vec![],
        }
    }

    fn outcome(host: &str) -> HostOutcome {
        HostOutcome {
            host: host.into(),
            status: "completed".into(),
            error: None,
            simulated: false,
        }
    }

    #[test]
    fn groups_speedups_and_outliers_match_hand_computation() {
        let machines = vec![
            machine(
                "h1",
                "NVIDIA H100 80GB HBM3",
                &[(8, 600.0), (16, 1000.0)],
                false,
            ),
            machine(
                "h2",
                "NVIDIA H100 80GB HBM3",
                &[(8, 500.0), (16, 800.0)],
                true,
            ),
            machine("t1", "Tesla T4", &[(8, 90.0), (16, 100.0)], false),
        ];
        let outcomes: Vec<HostOutcome> = ["h1", "h2", "t1"].iter().map(|h| outcome(h)).collect();
        let prices = PriceTable::parse("T4,0.5").expect("prices");
        let options = FleetOptions {
            baseline: None,
            prices: Some(prices),
        };
        let r = FleetReport::build(
            "s",
            "completed",
            &SweepSpec::default(),
            &machines,
            &outcomes,
            &options,
            String::new(),
        );

        // H100 group: median of 1000 and 800 = 900; T4: 100. Baseline: the slowest (T4).
        assert_eq!(r.baseline.as_deref(), Some("T4"));
        assert_eq!(
            r.groups
                .iter()
                .map(|g| g.hardware.as_str())
                .collect::<Vec<_>>(),
            ["H100-SXM", "T4"]
        );
        assert_eq!(r.groups[0].median_best_throughput, 900.0);
        assert_eq!(r.groups[0].speedup_vs_baseline, Some(9.0));
        assert_eq!(r.groups[1].speedup_vs_baseline, Some(1.0));
        // Group curve at batch 8: median of 600 and 500.
        assert_eq!(
            r.groups[0].curve[0],
            CurvePoint {
                batch_size: 8,
                throughput: 550.0,
                latency_ms: (1e3 * 8.0 / 600.0 + 1e3 * 8.0 / 500.0) / 2.0
            }
        );
        // Samples per joule at the best batch (16): 16 × 2 iterations / 8 J = 4.
        assert_eq!(
            r.rows
                .iter()
                .find(|x| x.host == "t1")
                .and_then(|x| x.samples_per_joule),
            Some(4.0)
        );
        // T4 at 100 samples/s and $0.50 an hour: 720,000 samples per dollar.
        assert_eq!(r.groups[1].samples_per_dollar, Some(720_000.0));
        // h2 is 1 - 800/900 = 11.1% below its group's median: an outlier, and it throttled.
        assert_eq!(r.outliers.len(), 1);
        let o = &r.outliers[0];
        assert_eq!(o.host, "h2");
        assert!((o.shortfall.expect("shortfall") - (1.0 - 800.0 / 900.0)).abs() < 1e-12);
        assert!(o.causes[0].contains("hw-thermal"), "{:?}", o.causes);
        assert_eq!(r.totals.total_best_throughput, 1900.0);
    }

    #[test]
    fn an_unknown_baseline_falls_back_to_the_slowest_with_a_note() {
        let machines = vec![machine("t1", "Tesla T4", &[(8, 100.0)], false)];
        let options = FleetOptions {
            baseline: Some("B200".into()),
            prices: None,
        };
        let r = FleetReport::build(
            "s",
            "completed",
            &SweepSpec::default(),
            &machines,
            &[outcome("t1")],
            &options,
            String::new(),
        );
        assert_eq!(r.baseline.as_deref(), Some("T4"));
        assert!(r.notes[0].contains("baseline 'B200' is not among"));
    }

    #[test]
    fn medians_and_modes_are_robust() {
        assert_eq!(median(vec![3.0, 1.0, 100.0]), Some(3.0));
        assert_eq!(median(vec![]), None);
        assert_eq!(mode([(4, 16), (4, 16), (3, 8)].into_iter()), Some((4, 16)));
    }

    /// Fuzz finding F2 (fuzz/RESULTS.md, target config): a vertical tab or
    /// a lone carriage return inside a CSV line, or a line break in a JSON
    /// key, was quoted verbatim and split the error over several lines.
    #[test]
    fn price_errors_stay_on_one_line() {
        let breaks = [
            '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
        ];
        for text in [
            "T4\u{0b}0.35",
            "T4,0.35\u{0b}A10,1",
            "T4\r0.35\n",
            "{\"T4\\n\": -1}",
            "A10,1\u{2028}x",
        ] {
            let e = PriceTable::parse(text).expect_err(text);
            assert!(!e.contains(breaks), "{text:?} gave {e:?}");
        }
        // Windows line ends are still fine.
        assert!(PriceTable::parse("T4,0.35\r\nA10,1\r\n").is_ok());
    }
}
