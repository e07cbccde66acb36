//! `fleetbench-agent profile`: where one forward pass spends its time, step
//! by step. The device is synchronised after every step, so each step is
//! charged its own time; the sum is therefore a little above an unprofiled
//! pass (also printed), whose kernels overlap their launches.

use std::time::{Duration, Instant};

use candle_core::Device;

use crate::model::engine::Laps;
use crate::model::{EncodedBatch, LoadedModel, ModelError};

/// Time per (part, step), in first-seen order.
#[derive(Debug)]
pub struct StepClock {
    device: Device,
    last: Instant,
    steps: Vec<((&'static str, &'static str), Duration)>,
}

impl StepClock {
    pub fn new(device: &Device) -> StepClock {
        StepClock {
            device: device.clone(),
            last: Instant::now(),
            steps: Vec::new(),
        }
    }

    fn restart(&mut self) -> candle_core::Result<()> {
        self.device.synchronize()?;
        self.last = Instant::now();
        Ok(())
    }
}

impl Laps for StepClock {
    fn lap(&mut self, part: &'static str, step: &'static str) -> candle_core::Result<()> {
        self.device.synchronize()?;
        let now = Instant::now();
        let spent = now - self.last;
        self.last = now;
        match self.steps.iter_mut().find(|(key, _)| *key == (part, step)) {
            Some((_, total)) => *total += spent,
            None => self.steps.push(((part, step), spent)),
        }
        Ok(())
    }
}

/// One row of the profile: milliseconds per forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTime {
    pub part: &'static str,
    pub step: &'static str,
    pub ms_per_pass: f64,
}

/// The profile of `iterations` passes over `batch` (after `warmup` passes),
/// and the mean time of an unprofiled pass measured in the same run.
pub fn profile_forward(
    model: &LoadedModel,
    batch: &EncodedBatch,
    warmup: u32,
    iterations: u32,
) -> Result<(Vec<StepTime>, f64), ModelError> {
    let device = model.device().clone();
    let sync = || {
        device
            .synchronize()
            .map_err(|e| ModelError::compute("synchronising the device", &e))
    };
    for _ in 0..warmup {
        model.forward(batch)?;
    }
    sync()?;
    let n = iterations.max(1);
    let started = Instant::now();
    for _ in 0..n {
        model.forward(batch)?;
        sync()?;
    }
    let plain_ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(n);
    let mut clock = StepClock::new(&device);
    for _ in 0..n {
        clock
            .restart()
            .map_err(|e| ModelError::compute("synchronising the device", &e))?;
        model.forward_laps(batch, &mut clock)?;
    }
    let rows = clock
        .steps
        .into_iter()
        .map(|((part, step), total)| StepTime {
            part,
            step,
            ms_per_pass: total.as_secs_f64() * 1e3 / f64::from(n),
        })
        .collect();
    Ok((rows, plain_ms))
}

/// The profile as a Markdown table, largest steps first.
pub fn render(rows: &[StepTime], plain_ms: f64) -> String {
    let total: f64 = rows.iter().map(|r| r.ms_per_pass).sum();
    let mut sorted = rows.to_vec();
    sorted.sort_by(|a, b| b.ms_per_pass.total_cmp(&a.ms_per_pass));
    let mut out = String::from("| part | step | ms per pass | share |\n|---|---|---:|---:|\n");
    for r in &sorted {
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.1}% |\n",
            r.part,
            r.step,
            r.ms_per_pass,
            if total > 0.0 {
                r.ms_per_pass / total * 100.0
            } else {
                0.0
            }
        ));
    }
    out.push_str(&format!(
        "\nsum of steps {total:.3} ms per pass (synchronised after each); unprofiled pass {plain_ms:.3} ms\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelRequest;
    use fleetbench_common::{Precision, WeightsChoice};

    #[test]
    fn every_step_of_the_pass_is_charged_and_the_table_sums_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/tiny-distilbert-sst2");
        // f32 (and bf16) take the CPU's own kernels, f16 candle's general ops.
        for (dtype, steps_wanted, row_wanted) in [
            (
                Precision::F32,
                &[
                    "copy to device",
                    "matmul + bias",
                    "matmul + bias + residual",
                    "layer norm",
                    "head",
                ][..],
                "| attention | q.kT, mask, softmax, p.v (fused) |",
            ),
            (
                Precision::F16,
                &[
                    "copy to device",
                    "matmul",
                    "bias",
                    "split heads (copy)",
                    "layer norm",
                    "head",
                ][..],
                "| attention | softmax |",
            ),
        ] {
            let request = ModelRequest {
                weights: WeightsChoice::Hub,
                dtype,
                ..ModelRequest::new(dir.display().to_string())
            };
            let model = LoadedModel::load(&request, &Device::Cpu).expect("fixture loads");
            let batch = model
                .encode(&["a fine film", "a dull one"], 16)
                .expect("encode");
            let (rows, plain) = profile_forward(&model, &batch, 1, 2).expect("profile");
            let steps: Vec<&str> = rows.iter().map(|r| r.step).collect();
            for step in steps_wanted {
                assert!(
                    steps.contains(step),
                    "{dtype}: {step} missing from {steps:?}"
                );
            }
            assert!(rows.iter().all(|r| r.ms_per_pass >= 0.0));
            assert!(plain > 0.0);
            let table = render(&rows, plain);
            assert!(table.contains(row_wanted), "{dtype}: {table}");
            assert!(table.contains("unprofiled pass"));
        }
    }
}
