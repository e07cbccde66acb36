//! What the fleetbench agent and coordinator share, and nothing that does I/O
//! beyond rendering reports to strings: the sweep spec and its validation, the
//! result types that travel from agent to coordinator, statistics, insights,
//! the DistilBERT FLOP count, the GPU peak table and the report exporters.

pub mod compare;
pub mod flops;
pub mod hardware;
pub mod insights;
pub mod report;
pub mod result;
pub mod rng;
pub mod spec;
pub mod stats;
pub mod time;

pub use result::{
    DeviceDescription, DeviceKind, EnergyMethod, GpuInfo, HostInventory, MachineReport, ModelInfo,
    PointOutcome, PointResult, PointStats, RunEnvironment, WeightsSource,
};
pub use spec::{DeviceSelector, Engine, Precision, SpecError, SweepSpec, WeightsChoice};
