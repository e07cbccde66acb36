//! Conversions between wire messages and the shared types of
//! `fleetbench-common`. Wire → Rust is fallible: every message from the network
//! is validated here, so the rest of the code works with checked values.

use fleetbench_common as c;
use fleetbench_common::names::{
    LONG_TEXT, MAX_GPUS, MAX_NOTES, SHORT_TEXT, clean_text, is_clean_text,
};
use fleetbench_common::stats::LatencySummary;
use thiserror::Error;

use crate::v1;

/// A message that decoded but does not make sense.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConvertError {
    #[error("message field '{0}' is missing")]
    Missing(&'static str),
    #[error("invalid sweep spec: {0}")]
    Spec(#[from] c::SpecError),
    #[error("message field '{field}' has an invalid value '{value}'")]
    Invalid { field: &'static str, value: String },
}

fn invalid(field: &'static str, value: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        field,
        // The value came from the network: keep the message on one line.
        value: c::spec::one_line(&value.into()),
    }
}

impl From<&c::GpuInfo> for v1::GpuInfo {
    fn from(g: &c::GpuInfo) -> Self {
        v1::GpuInfo {
            index: g.index,
            name: g.name.clone(),
            uuid: g.uuid.clone(),
            memory_total_bytes: g.memory_total_bytes,
            driver_version: g.driver_version.clone(),
            cuda_version: g.cuda_version.clone(),
            pcie_generation: g.pcie_generation,
            pcie_width: g.pcie_width,
            power_limit_watts: g.power_limit_watts,
            compute_capability: g.compute_capability.clone(),
            pci_bus_id: g.pci_bus_id.clone(),
            mig_instances: g.mig_instances.clone(),
            cuda_ordinal: g.cuda_ordinal,
        }
    }
}

/// Free-form text from the other peer, made safe to store and show: what an
/// agent writes lands in logs, terminals, reports and metrics.
fn short(text: String) -> String {
    if is_clean_text(&text, SHORT_TEXT) {
        text
    } else {
        clean_text(&text, SHORT_TEXT)
    }
}

fn short_opt(text: Option<String>) -> Option<String> {
    text.map(short)
}

fn long(text: String) -> String {
    if is_clean_text(&text, LONG_TEXT) {
        text
    } else {
        clean_text(&text, LONG_TEXT)
    }
}

impl From<v1::GpuInfo> for c::GpuInfo {
    fn from(g: v1::GpuInfo) -> Self {
        c::GpuInfo {
            index: g.index,
            name: short(g.name),
            uuid: short(g.uuid),
            memory_total_bytes: g.memory_total_bytes,
            driver_version: short(g.driver_version),
            cuda_version: short_opt(g.cuda_version),
            pcie_generation: g.pcie_generation,
            pcie_width: g.pcie_width,
            power_limit_watts: g.power_limit_watts,
            compute_capability: short_opt(g.compute_capability),
            pci_bus_id: short_opt(g.pci_bus_id),
            mig_instances: g.mig_instances,
            cuda_ordinal: g.cuda_ordinal,
        }
    }
}

impl From<&c::HostInventory> for v1::HostInventory {
    fn from(h: &c::HostInventory) -> Self {
        v1::HostInventory {
            hostname: h.hostname.clone(),
            os: h.os.clone(),
            kernel: h.kernel.clone(),
            cpu_model: h.cpu_model.clone(),
            cpu_logical_cores: h.cpu_logical_cores,
            cpu_physical_cores: h.cpu_physical_cores,
            memory_bytes: h.memory_bytes,
            gpus: h.gpus.iter().map(Into::into).collect(),
            gpu_note: h.gpu_note.clone(),
            simulated: h.simulated,
            cuda_build: h.cuda_build.clone(),
        }
    }
}

impl From<v1::HostInventory> for c::HostInventory {
    fn from(h: v1::HostInventory) -> Self {
        c::HostInventory {
            hostname: short(h.hostname),
            os: short(h.os),
            kernel: short(h.kernel),
            cpu_model: short(h.cpu_model),
            cpu_logical_cores: h.cpu_logical_cores,
            cpu_physical_cores: h.cpu_physical_cores,
            memory_bytes: h.memory_bytes,
            gpus: h.gpus.into_iter().take(MAX_GPUS).map(Into::into).collect(),
            gpu_note: short_opt(h.gpu_note),
            simulated: h.simulated,
            cuda_build: short_opt(h.cuda_build),
        }
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&c::SweepSpec> for v1::SweepSpec {
    fn from(s: &c::SweepSpec) -> Self {
        v1::SweepSpec {
            model: s.model.clone(),
            weights: s.weights.to_string(),
            engine: s.engine.to_string(),
            device: s.device.to_string(),
            dtype: s.dtype.to_string(),
            // Saturating, not wrapping: a value out of range stays out of
            // range (and is refused) instead of turning into a valid one.
            batch_sizes: s.batch_sizes.iter().map(|&b| saturate(b)).collect(),
            seq_len: saturate(s.seq_len),
            warmup: s.warmup,
            iterations: s.iterations,
            min_seconds: s.min_seconds,
            gpu_min_seconds: Some(s.gpu_min_seconds),
        }
    }
}

impl TryFrom<v1::SweepSpec> for c::SweepSpec {
    type Error = ConvertError;
    fn try_from(s: v1::SweepSpec) -> Result<Self, ConvertError> {
        let spec = c::SweepSpec {
            model: s.model,
            weights: s.weights.parse()?,
            engine: s.engine.parse()?,
            device: s.device.parse()?,
            dtype: s.dtype.parse()?,
            batch_sizes: s.batch_sizes.into_iter().map(|b| b as usize).collect(),
            seq_len: s.seq_len as usize,
            warmup: s.warmup,
            iterations: s.iterations,
            min_seconds: s.min_seconds,
            gpu_min_seconds: s
                .gpu_min_seconds
                .unwrap_or(c::spec::DEFAULT_GPU_MIN_SECONDS),
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl From<&c::DeviceDescription> for v1::DeviceDescription {
    fn from(d: &c::DeviceDescription) -> Self {
        v1::DeviceDescription {
            id: d.id.clone(),
            kind: match d.kind {
                c::DeviceKind::Cpu => "cpu".into(),
                c::DeviceKind::Cuda => "cuda".into(),
            },
            name: d.name.clone(),
            simulated: d.simulated,
        }
    }
}

impl TryFrom<v1::DeviceDescription> for c::DeviceDescription {
    type Error = ConvertError;
    fn try_from(d: v1::DeviceDescription) -> Result<Self, ConvertError> {
        let kind = match d.kind.as_str() {
            "cpu" => c::DeviceKind::Cpu,
            "cuda" => c::DeviceKind::Cuda,
            other => return Err(invalid("device.kind", other)),
        };
        // The one id of a device of that kind: "cuda:1", never "cuda:01",
        // "cuda:+1" or a CPU called "cuda:1" (results are keyed by it).
        let id_ok = match kind {
            c::DeviceKind::Cpu => d.id == "cpu",
            c::DeviceKind::Cuda => {
                d.id.strip_prefix("cuda:")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| d.id == format!("cuda:{n}"))
            }
        };
        if !id_ok {
            return Err(invalid("device.id", d.id));
        }
        Ok(c::DeviceDescription {
            id: d.id,
            kind,
            name: short(d.name),
            simulated: d.simulated,
        })
    }
}

impl From<&c::ModelInfo> for v1::ModelInfo {
    fn from(m: &c::ModelInfo) -> Self {
        v1::ModelInfo {
            name: m.name.clone(),
            weights_json: serde_json::to_string(&m.weights).unwrap_or_default(),
            hidden_size: m.hidden_size as u32,
            layers: m.layers as u32,
            heads: m.heads as u32,
            intermediate_size: m.intermediate_size as u32,
            vocab_size: m.vocab_size as u32,
            max_positions: m.max_positions as u32,
            parameters: m.parameters,
            dtype: m.dtype.to_string(),
            engine: m.engine.to_string(),
        }
    }
}

impl TryFrom<v1::ModelInfo> for c::ModelInfo {
    type Error = ConvertError;
    fn try_from(m: v1::ModelInfo) -> Result<Self, ConvertError> {
        Ok(c::ModelInfo {
            name: short(m.name),
            weights: serde_json::from_str(&m.weights_json)
                .map_err(|_| invalid("model.weights_json", m.weights_json))?,
            hidden_size: m.hidden_size as usize,
            layers: m.layers as usize,
            heads: m.heads as usize,
            intermediate_size: m.intermediate_size as usize,
            vocab_size: m.vocab_size as usize,
            max_positions: m.max_positions as usize,
            parameters: m.parameters,
            dtype: m.dtype.parse()?,
            engine: m.engine.parse()?,
        })
    }
}

impl From<&c::RunEnvironment> for v1::RunEnvironment {
    fn from(e: &c::RunEnvironment) -> Self {
        v1::RunEnvironment {
            agent_version: e.agent_version.clone(),
            candle_version: e.candle_version.clone(),
            threads: e.threads.map(|t| t as u32),
            build_features: e.build_features.clone(),
            notes: Vec::new(),
        }
    }
}

impl From<v1::RunEnvironment> for c::RunEnvironment {
    fn from(e: v1::RunEnvironment) -> Self {
        c::RunEnvironment {
            agent_version: short(e.agent_version),
            candle_version: short(e.candle_version),
            threads: e.threads.map(|t| t as usize),
            build_features: e
                .build_features
                .into_iter()
                .take(MAX_NOTES)
                .map(short)
                .collect(),
        }
    }
}

impl From<&LatencySummary> for v1::LatencySummary {
    fn from(l: &LatencySummary) -> Self {
        v1::LatencySummary {
            mean_ms: l.mean_ms,
            p50_ms: l.p50_ms,
            p90_ms: l.p90_ms,
            p99_ms: l.p99_ms,
            min_ms: l.min_ms,
            max_ms: l.max_ms,
            std_ms: l.std_ms,
            cv: l.cv,
        }
    }
}

impl From<v1::LatencySummary> for LatencySummary {
    fn from(l: v1::LatencySummary) -> Self {
        LatencySummary {
            mean_ms: l.mean_ms,
            p50_ms: l.p50_ms,
            p90_ms: l.p90_ms,
            p99_ms: l.p99_ms,
            min_ms: l.min_ms,
            max_ms: l.max_ms,
            std_ms: l.std_ms,
            cv: l.cv,
        }
    }
}

impl From<&c::PointResult> for v1::PointResult {
    fn from(p: &c::PointResult) -> Self {
        let outcome = match &p.outcome {
            c::PointOutcome::Measured(s) => v1::point_result::Outcome::Measured(v1::PointStats {
                warmup: s.warmup,
                iterations: s.iterations,
                timed_seconds: s.timed_seconds,
                latency: Some((&s.latency).into()),
                throughput: s.throughput,
                samples_ms: s.samples_ms.clone(),
                peak_rss_bytes: s.peak_rss_bytes,
                gpu_process_bytes: s.gpu_process_bytes,
                gpu_device_bytes: s.gpu_device_bytes,
                avg_power_watts: s.avg_power_watts,
                energy_joules: s.energy_joules,
                throttle_reasons: s.throttle_reasons.clone(),
                sm_clock_mhz: s.sm_clock_mhz,
                gpu_pool_peak_bytes: s.gpu_pool_peak_bytes,
                gpu_temperature_c: s.gpu_temperature_c,
                energy_method: s.energy_method.map(|m| m.as_str().to_string()),
                gpu_samples: s.gpu_samples,
            }),
            c::PointOutcome::Failed { error } => v1::point_result::Outcome::Error(error.clone()),
        };
        v1::PointResult {
            batch_size: p.batch_size as u32,
            seq_len: p.seq_len as u32,
            outcome: Some(outcome),
        }
    }
}

impl TryFrom<v1::PointResult> for c::PointResult {
    type Error = ConvertError;
    fn try_from(p: v1::PointResult) -> Result<Self, ConvertError> {
        if p.batch_size == 0 || p.batch_size as usize > c::spec::MAX_BATCH_SIZE {
            return Err(invalid("point.batch_size", p.batch_size.to_string()));
        }
        if p.seq_len == 0 || p.seq_len as usize > c::spec::MAX_SEQ_LEN {
            return Err(invalid("point.seq_len", p.seq_len.to_string()));
        }
        let outcome = match p.outcome.ok_or(ConvertError::Missing("point.outcome"))? {
            v1::point_result::Outcome::Measured(s) => {
                let latency: LatencySummary = s
                    .latency
                    .ok_or(ConvertError::Missing("point.latency"))?
                    .into();
                // Every figure, not only the headline ones: the store keeps
                // the point as JSON, where NaN and infinity do not exist.
                let mut figures = vec![
                    ("latency.mean_ms", latency.mean_ms),
                    ("latency.p50_ms", latency.p50_ms),
                    ("latency.p90_ms", latency.p90_ms),
                    ("latency.p99_ms", latency.p99_ms),
                    ("latency.min_ms", latency.min_ms),
                    ("latency.max_ms", latency.max_ms),
                    ("latency.std_ms", latency.std_ms),
                    ("latency.cv", latency.cv),
                    ("throughput", s.throughput),
                    ("timed_seconds", s.timed_seconds),
                ];
                figures.extend(s.samples_ms.iter().map(|v| ("samples_ms", *v)));
                figures.extend(s.avg_power_watts.map(|v| ("avg_power_watts", v)));
                figures.extend(s.energy_joules.map(|v| ("energy_joules", v)));
                figures.extend(s.sm_clock_mhz.map(|v| ("sm_clock_mhz", v)));
                figures.extend(s.gpu_temperature_c.map(|v| ("gpu_temperature_c", v)));
                let energy_method = s
                    .energy_method
                    .as_deref()
                    .map(str::parse::<c::EnergyMethod>)
                    .transpose()
                    .map_err(|why| invalid("point.energy_method", why))?;
                if let Some((name, v)) = figures.iter().find(|(_, v)| !v.is_finite() || *v < 0.0) {
                    return Err(invalid(
                        "point.measured",
                        format!("{name} = {v:?}: non-finite or negative figure"),
                    ));
                }
                c::PointOutcome::Measured(c::PointStats {
                    warmup: s.warmup,
                    iterations: s.iterations,
                    timed_seconds: s.timed_seconds,
                    latency,
                    throughput: s.throughput,
                    samples_ms: s.samples_ms,
                    peak_rss_bytes: s.peak_rss_bytes,
                    gpu_process_bytes: s.gpu_process_bytes,
                    gpu_device_bytes: s.gpu_device_bytes,
                    avg_power_watts: s.avg_power_watts,
                    energy_joules: s.energy_joules,
                    throttle_reasons: s
                        .throttle_reasons
                        .into_iter()
                        .take(MAX_NOTES)
                        .map(short)
                        .collect(),
                    sm_clock_mhz: s.sm_clock_mhz,
                    gpu_pool_peak_bytes: s.gpu_pool_peak_bytes,
                    gpu_temperature_c: s.gpu_temperature_c,
                    energy_method,
                    gpu_samples: s.gpu_samples,
                })
            }
            v1::point_result::Outcome::Error(error) => {
                c::PointOutcome::Failed { error: long(error) }
            }
        };
        Ok(c::PointResult {
            batch_size: p.batch_size as usize,
            seq_len: p.seq_len as usize,
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_invalid_specs_are_refused() {
        let spec = c::SweepSpec {
            device: c::DeviceSelector::Cuda(Some(1)),
            ..c::SweepSpec::default()
        };
        let wire: v1::SweepSpec = (&spec).into();
        assert_eq!(c::SweepSpec::try_from(wire.clone()), Ok(spec));
        let bad = v1::SweepSpec {
            batch_sizes: vec![],
            ..wire
        };
        assert_eq!(
            c::SweepSpec::try_from(bad),
            Err(ConvertError::Spec(c::SpecError::EmptyBatchSizes))
        );
    }

    #[test]
    fn point_results_round_trip_and_garbage_is_refused() {
        let stats = c::PointStats {
            warmup: 1,
            iterations: 2,
            timed_seconds: 0.5,
            latency: LatencySummary::from_samples_ms(&[200.0, 300.0]).expect("summary"),
            throughput: 16.0,
            samples_ms: vec![200.0, 300.0],
            peak_rss_bytes: Some(1 << 30),
            gpu_process_bytes: None,
            gpu_device_bytes: None,
            avg_power_watts: None,
            energy_joules: None,
            throttle_reasons: vec![],
            sm_clock_mhz: None,
            gpu_pool_peak_bytes: None,
            gpu_temperature_c: None,
            energy_method: None,
            gpu_samples: 0,
        };
        let point = c::PointResult {
            batch_size: 4,
            seq_len: 128,
            outcome: c::PointOutcome::Measured(stats),
        };
        let wire: v1::PointResult = (&point).into();
        assert_eq!(c::PointResult::try_from(wire.clone()), Ok(point));
        assert!(
            c::PointResult::try_from(v1::PointResult {
                batch_size: 0,
                ..wire.clone()
            })
            .is_err()
        );
        assert!(
            c::PointResult::try_from(v1::PointResult {
                outcome: None,
                ..wire
            })
            .is_err()
        );
    }

    #[test]
    fn a_spec_from_an_older_coordinator_gets_the_two_second_gpu_minimum() {
        let spec = c::SweepSpec {
            gpu_min_seconds: 0.5,
            ..c::SweepSpec::default()
        };
        let wire: v1::SweepSpec = (&spec).into();
        assert_eq!(wire.gpu_min_seconds, Some(0.5));
        assert_eq!(c::SweepSpec::try_from(wire.clone()), Ok(spec));
        let older = v1::SweepSpec {
            gpu_min_seconds: None,
            ..wire.clone()
        };
        let read = c::SweepSpec::try_from(older).expect("valid");
        assert_eq!(read.gpu_min_seconds, c::spec::DEFAULT_GPU_MIN_SECONDS);
        let negative = v1::SweepSpec {
            gpu_min_seconds: Some(-1.0),
            ..wire
        };
        assert_eq!(
            c::SweepSpec::try_from(negative),
            Err(ConvertError::Spec(c::SpecError::GpuMinSecondsOutOfRange(
                -1.0
            )))
        );
    }

    #[test]
    fn the_energy_method_and_window_figures_cross_the_wire_and_unknown_methods_are_refused() {
        let mut wire = measured_wire_point();
        let Some(v1::point_result::Outcome::Measured(stats)) = wire.outcome.as_mut() else {
            panic!("measured point expected");
        };
        stats.energy_method = Some("counter-stalled-power-integration".into());
        stats.gpu_pool_peak_bytes = Some(3 << 30);
        stats.gpu_temperature_c = Some(71.0);
        stats.gpu_samples = 81;
        let point = c::PointResult::try_from(wire.clone()).expect("valid");
        let s = point.stats().expect("measured");
        assert_eq!(
            s.energy_method,
            Some(c::EnergyMethod::CounterStalledPowerIntegration)
        );
        assert_eq!(
            (s.gpu_pool_peak_bytes, s.gpu_temperature_c, s.gpu_samples),
            (Some(3 << 30), Some(71.0), 81)
        );
        assert_eq!(v1::PointResult::from(&point), wire);

        type Spoil = fn(&mut v1::PointStats);
        let spoils: [(&str, Spoil); 2] = [
            ("energy_method", |s| {
                s.energy_method = Some("guess\nwork".into())
            }),
            ("gpu_temperature_c", |s| {
                s.gpu_temperature_c = Some(f64::NAN)
            }),
        ];
        for (bad, spoil) in spoils {
            let mut spoilt = wire.clone();
            if let Some(v1::point_result::Outcome::Measured(s)) = spoilt.outcome.as_mut() {
                spoil(s);
            }
            let err = c::PointResult::try_from(spoilt).expect_err(bad).to_string();
            assert!(err.contains(bad) || err.contains("energy method"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    fn measured_wire_point() -> v1::PointResult {
        let latency = LatencySummary::from_samples_ms(&[20.0, 22.0]).expect("summary");
        let stats = c::PointStats {
            warmup: 1,
            iterations: 2,
            timed_seconds: 0.042,
            throughput: 8.0 / 0.021,
            latency,
            samples_ms: vec![20.0, 22.0],
            peak_rss_bytes: None,
            gpu_process_bytes: None,
            gpu_device_bytes: None,
            avg_power_watts: Some(70.0),
            energy_joules: Some(3.0),
            throttle_reasons: vec![],
            sm_clock_mhz: Some(1500.0),
            gpu_pool_peak_bytes: None,
            gpu_temperature_c: None,
            energy_method: None,
            gpu_samples: 0,
        };
        (&c::PointResult {
            batch_size: 8,
            seq_len: 128,
            outcome: c::PointOutcome::Measured(stats),
        })
            .into()
    }

    /// Fuzz finding F4 (fuzz/RESULTS.md, target agent_message): only four
    /// figures were checked, so a point with a NaN p50 or a negative sample
    /// was acknowledged, stored as JSON with `null` in it, and then failed to
    /// read back, taking every report of its sweep with it.
    #[test]
    fn every_figure_of_a_measured_point_must_be_finite_and_not_negative() {
        let good = measured_wire_point();
        assert!(c::PointResult::try_from(good.clone()).is_ok());
        type Spoil = fn(&mut v1::PointStats);
        let spoilers: [(&str, Spoil); 6] = [
            ("latency.p50_ms", |s| {
                if let Some(l) = s.latency.as_mut() {
                    l.p50_ms = f64::NAN
                }
            }),
            ("latency.std_ms", |s| {
                if let Some(l) = s.latency.as_mut() {
                    l.std_ms = -1.0
                }
            }),
            ("samples_ms", |s| s.samples_ms.push(-3.4e-308)),
            ("avg_power_watts", |s| {
                s.avg_power_watts = Some(f64::INFINITY)
            }),
            ("energy_joules", |s| s.energy_joules = Some(-5.0)),
            ("sm_clock_mhz", |s| s.sm_clock_mhz = Some(f64::NAN)),
        ];
        for (field, spoil) in spoilers {
            let mut wire = good.clone();
            if let Some(v1::point_result::Outcome::Measured(s)) = wire.outcome.as_mut() {
                spoil(s);
            }
            let e = c::PointResult::try_from(wire).expect_err(field).to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    /// Fuzz finding F5 (fuzz/RESULTS.md, target agent_message): a device's
    /// id was not checked against its kind, nor for being the one spelling of
    /// that device, so "cuda:01" and "cuda:1" stored the same GPU twice.
    #[test]
    fn device_ids_are_canonical_and_match_their_kind() {
        let device = |id: &str, kind: &str| v1::DeviceDescription {
            id: id.into(),
            kind: kind.into(),
            name: "x".into(),
            simulated: false,
        };
        assert!(c::DeviceDescription::try_from(device("cpu", "cpu")).is_ok());
        assert!(c::DeviceDescription::try_from(device("cuda:1", "cuda")).is_ok());
        for (id, kind) in [
            ("cuda:1", "cpu"),
            ("cpu", "cuda"),
            ("cuda:01", "cuda"),
            ("cuda:+1", "cuda"),
            ("cuda:", "cuda"),
            ("cuda:4294967296", "cuda"),
        ] {
            assert!(
                c::DeviceDescription::try_from(device(id, kind)).is_err(),
                "{id} of kind {kind}"
            );
        }
    }

    /// Fuzz finding F6 (fuzz/RESULTS.md, target sweep_spec, input
    /// "429496729711" as --seq-len): the wire form truncated to u32, so an
    /// invalid spec became a valid one with sequence length 111.
    #[test]
    fn out_of_range_spec_values_stay_out_of_range_on_the_wire() {
        let long = c::SweepSpec {
            seq_len: 429_496_729_711,
            ..c::SweepSpec::default()
        };
        assert!(c::SweepSpec::try_from(v1::SweepSpec::from(&long)).is_err());
        let big = c::SweepSpec {
            batch_sizes: vec![(1 << 32) + 8],
            ..c::SweepSpec::default()
        };
        assert!(c::SweepSpec::try_from(v1::SweepSpec::from(&big)).is_err());
    }

    /// Fuzz finding F1 on the wire: a refused value is quoted on one line.
    #[test]
    fn refusals_quote_the_value_on_one_line() {
        let e = c::DeviceDescription::try_from(v1::DeviceDescription {
            id: "cpu".into(),
            kind: "cu\nda".into(),
            name: String::new(),
            simulated: false,
        })
        .expect_err("unknown kind")
        .to_string();
        assert_eq!(
            e,
            "message field 'device.kind' has an invalid value 'cu\\nda'"
        );
    }

    #[test]
    fn agent_text_is_cleaned_and_bounded_on_the_way_in() {
        let hostile = "H100\n2026-11-29T00:00:00Z INFO forged line\u{1b}[31m\u{202E}";
        let inventory: c::HostInventory = v1::HostInventory {
            cpu_model: "x".repeat(1_000_000),
            gpus: (0..1000)
                .map(|i| v1::GpuInfo {
                    index: i,
                    name: hostile.into(),
                    ..v1::GpuInfo::default()
                })
                .collect(),
            ..v1::HostInventory::default()
        }
        .into();
        assert_eq!(inventory.gpus.len(), MAX_GPUS);
        assert_eq!(inventory.cpu_model.chars().count(), SHORT_TEXT + 1);
        let name = &inventory.gpus[0].name;
        assert!(
            !name.chars().any(fleetbench_common::names::is_unsafe_char),
            "{name:?}"
        );
        assert!(name.starts_with("H100\\u{a}2026"), "{name}");

        let mut wire = measured_wire_point();
        wire.outcome = Some(v1::point_result::Outcome::Error(format!(
            "out of memory\n{}",
            "y".repeat(10_000)
        )));
        let point = c::PointResult::try_from(wire).expect("a failed point");
        let c::PointOutcome::Failed { error } = point.outcome else {
            panic!("failed outcome expected");
        };
        assert!(error.starts_with("out of memory\\u{a}y"), "{error}");
        // Cut after LONG_TEXT characters of the original (the escape of
        // the newline is 4 characters longer), marked with an ellipsis.
        assert_eq!(error.chars().count(), LONG_TEXT + 4 + 1);
        assert!(error.ends_with('…'));
    }
}
