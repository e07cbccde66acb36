//! GPU sensors read while the GPU works: power, energy counter, SM clock,
//! temperature, memory and clock-event (throttle) reasons, sampled by a
//! background thread every [`SAMPLE_INTERVAL`] during a point's timed window,
//! so the forward passes run back to back with nothing in between, and the
//! figures describe the GPU under load rather than idle between iterations.
//!
//! [`summarise`] turns the readings into the point's figures. It is pure, so
//! the energy rules (counter, integration, a counter that did not advance)
//! are unit-tested on recorded sequences.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fleetbench_common::EnergyMethod;

use crate::probe::{GpuProbe, GpuSample};

/// 25 ms: inside the 20 to 50 ms sampling target; NVML refreshes power
/// about every 20 to 100 ms depending on the card, so sampling faster only
/// repeats values, and slower would miss short throttling episodes.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(25);

/// One reading, with when it was taken (since the window started).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SensorReading {
    pub at: Duration,
    pub sample: GpuSample,
}

/// What a point's window of readings comes to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowSummary {
    pub energy_joules: Option<f64>,
    pub energy_method: Option<EnergyMethod>,
    pub avg_power_watts: Option<f64>,
    pub device_peak_bytes: Option<u64>,
    pub process_peak_bytes: Option<u64>,
    /// Whether NVML's process list showed this process in any reading;
    /// `None` when no reading had a process list at all.
    pub process_listed: Option<bool>,
    pub sm_clock_median_mhz: Option<f64>,
    pub temperature_max_c: Option<f64>,
    /// Every clock-event reason seen in the window, in order of first sight.
    pub clock_events: Vec<String>,
    /// Readings whose clock-event reasons could not be read: reported as
    /// unknown, never as "no throttling".
    pub clock_events_unreadable: usize,
    pub samples: u32,
}

/// Runs `work` while a background thread samples GPU `nvml_index` every
/// `interval`. The first and last readings are taken on this thread right
/// before and right after `work`, so the window brackets exactly the timed
/// iterations.
pub fn sample_while<T>(
    probe: &dyn GpuProbe,
    nvml_index: u32,
    interval: Duration,
    work: impl FnOnce() -> T,
) -> (T, Vec<SensorReading>) {
    let started = Instant::now();
    let read = || {
        probe.sample(nvml_index).map(|sample| SensorReading {
            at: started.elapsed(),
            sample,
        })
    };
    let first = read();
    let stop = AtomicBool::new(false);
    let (result, middle) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut readings = Vec::new();
            loop {
                // Sleep first: the reading at time 0 was taken above.
                thread::park_timeout(interval);
                if stop.load(Ordering::Acquire) {
                    break;
                }
                readings.extend(read());
            }
            readings
        });
        let result = work();
        stop.store(true, Ordering::Release);
        sampler.thread().unpark();
        // A panicking sampler loses its readings, never the point.
        (result, sampler.join().unwrap_or_default())
    });
    let last = read();
    let readings = first.into_iter().chain(middle).chain(last).collect();
    (result, readings)
}

/// The point's GPU figures from its readings (in time order).
pub fn summarise(readings: &[SensorReading]) -> WindowSummary {
    let (energy_joules, energy_method) = energy(readings);
    let span = match (readings.first(), readings.last()) {
        (Some(a), Some(b)) if b.at > a.at => Some((b.at - a.at).as_secs_f64()),
        _ => None,
    };
    let powers: Vec<f64> = readings
        .iter()
        .filter_map(|r| r.sample.power_watts)
        .collect();
    let avg_power_watts = match (energy_joules, span) {
        (Some(j), Some(s)) => Some(j / s),
        _ if !powers.is_empty() => Some(powers.iter().sum::<f64>() / powers.len() as f64),
        _ => None,
    };
    let mut clocks: Vec<f64> = readings
        .iter()
        .filter_map(|r| r.sample.sm_clock_mhz.map(f64::from))
        .collect();
    clocks.sort_by(f64::total_cmp);
    let mut clock_events: Vec<String> = Vec::new();
    let mut clock_events_unreadable = 0;
    for r in readings {
        match &r.sample.clock_event_reasons {
            Some(reasons) => {
                for reason in reasons {
                    if !clock_events.contains(reason) {
                        clock_events.push(reason.clone());
                    }
                }
            }
            None => clock_events_unreadable += 1,
        }
    }
    let listed: Vec<bool> = readings
        .iter()
        .filter_map(|r| r.sample.pid_listed)
        .collect();
    WindowSummary {
        energy_joules,
        energy_method,
        avg_power_watts,
        device_peak_bytes: readings
            .iter()
            .filter_map(|r| r.sample.device_used_bytes)
            .max(),
        process_peak_bytes: readings
            .iter()
            .filter_map(|r| r.sample.process_used_bytes)
            .max(),
        process_listed: (!listed.is_empty()).then(|| listed.contains(&true)),
        sm_clock_median_mhz: (!clocks.is_empty())
            .then(|| fleetbench_common::stats::percentile_sorted(&clocks, 0.5)),
        temperature_max_c: readings
            .iter()
            .filter_map(|r| r.sample.temperature_c)
            .max()
            .map(f64::from),
        clock_events,
        clock_events_unreadable,
        samples: readings.len() as u32,
    }
}

/// Energy over the window and how it was measured.
///
/// NVML's total-energy counter (Volta and newer) is the better figure: it
/// integrates on the card. It advances in steps, so over a window shorter than
/// its update period the delta is 0: that is "did not advance", never 0 J,
/// and the power samples are integrated instead (trapezoids between readings).
/// A counter that went backwards (driver reload) is not trusted either.
fn energy(readings: &[SensorReading]) -> (Option<f64>, Option<EnergyMethod>) {
    let counter = readings
        .iter()
        .filter_map(|r| r.sample.energy_millijoules)
        .collect::<Vec<_>>();
    let counter_stalled = match (counter.first(), counter.last()) {
        (Some(&first), Some(&last)) if counter.len() >= 2 => {
            if last > first {
                return (
                    Some((last - first) as f64 / 1000.0),
                    Some(EnergyMethod::Counter),
                );
            }
            true
        }
        _ => false,
    };
    let powered: Vec<(f64, f64)> = readings
        .iter()
        .filter_map(|r| r.sample.power_watts.map(|p| (r.at.as_secs_f64(), p)))
        .collect();
    if powered.len() >= 2 {
        let joules = powered
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum::<f64>();
        let method = if counter_stalled {
            EnergyMethod::CounterStalledPowerIntegration
        } else {
            EnergyMethod::PowerIntegration
        };
        return (Some(joules), Some(method));
    }
    if counter_stalled {
        (None, Some(EnergyMethod::CounterStalled))
    } else {
        (None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ms: u64, sample: GpuSample) -> SensorReading {
        SensorReading {
            at: Duration::from_millis(ms),
            sample,
        }
    }

    fn power(w: f64) -> GpuSample {
        GpuSample {
            power_watts: Some(w),
            clock_event_reasons: Some(Vec::new()),
            ..GpuSample::default()
        }
    }

    #[test]
    fn the_energy_counter_delta_is_used_when_it_advanced() {
        let readings = [
            reading(
                0,
                GpuSample {
                    energy_millijoules: Some(1_000_000),
                    ..power(100.0)
                },
            ),
            reading(1_000, power(700.0)),
            reading(
                2_000,
                GpuSample {
                    energy_millijoules: Some(1_900_000),
                    ..power(100.0)
                },
            ),
        ];
        let s = summarise(&readings);
        assert_eq!(s.energy_method, Some(EnergyMethod::Counter));
        assert_eq!(s.energy_joules, Some(900.0));
        // Mean power is energy over the window, not the mean of the samples (300 W).
        assert_eq!(s.avg_power_watts, Some(450.0));
        assert_eq!(s.samples, 3);
    }

    #[test]
    fn without_a_counter_power_is_integrated_over_time() {
        // 0-1 s at 100 -> 300 W (200 J), 1-3 s at 300 W (600 J).
        let readings = [
            reading(0, power(100.0)),
            reading(1_000, power(300.0)),
            reading(3_000, power(300.0)),
        ];
        let s = summarise(&readings);
        assert_eq!(s.energy_method, Some(EnergyMethod::PowerIntegration));
        assert_eq!(s.energy_joules, Some(800.0));
        assert_eq!(s.avg_power_watts, Some(800.0 / 3.0));
    }

    #[test]
    fn a_counter_that_did_not_advance_is_named_and_never_reads_as_zero_joules() {
        let stuck = |ms, w: Option<f64>| {
            reading(
                ms,
                GpuSample {
                    energy_millijoules: Some(5_000),
                    power_watts: w,
                    ..GpuSample::default()
                },
            )
        };
        let with_power = [stuck(0, Some(200.0)), stuck(20, Some(200.0))];
        let s = summarise(&with_power);
        assert_eq!(
            s.energy_method,
            Some(EnergyMethod::CounterStalledPowerIntegration)
        );
        let j = s.energy_joules.expect("integrated");
        assert!((j - 4.0).abs() < 1e-9, "{j}");

        let without_power = [stuck(0, None), stuck(20, None)];
        let s = summarise(&without_power);
        assert_eq!(s.energy_method, Some(EnergyMethod::CounterStalled));
        assert_eq!(s.energy_joules, None);
        assert_eq!(s.avg_power_watts, None);
    }

    #[test]
    fn a_counter_that_went_backwards_is_not_trusted() {
        let readings = [
            reading(
                0,
                GpuSample {
                    energy_millijoules: Some(9_000),
                    ..power(50.0)
                },
            ),
            reading(
                1_000,
                GpuSample {
                    energy_millijoules: Some(10),
                    ..power(50.0)
                },
            ),
        ];
        let s = summarise(&readings);
        assert_eq!(
            s.energy_method,
            Some(EnergyMethod::CounterStalledPowerIntegration)
        );
        assert_eq!(s.energy_joules, Some(50.0));
    }

    #[test]
    fn no_sensors_no_figures() {
        let s = summarise(&[]);
        assert_eq!(s, WindowSummary::default());
        let s = summarise(&[reading(0, GpuSample::default())]);
        assert_eq!((s.energy_joules, s.energy_method), (None, None));
        assert_eq!(s.clock_events_unreadable, 1);
    }

    #[test]
    fn peaks_clocks_temperatures_and_clock_events_come_from_the_window() {
        let mut a = power(300.0);
        a.device_used_bytes = Some(10 << 30);
        a.process_used_bytes = Some(2 << 30);
        a.pid_listed = Some(true);
        a.sm_clock_mhz = Some(1980);
        a.temperature_c = Some(60);
        let mut b = a.clone();
        b.device_used_bytes = Some(12 << 30);
        b.process_used_bytes = Some(3 << 30);
        b.sm_clock_mhz = Some(1500);
        b.temperature_c = Some(83);
        b.clock_event_reasons = Some(vec!["sw-thermal".into()]);
        let mut c = a.clone();
        c.sm_clock_mhz = Some(1700);
        c.clock_event_reasons = None;
        let s = summarise(&[reading(0, a), reading(25, b), reading(50, c)]);
        assert_eq!(s.device_peak_bytes, Some(12 << 30));
        assert_eq!(s.process_peak_bytes, Some(3 << 30));
        assert_eq!(s.process_listed, Some(true));
        assert_eq!(s.sm_clock_median_mhz, Some(1700.0));
        assert_eq!(s.temperature_max_c, Some(83.0));
        assert_eq!(s.clock_events, vec!["sw-thermal".to_string()]);
        assert_eq!(s.clock_events_unreadable, 1);
    }

    #[derive(Debug)]
    struct CountingProbe(std::sync::atomic::AtomicU32);

    impl GpuProbe for CountingProbe {
        fn gpus(&self) -> Result<crate::probe::GpuList, crate::probe::GpuProbeError> {
            Err(crate::probe::GpuProbeError::NoDevices)
        }
        fn sample(&self, _: u32) -> Option<GpuSample> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Some(power(f64::from(n)))
        }
    }

    #[test]
    fn the_sampler_brackets_the_work_and_samples_during_it() {
        let probe = CountingProbe(Default::default());
        let (value, readings) = sample_while(&probe, 0, Duration::from_millis(5), || {
            thread::sleep(Duration::from_millis(120));
            42
        });
        assert_eq!(value, 42);
        // First and last readings plus roughly 120 / 5 in between; a loaded
        // machine may sample less often, never less than the two brackets.
        assert!(readings.len() >= 5, "{} readings", readings.len());
        assert!(readings.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(readings.last().expect("last").at >= Duration::from_millis(120));
        assert_eq!(readings[0].sample.power_watts, Some(0.0));
    }
}
