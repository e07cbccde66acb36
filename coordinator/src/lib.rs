//! fleetbench's coordinator: keeps the fleet's inventory, runs fleet-wide
//! sweeps, stores every result in its embedded SQLite store and writes
//! per-machine and fleet reports; plus the operator's client commands.
//!
//! Modules: [`server`] (gRPC services), [`fleet`] (connected agents),
//! [`sweeps`] (orchestration and deadlines), [`state`] (sweep and host
//! states and their rules), [`store`] (SQLite schema,
//! migrations, queries), [`reports`] (when and where reports are written), [`metrics`]
//! (Prometheus), [`security`] (TLS and tokens on the server side),
//! [`dev_certs`] (a test CA for trying mutual TLS),
//! [`operator`] (the `fleetbench` client commands), [`demo`] (the one-command
//! local fleet), [`cli`] (the `fleetbench` program, one function per command).

pub mod auth;
pub mod cli;
pub mod console;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dev_certs;
pub mod fleet;
pub mod metrics;
pub mod operator;
pub mod reports;
pub mod security;
pub mod server;
pub mod state;
pub mod store;
pub mod sweeps;
pub mod writer;
