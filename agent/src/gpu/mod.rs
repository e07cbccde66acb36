//! What is particular to GPUs: which CUDA device is which NVML device
//! ([`visible`]), whether this build can run on the driver and the card
//! ([`compat`]), NVML's view of the host's GPUs ([`topology`]), sensors read
//! while the GPU works ([`sampler`]) and candle's CUDA device with its memory
//! pool ([`cuda`], CUDA builds only).

pub mod compat;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod sampler;
pub mod topology;
pub mod visible;
