//! libFuzzer entry point; the properties are in `fleetbench_fuzz::control_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetbench_fuzz::control_request(data));
