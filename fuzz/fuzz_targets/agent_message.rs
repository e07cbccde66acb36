//! libFuzzer entry point; the properties are in `fleetbench_fuzz::agent_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetbench_fuzz::agent_message(data));
