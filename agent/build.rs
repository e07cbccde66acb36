//! Build facts the agent reports about itself: the candle version (from the
//! workspace's Cargo.lock) and, in a CUDA build, the toolkit version and the
//! compute capability its kernels were compiled for.

use std::process::Command;

fn main() {
    candle_version();
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        cuda_build();
    }
}

fn candle_version() {
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

/// The same facts candle's own build uses: `nvcc --version` (cudarc picks its
/// CUDA API from it) and `CUDA_COMPUTE_CAP` (candle-kernels compiles its PTX
/// for it). The agent compares them with the driver and the GPU at run time.
fn cuda_build() {
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let nvcc = std::env::var("CUDA_HOME")
        .map(|home| format!("{home}/bin/nvcc"))
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| "nvcc".to_string());
    // The CUDA API the build targets: cudarc's CUDARC_CUDA_VERSION when set
    // (deploy/cuda/build.sh sets 12020 for the CUDA 12 builds, whose compiler
    // is 12.4 but whose kernels and driver API are held to CUDA 12.2, the
    // R535 driver's), else the nvcc release.
    println!("cargo:rerun-if-env-changed=CUDARC_CUDA_VERSION");
    let version = std::env::var("CUDARC_CUDA_VERSION")
        .ok()
        .and_then(|v| cudarc_version(&v))
        .or_else(|| {
            Command::new(&nvcc)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|text| nvcc_release(&text))
        })
        .unwrap_or_else(|| "unknown".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=FLEETBENCH_CUDA_BUILD_VERSION={version}");
    println!("cargo:rustc-env=FLEETBENCH_CUDA_COMPUTE_CAP={cap}");
}

/// "12020" -> "12.2" (cudarc's CUDA version numbers: major * 1000 + minor * 10).
fn cudarc_version(text: &str) -> Option<String> {
    let n: u32 = text.trim().parse().ok()?;
    (n >= 1000).then(|| format!("{}.{}", n / 1000, (n % 1000) / 10))
}

/// "Cuda compilation tools, release 12.2, V12.2.140" -> "12.2".
fn nvcc_release(text: &str) -> Option<String> {
    let rest = &text[text.find("release ")? + "release ".len()..];
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}
