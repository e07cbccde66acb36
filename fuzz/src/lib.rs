//! Properties checked by the fuzz targets (results: fuzz/RESULTS.md).
//!
//! Each public function takes the fuzzer's bytes, feeds them to the real
//! parsers and validators of `fleetbench-common` and `fleetbench-proto`, and
//! panics when a property does not hold:
//!
//! - nothing panics on any input;
//! - a refused input gets a non-empty error on one line (it ends up in a log
//!   line, an `Ack.reason` or a gRPC status);
//! - an accepted value is really valid, survives the conversions the
//!   coordinator applies to it (wire ↔ Rust, and the JSON its store keeps), and
//!   the reports the coordinator renders from it can be written.
//!
//! The fuzz targets in `fuzz_targets/` are one-line wrappers around these, so
//! `cargo test` in this directory can replay the seeds and any saved crash.

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};
use std::str::FromStr;

use arbitrary::Unstructured;
use fleetbench_report::{
    FleetOptions, FleetReport, HostOutcome, PriceTable, all_exporters,
};
use fleetbench_common::spec::{
    BatchSizeList, MAX_BATCH_SIZE, MAX_ITERATIONS, MAX_SEQ_LEN, join_batch_sizes, parse_batch_sizes,
};
use fleetbench_common::{
    DeviceDescription, DeviceKind, DeviceSelector, Engine, HostInventory, MachineReport, ModelInfo,
    PointOutcome, PointResult, Precision, RunEnvironment, SpecError, SweepSpec, WeightsChoice,
};
use fleetbench_proto::security::{BearerAuth, Token, presented_token};
use fleetbench_proto::v1::{self, agent_message};
use prost::Message;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;

/// Characters that start a new line in a terminal, a log viewer or an editor.
const LINE_BREAKS: [char; 7] = [
    '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
];

/// An error shown to an operator: non-empty and on one line.
pub fn assert_clear_error(what: &str, message: &str) {
    assert!(!message.trim().is_empty(), "{what}: empty error message");
    assert!(
        !message.contains(LINE_BREAKS),
        "{what}: the error message spans several lines: {message:?}"
    );
}

fn json_round_trip<T>(what: &str, value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let json = serde_json::to_string(value)
        .unwrap_or_else(|e| panic!("{what}: accepted value does not serialise: {e}"));
    serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!("{what}: the JSON the store keeps does not read back ({e}): {json}")
    })
}

// ---------------------------------------------------------------------------
// sweep_spec
// ---------------------------------------------------------------------------

/// The sweep-spec parsers: `--batch-sizes`, `--dtype`, `--device`,
/// `--engine`, `--weights`, `--seq-len`, and a spec as JSON (as the
/// coordinator stores it), each followed by `SweepSpec::validate`.
pub fn sweep_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    batch_sizes(text);
    enumeration::<Precision>("dtype", text);
    enumeration::<DeviceSelector>("device", text);
    enumeration::<Engine>("engine", text);
    enumeration::<WeightsChoice>("weights", text);
    // clap reads --seq-len, --warmup and --iterations as plain integers and
    // leaves the range to validate().
    if let Ok(n) = text.parse::<usize>() {
        let spec = SweepSpec {
            seq_len: n,
            ..SweepSpec::default()
        };
        assert_eq!(spec.validate().is_ok(), (1..=MAX_SEQ_LEN).contains(&n));
        check_spec("--seq-len", &spec);
    }
    if let Ok(n) = text.parse::<u32>() {
        check_spec(
            "--iterations",
            &SweepSpec {
                iterations: n,
                warmup: n,
                ..SweepSpec::default()
            },
        );
    }
    if let Ok(spec) = serde_json::from_str::<SweepSpec>(text) {
        check_spec("spec JSON", &spec);
    }
}

fn batch_sizes(text: &str) {
    match parse_batch_sizes(text) {
        Ok(sizes) => {
            assert!(!sizes.is_empty(), "accepted an empty batch size list");
            assert!(
                sizes.iter().all(|b| (1..=MAX_BATCH_SIZE).contains(b)),
                "accepted an out-of-range batch size: {sizes:?}"
            );
            assert_eq!(
                sizes.iter().collect::<BTreeSet<_>>().len(),
                sizes.len(),
                "accepted a duplicated batch size: {sizes:?}"
            );
            assert_eq!(
                parse_batch_sizes(&join_batch_sizes(&sizes)),
                Ok(sizes.clone()),
                "batch sizes do not survive join + parse"
            );
            assert_eq!(
                text.parse::<BatchSizeList>(),
                Ok(BatchSizeList(sizes.clone()))
            );
            let spec = SweepSpec {
                batch_sizes: sizes,
                ..SweepSpec::default()
            };
            assert_eq!(
                spec.validate(),
                Ok(()),
                "parsed batch sizes fail validate()"
            );
            check_spec("--batch-sizes", &spec);
        }
        Err(e) => {
            assert_clear_error("--batch-sizes", &e.to_string());
            assert!(text.parse::<BatchSizeList>().is_err());
        }
    }
}

/// A named value (dtype, device, ...) parses, prints and parses back to
/// itself: the wire carries these as their `Display` text.
fn enumeration<T>(what: &str, text: &str)
where
    T: FromStr<Err = SpecError> + Display + PartialEq + Debug,
{
    match text.parse::<T>() {
        Ok(v) => {
            let shown = v.to_string();
            assert_eq!(
                shown.parse::<T>().as_ref(),
                Ok(&v),
                "{what} {shown:?} does not parse back"
            );
        }
        Err(e) => assert_clear_error(what, &e.to_string()),
    }
}

/// A spec that validates is within every bound and survives both trips the
/// coordinator makes it take (its store's JSON, and the wire to the agent);
/// one that does not gets a clear error and is refused on the wire as well.
pub fn check_spec(what: &str, spec: &SweepSpec) {
    let wire = v1::SweepSpec::from(spec);
    let back = SweepSpec::try_from(wire.clone());
    match spec.validate() {
        Ok(()) => {
            assert!(!spec.model.trim().is_empty());
            assert!(!spec.batch_sizes.is_empty());
            assert!(
                spec.batch_sizes
                    .iter()
                    .all(|b| (1..=MAX_BATCH_SIZE).contains(b))
            );
            assert!((1..=MAX_SEQ_LEN).contains(&spec.seq_len));
            assert!((1..=MAX_ITERATIONS).contains(&spec.iterations));
            assert!(spec.warmup <= MAX_ITERATIONS);
            assert!(spec.min_seconds.is_finite() && (0.0..=86_400.0).contains(&spec.min_seconds));
            assert_eq!(
                &json_round_trip(what, spec),
                spec,
                "{what}: JSON round trip changed the spec"
            );
            assert_eq!(
                back.as_ref(),
                Ok(spec),
                "{what}: wire round trip changed the spec"
            );
            let bytes = wire.encode_to_vec();
            let decoded = v1::SweepSpec::decode(bytes.as_slice())
                .unwrap_or_else(|e| panic!("{what}: encoded spec does not decode: {e}"));
            assert_eq!(SweepSpec::try_from(decoded).as_ref(), Ok(spec));
            let _ = spec.summary();
        }
        Err(e) => {
            assert_clear_error(what, &e.to_string());
            if let Ok(other) = back {
                panic!("{what}: an invalid spec ({e}) became a valid one on the wire: {other:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------

/// The text files the coordinator and the agent read at start-up: the
/// `--prices` file (JSON or CSV lines) and the bearer token files
/// (`--agent-token-file`, `--operator-token-file`, `--token-file`), plus the
/// `authorization` header the token gate checks against them.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    prices(text);
    token(text);
}

fn prices(text: &str) {
    match PriceTable::parse(text) {
        Ok(table) => {
            for (k, v) in &table.0 {
                assert!(v.is_finite() && *v > 0.0, "accepted price {v} for {k:?}");
                assert!(
                    table.price(k).is_some(),
                    "price of {k:?} cannot be looked up"
                );
            }
            // The table written back as JSON reads back the same.
            let json = serde_json::to_string(&table.0).expect("prices serialise");
            assert_eq!(
                PriceTable::parse(&json),
                Ok(table),
                "prices JSON round trip: {json}"
            );
        }
        Err(e) => assert_clear_error("--prices", &e),
    }
}

const GATE_TOKEN: &str = "fuzz-gate-token-0123456789";

fn token(text: &str) {
    match Token::new(text, "the token file") {
        Ok(token) => {
            let secret = token.expose();
            assert!(secret.len() >= Token::MIN_LEN);
            assert!(secret.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(secret, text.trim());
            assert!(token.matches(secret));
            assert!(!token.matches(&format!("{secret}x")));
            // The client sends it and the server admits it.
            let request = BearerAuth::new(Some(&token))
                .call(tonic::Request::new(()))
                .expect("interceptor");
            let header = request.metadata().get("authorization").expect("header");
            assert_eq!(
                header.to_str().ok(),
                Some(format!("Bearer {secret}").as_str())
            );
            let presented = presented_token(request.metadata()).expect("header");
            assert!(token.matches(presented));
        }
        Err(e) => assert_clear_error("token file", &e.to_string()),
    }
    // Whatever a client presents, the server reads it without panicking and
    // the configured token matches exactly its own header.
    if let Ok(value) = AsciiMetadataValue::try_from(text) {
        let expected = Token::new(GATE_TOKEN, "test").expect("valid token");
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", value);
        let presented = presented_token(&metadata).expect("header");
        assert_eq!(
            expected.matches(presented),
            text == format!("Bearer {GATE_TOKEN}")
        );
    }
}

// ---------------------------------------------------------------------------
// agent_message
// ---------------------------------------------------------------------------

/// One message of an agent's session, as the coordinator decodes it from a
/// gRPC frame, then what the coordinator does with it.
///
/// The same bytes are read twice: as the encoded message (the decoder's
/// robustness), and as the choices that build a message field by field (see
/// `structured`), which reaches the validation behind nested length prefixes
/// that byte-level mutations seldom keep consistent.
pub fn agent_message(data: &[u8]) {
    if let Ok(msg) = v1::AgentMessage::decode(data) {
        coordinator_receives(msg);
    }
    if let Ok(msg) = structured::agent_message(&mut Unstructured::new(data)) {
        let bytes = msg.encode_to_vec();
        let decoded = v1::AgentMessage::decode(bytes.as_slice()).expect("encoded message decodes");
        coordinator_receives(decoded);
    }
}

fn coordinator_receives(msg: v1::AgentMessage) {
    // Re-encoding is stable (what the agent's spool re-sends is what it sent).
    let once = msg.encode_to_vec();
    let twice = v1::AgentMessage::decode(once.as_slice())
        .expect("re-encoded message decodes")
        .encode_to_vec();
    assert_eq!(once, twice, "re-encoding is not stable");

    match msg.body {
        None => {}
        Some(agent_message::Body::Hello(hello)) => {
            let mut inventory: HostInventory = hello.inventory.map(Into::into).unwrap_or_default();
            inventory.hostname = hello.agent_name;
            // The store keeps the inventory as JSON and reads it back for
            // every report and every `fleetbench agents`.
            let stored: HostInventory = json_round_trip("inventory", &inventory);
            render_reports(
                stored,
                sample_device(),
                sample_model(),
                sample_point(),
                RunEnvironment::default(),
            );
        }
        Some(agent_message::Body::Heartbeat(_)) => {}
        Some(agent_message::Body::Progress(p)) => {
            let _ = format!("{} batch {} {}", p.device_id, p.batch_size, p.phase);
        }
        Some(agent_message::Body::Result(r)) => point_result(r),
        Some(agent_message::Body::Finished(_)) => {}
    }
}

/// The coordinator's `result_received`: device, model and point are each
/// converted (and so validated); a refusal becomes `Ack.reason`.
fn point_result(r: v1::PointResultMsg) {
    let device = r
        .device
        .map(|d| DeviceDescription::try_from(d).map_err(|e| e.to_string()));
    let model = r
        .model
        .map(|m| ModelInfo::try_from(m).map_err(|e| e.to_string()));
    let point = r
        .point
        .map(|p| PointResult::try_from(p).map_err(|e| e.to_string()));
    let errors = [
        device.as_ref().and_then(|r| r.as_ref().err()),
        model.as_ref().and_then(|r| r.as_ref().err()),
        point.as_ref().and_then(|r| r.as_ref().err()),
    ];
    for e in errors.into_iter().flatten() {
        assert_clear_error("Ack.reason", e);
    }
    if let Some(Ok(d)) = &device {
        check_device(d);
    }
    if let Some(Ok(m)) = &model {
        assert_eq!(&json_round_trip("model", m), m, "model JSON round trip");
        assert_eq!(ModelInfo::try_from(v1::ModelInfo::from(m)).as_ref(), Ok(m));
    }
    if let Some(Ok(p)) = &point {
        check_point(p);
    }
    if let (Some(Ok(device)), Some(Ok(model)), Some(Ok(point))) = (device, model, point) {
        let environment: RunEnvironment = r.environment.map(Into::into).unwrap_or_default();
        // As the store keeps them, and as the report writer reads them back.
        let device = json_round_trip("device", &device);
        let model = json_round_trip("model", &model);
        let point = json_round_trip("point", &point);
        let environment = json_round_trip("environment", &environment);
        render_reports(HostInventory::default(), device, model, point, environment);
    }
}

fn check_device(d: &DeviceDescription) {
    let canonical = match d.kind {
        DeviceKind::Cpu => d.id == "cpu",
        DeviceKind::Cuda => {
            d.id.strip_prefix("cuda:")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| d.id == format!("cuda:{n}"))
        }
    };
    assert!(
        canonical,
        "accepted device id {:?} of kind {:?}: not the one id of that device",
        d.id, d.kind
    );
    assert_eq!(&json_round_trip("device", d), d);
    assert_eq!(
        DeviceDescription::try_from(v1::DeviceDescription::from(d)).as_ref(),
        Ok(d)
    );
}

fn check_point(p: &PointResult) {
    assert!((1..=MAX_BATCH_SIZE).contains(&p.batch_size));
    assert!((1..=MAX_SEQ_LEN).contains(&p.seq_len));
    if let PointOutcome::Measured(s) = &p.outcome {
        let l = &s.latency;
        let mut figures = vec![
            ("timed_seconds", s.timed_seconds),
            ("throughput", s.throughput),
            ("latency.mean_ms", l.mean_ms),
            ("latency.p50_ms", l.p50_ms),
            ("latency.p90_ms", l.p90_ms),
            ("latency.p99_ms", l.p99_ms),
            ("latency.min_ms", l.min_ms),
            ("latency.max_ms", l.max_ms),
            ("latency.std_ms", l.std_ms),
            ("latency.cv", l.cv),
        ];
        figures.extend(s.samples_ms.iter().map(|v| ("samples_ms", *v)));
        for (name, v) in [
            ("avg_power_watts", s.avg_power_watts),
            ("energy_joules", s.energy_joules),
            ("sm_clock_mhz", s.sm_clock_mhz),
        ] {
            figures.extend(v.map(|v| (name, v)));
        }
        for (name, v) in figures {
            assert!(
                v.is_finite() && v >= 0.0,
                "accepted a measured point with {name} = {v}"
            );
        }
    }
    assert_eq!(
        &json_round_trip("point", p),
        p,
        "point JSON round trip changed the point"
    );
    assert_eq!(
        PointResult::try_from(v1::PointResult::from(p)).as_ref(),
        Ok(p)
    );
}

/// The coordinator's report step for one host with one accepted result: a
/// machine report and a fleet report in every format.
fn render_reports(
    host: HostInventory,
    device: DeviceDescription,
    model: ModelInfo,
    point: PointResult,
    environment: RunEnvironment,
) {
    let spec = SweepSpec {
        batch_sizes: vec![point.batch_size],
        seq_len: point.seq_len,
        ..SweepSpec::default()
    };
    let hostname = host.hostname.clone();
    let machine = MachineReport {
        generated_at: "2026-01-01T00:00:00Z".into(),
        host,
        device,
        model,
        spec: spec.clone(),
        points: vec![point],
        environment,
        notes: vec![],
    };
    let machines = [machine];
    let outcomes = [HostOutcome {
        host: hostname,
        status: "completed".into(),
        error: None,
        simulated: false,
    }];
    let options = FleetOptions {
        baseline: None,
        prices: PriceTable::parse("T4,0.35\nH100-SXM,3.5\nCPU,0.1").ok(),
    };
    let fleet = FleetReport::build(
        "sweep-fuzz",
        "completed",
        &spec,
        &machines,
        &outcomes,
        &options,
        "2026-01-01T00:00:00Z".into(),
    );
    for exporter in all_exporters() {
        if let Err(e) = exporter.machine(&machines[0]) {
            panic!("machine report .{} failed: {e}", exporter.extension());
        }
        if let Err(e) = exporter.fleet(&fleet) {
            panic!("fleet report .{} failed: {e}", exporter.extension());
        }
    }
}

/// A valid CPU device, model and point, for the Hello path's report.
pub fn sample_device() -> DeviceDescription {
    DeviceDescription::cpu("Fuzz CPU")
}

pub fn sample_model() -> ModelInfo {
    ModelInfo::distilbert_base(
        fleetbench_common::spec::DEFAULT_MODEL,
        fleetbench_common::WeightsSource::Random { seed: 42 },
        Precision::F32,
        Engine::Fleetbench,
    )
}

pub fn sample_point() -> PointResult {
    let samples = vec![20.0, 21.0, 22.5, 20.5];
    let latency = fleetbench_common::stats::LatencySummary::from_samples_ms(&samples)
        .expect("finite samples");
    PointResult {
        batch_size: 8,
        seq_len: 128,
        outcome: PointOutcome::Measured(fleetbench_common::PointStats {
            warmup: 2,
            iterations: 4,
            timed_seconds: 0.084,
            throughput: 8.0 / (latency.mean_ms / 1000.0),
            latency,
            samples_ms: samples,
            peak_rss_bytes: Some(1 << 30),
            gpu_process_bytes: None,
            gpu_device_bytes: None,
            avg_power_watts: Some(65.0),
            energy_joules: Some(5.5),
            throttle_reasons: vec![],
            sm_clock_mhz: None,
            gpu_pool_peak_bytes: None,
            gpu_temperature_c: None,
            energy_method: None,
            gpu_samples: 0,
        }),
    }
}

// ---------------------------------------------------------------------------
// control_request
// ---------------------------------------------------------------------------

/// The operator's requests the coordinator's Control service accepts. The
/// first byte picks the request type, the rest is its encoding.
pub fn control_request(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let req = match v1::StartSweepRequest::decode(bytes) {
                Ok(req) => req,
                // As for agent messages: build one from the bytes instead.
                Err(_) => match structured::start_sweep(&mut Unstructured::new(bytes)) {
                    Ok(req) => req,
                    Err(_) => return,
                },
            };
            // The coordinator's start_sweep: a missing spec or one that does
            // not convert is refused with the error as the gRPC status.
            match req.spec.map(SweepSpec::try_from) {
                None => {}
                Some(Ok(spec)) => check_spec("StartSweepRequest.spec", &spec),
                Some(Err(e)) => assert_clear_error("StartSweepRequest.spec", &e.to_string()),
            }
            let _ = req.baseline.trim();
            let _ = req.gpu_model.trim().to_ascii_lowercase();
        }
        1 => {
            let _ = v1::ListAgentsRequest::decode(bytes);
        }
        2 => {
            let _ = v1::WatchSweepRequest::decode(bytes);
        }
        3 => {
            let _ = v1::GetSweepRequest::decode(bytes);
        }
        4 => {
            let _ = v1::ListSweepsRequest::decode(bytes);
        }
        _ => {
            let _ = v1::CancelSweepRequest::decode(bytes);
        }
    }
}

/// Messages built from the fuzzer's bytes, field by field. Text fields are
/// drawn from the values the parsers know, those values with something
/// appended or prepended, or anything at all; numbers from typical values or
/// anything (NaN, infinities and negatives included).
mod structured {
    use arbitrary::{Arbitrary, Result, Unstructured};
    use fleetbench_proto::v1::{self, agent_message, point_result};

    fn text(u: &mut Unstructured<'_>, known: &[&str]) -> Result<String> {
        Ok(match u.int_in_range(0..=4)? {
            0 | 1 => u.choose(known)?.to_string(),
            2 => format!("{}{}", u.choose(known)?, <&str>::arbitrary(u)?),
            3 => format!("{}{}", <&str>::arbitrary(u)?, u.choose(known)?),
            _ => String::arbitrary(u)?,
        })
    }

    fn count(u: &mut Unstructured<'_>, typical: &[u32]) -> Result<u32> {
        if u.ratio(3, 4)? {
            u.choose(typical).copied()
        } else {
            u32::arbitrary(u)
        }
    }

    /// A byte count (a named function: `u64::arbitrary` itself does not
    /// satisfy `option`'s higher-ranked bound).
    fn big(u: &mut Unstructured<'_>) -> Result<u64> {
        u64::arbitrary(u)
    }

    fn figure(u: &mut Unstructured<'_>) -> Result<f64> {
        Ok(match u.int_in_range(0..=3)? {
            0 | 1 => f64::from(u.int_in_range(0..=1_000_000u32)?) / 100.0,
            2 => *u.choose(&[
                0.0,
                -0.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MAX,
                f64::MIN_POSITIVE,
                1e-300,
            ])?,
            _ => f64::arbitrary(u)?,
        })
    }

    fn option<T>(
        u: &mut Unstructured<'_>,
        f: impl FnOnce(&mut Unstructured<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(if bool::arbitrary(u)? {
            Some(f(u)?)
        } else {
            None
        })
    }

    fn list<T>(
        u: &mut Unstructured<'_>,
        max: usize,
        mut f: impl FnMut(&mut Unstructured<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = u.int_in_range(0..=max)?;
        (0..n).map(|_| f(u)).collect()
    }

    const GPU_NAMES: &[&str] = &[
        "NVIDIA H100 80GB HBM3",
        "NVIDIA A100-SXM4-80GB",
        "Tesla T4",
        "NVIDIA L4",
        "NVIDIA GeForce RTX 4090",
        "H100-SXM",
        "T4",
        "CPU",
        "",
    ];

    fn device(u: &mut Unstructured<'_>) -> Result<v1::DeviceDescription> {
        Ok(v1::DeviceDescription {
            id: text(u, &["cpu", "cuda:", "cuda:0", "cuda:1", "cuda:4294967295"])?,
            kind: text(u, &["cpu", "cuda"])?,
            name: text(u, GPU_NAMES)?,
            simulated: bool::arbitrary(u)?,
        })
    }

    fn model(u: &mut Unstructured<'_>) -> Result<v1::ModelInfo> {
        Ok(v1::ModelInfo {
            name: text(
                u,
                &[fleetbench_common::spec::DEFAULT_MODEL, "/models/distilbert"],
            )?,
            weights_json: text(
                u,
                &[
                    r#"{"kind":"random","seed":42}"#,
                    r#"{"kind":"hub","repo":"distilbert","revision":"main"}"#,
                    r#"{"kind":"directory","path":"/m"}"#,
                    r#"{"kind":"simulated"}"#,
                ],
            )?,
            hidden_size: count(u, &[768, 0, 1, 4096])?,
            layers: count(u, &[6, 0, 1, 96])?,
            heads: count(u, &[12, 0, 1])?,
            intermediate_size: count(u, &[3072, 0, 1])?,
            vocab_size: count(u, &[30522, 0])?,
            max_positions: count(u, &[512, 0])?,
            parameters: u64::arbitrary(u)?,
            dtype: text(u, &["f32", "f16", "bf16"])?,
            engine: text(u, &["fleetbench", "candle-transformers"])?,
        })
    }

    fn stats(u: &mut Unstructured<'_>) -> Result<v1::PointStats> {
        Ok(v1::PointStats {
            warmup: count(u, &[0, 5])?,
            iterations: count(u, &[0, 1, 20])?,
            timed_seconds: figure(u)?,
            latency: option(u, |u| {
                Ok(v1::LatencySummary {
                    mean_ms: figure(u)?,
                    p50_ms: figure(u)?,
                    p90_ms: figure(u)?,
                    p99_ms: figure(u)?,
                    min_ms: figure(u)?,
                    max_ms: figure(u)?,
                    std_ms: figure(u)?,
                    cv: figure(u)?,
                })
            })?,
            throughput: figure(u)?,
            samples_ms: list(u, 8, figure)?,
            peak_rss_bytes: option(u, big)?,
            gpu_process_bytes: option(u, big)?,
            gpu_device_bytes: option(u, big)?,
            avg_power_watts: option(u, figure)?,
            energy_joules: option(u, figure)?,
            throttle_reasons: list(u, 3, |u| {
                text(u, &["sw-thermal", "sw-power-cap", "hw-slowdown"])
            })?,
            sm_clock_mhz: option(u, figure)?,
            gpu_pool_peak_bytes: option(u, big)?,
            gpu_temperature_c: option(u, figure)?,
            energy_method: option(u, |u| {
                text(u, &["counter", "power-integration", "counter-stalled", "bogus"])
            })?,
            gpu_samples: u.arbitrary()?,
        })
    }

    fn point(u: &mut Unstructured<'_>) -> Result<v1::PointResult> {
        Ok(v1::PointResult {
            batch_size: count(u, &[1, 8, 64, 65_536, 65_537, 0])?,
            seq_len: count(u, &[128, 512, 513, 0])?,
            outcome: option(u, |u| {
                Ok(if u.ratio(3, 4)? {
                    point_result::Outcome::Measured(stats(u)?)
                } else {
                    point_result::Outcome::Error(text(u, &["CUDA out of memory", ""])?)
                })
            })?,
        })
    }

    fn inventory(u: &mut Unstructured<'_>) -> Result<v1::HostInventory> {
        Ok(v1::HostInventory {
            hostname: text(u, &["gpu-host-01", ""])?,
            os: text(u, &["Ubuntu 24.04"])?,
            kernel: text(u, &["6.8.0"])?,
            cpu_model: text(u, &["AMD EPYC 9654", ""])?,
            cpu_logical_cores: count(u, &[0, 1, 192])?,
            cpu_physical_cores: option(u, |u| count(u, &[0, 96]))?,
            memory_bytes: u64::arbitrary(u)?,
            gpus: list(u, 3, |u| {
                Ok(v1::GpuInfo {
                    index: count(u, &[0, 1])?,
                    name: text(u, GPU_NAMES)?,
                    uuid: text(u, &["GPU-0"])?,
                    memory_total_bytes: u64::arbitrary(u)?,
                    driver_version: text(u, &["570.86"])?,
                    cuda_version: option(u, |u| text(u, &["12.8"]))?,
                    pcie_generation: option(u, |u| count(u, &[3, 4, 5]))?,
                    pcie_width: option(u, |u| count(u, &[8, 16]))?,
                    power_limit_watts: option(u, figure)?,
                })
            })?,
            gpu_note: option(u, |u| text(u, &["no NVIDIA driver"]))?,
            simulated: bool::arbitrary(u)?,
        })
    }

    pub fn agent_message(u: &mut Unstructured<'_>) -> Result<v1::AgentMessage> {
        let body = match u.int_in_range(0..=4)? {
            0 => agent_message::Body::Hello(v1::Hello {
                protocol_version: count(u, &[fleetbench_proto::PROTOCOL_VERSION, 0])?,
                agent_version: text(u, &["0.1.0"])?,
                agent_name: text(u, &["gpu-host-01"])?,
                inventory: option(u, inventory)?,
                ..Default::default()
            }),
            1 => agent_message::Body::Heartbeat(v1::Heartbeat {
                sent_unix_ms: i64::arbitrary(u)?,
                active_sweep_id: text(u, &["sweep-1", ""])?,
                rss_bytes: u64::arbitrary(u)?,
            }),
            2 => agent_message::Body::Progress(v1::SweepProgress {
                sweep_id: text(u, &["sweep-1"])?,
                device_id: text(u, &["cpu", "cuda:0"])?,
                batch_size: count(u, &[8])?,
                phase: text(u, &["loading", "warmup", "timed"])?,
                points_done: count(u, &[0, 1])?,
                points_total: count(u, &[0, 5])?,
            }),
            3 => agent_message::Body::Result(v1::PointResultMsg {
                seq: u64::arbitrary(u)?,
                sweep_id: text(u, &["sweep-1"])?,
                device: option(u, device)?,
                model: option(u, model)?,
                point: option(u, point)?,
                environment: option(u, |u| {
                    Ok(v1::RunEnvironment {
                        agent_version: text(u, &["0.1.0"])?,
                        candle_version: text(u, &["0.11.1"])?,
                        threads: option(u, |u| count(u, &[0, 1, 16]))?,
                        build_features: list(u, 2, |u| text(u, &["cuda"]))?,
                        notes: list(u, 2, |u| text(u, &["note"]))?,
                    })
                })?,
            }),
            _ => agent_message::Body::Finished(v1::SweepFinished {
                seq: u64::arbitrary(u)?,
                sweep_id: text(u, &["sweep-1"])?,
                ok: bool::arbitrary(u)?,
                error: text(u, &["cancelled", ""])?,
                notes: list(u, 2, |u| text(u, &["note"]))?,
            }),
        };
        Ok(v1::AgentMessage { body: Some(body) })
    }

    pub fn start_sweep(u: &mut Unstructured<'_>) -> Result<v1::StartSweepRequest> {
        Ok(v1::StartSweepRequest {
            spec: option(u, |u| {
                Ok(v1::SweepSpec {
                    model: text(u, &[fleetbench_common::spec::DEFAULT_MODEL, " ", ""])?,
                    weights: text(u, &["auto", "hub", "random", "synthetic"])?,
                    engine: text(u, &["fleetbench", "candle-transformers", "stock"])?,
                    device: text(u, &["auto", "cpu", "cuda", "cuda:0", "cuda:"])?,
                    dtype: text(u, &["f32", "f16", "bf16"])?,
                    batch_sizes: list(u, 6, |u| count(u, &[1, 8, 16, 65_536, 65_537, 0]))?,
                    seq_len: count(u, &[128, 512, 513, 0])?,
                    warmup: count(u, &[0, 5, 1_000_000, 1_000_001])?,
                    iterations: count(u, &[1, 20, 1_000_000, 1_000_001, 0])?,
                    min_seconds: figure(u)?,
                })
            })?,
            hosts: list(u, 3, |u| text(u, &["gpu-host-01"]))?,
            gpu_model: text(u, &["H100", ""])?,
            deadline_seconds: count(u, &[0, 3600])?,
            baseline: text(u, &["T4", ""])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 4] = [
        ("sweep_spec", super::sweep_spec),
        ("config", super::config),
        ("agent_message", super::agent_message),
        ("control_request", super::control_request),
    ];

    /// Every committed seed goes through its target's properties; so do any
    /// crash files left in artifacts/ (a fixed bug must not come back).
    #[test]
    fn seeds_and_saved_artifacts_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for (name, target) in TARGETS {
            for dir in [
                root.join("corpus").join(name),
                root.join("artifacts").join(name),
            ] {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let bytes = std::fs::read(entry.path()).expect("read seed");
                    target(&bytes);
                    seen += 1;
                }
            }
        }
        assert!(seen >= 8, "expected the seed corpus, found {seen} files");
    }
}
