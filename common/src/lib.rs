//! The core every fleetbench crate shares, small, stable and free of I/O:
//! the sweep spec and its validation, the result types that travel from agent
//! to coordinator, statistics, the DistilBERT FLOP count and the GPU peak
//! table. What is made of results for people (insights, comparison, the
//! report exporters) lives above it in `fleetbench-report`.

pub mod flops;
pub mod hardware;
pub mod names;
pub mod result;
pub mod rng;
pub mod spec;
pub mod stats;
/// The sweep settings as command-line flags, for every binary that takes them.
#[cfg(feature = "clap")]
pub mod sweep_args;
pub mod time;

pub use result::{
    DeviceDescription, DeviceKind, EnergyMethod, GpuInfo, HostInventory, MachineReport, ModelInfo,
    PointOutcome, PointResult, PointStats, RunEnvironment, WeightsSource,
};
pub use spec::{DeviceSelector, Engine, Precision, SpecError, SweepSpec, WeightsChoice};
