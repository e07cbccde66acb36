//! libFuzzer entry point; the properties are in `fleetbench_fuzz::sweep_spec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetbench_fuzz::sweep_spec(data));
