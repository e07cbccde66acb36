//! fleetbench-agent: runs the DistilBERT SST-2 inference sweep with candle on
//! every selected device of its host, and streams the results to a
//! coordinator.
//!
//! Modules by concern: [`model`] (config, weights, tokenizer, the forward
//! pass), [`runner`] (the sweep and its timing), [`probe`] (host and GPU
//! facts), [`spool`] and [`client`] (the coordinator session and its delivery
//! guarantees), [`simulate`] (simulated hosts for tests and scale), [`bench`]
//! (the standalone sweep with its per-machine report), [`cli`] (the
//! `fleetbench-agent` program, one function per command).

pub mod alloc;
pub mod bench;
pub mod cli;
pub mod client;
pub mod devices;
pub mod gpu;
pub mod model;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod profile;
pub mod runner;
pub mod simulate;
pub mod spool;
