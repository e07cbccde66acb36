//! Records the candle version this agent is built with, for the reports'
//! environment section, from the workspace's Cargo.lock.

fn main() {
    // Read at run time, not baked in with env!(): a build script compiled in
    // one checkout is reused by another sharing the target directory (CI's
    // clone and a developer's tree), and must read that checkout's lock file.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let lock = std::path::Path::new(&dir).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut lines = text.lines();
    let mut version = "unknown".to_string();
    while let Some(line) = lines.next() {
        if line == "name = \"candle-core\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = ")) {
                version = v.trim_matches('"').to_string();
            }
            break;
        }
    }
    println!("cargo:rustc-env=FLEETBENCH_CANDLE_VERSION={version}");
}
