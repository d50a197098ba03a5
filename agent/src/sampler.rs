//! Turns counter reads into interval readings. The caller says what time it
//! is, so the logic is tested with made-up clocks and fake trees.

use crate::checkpoint::{Checkpoint, Unresumed};
use crate::rapl::{RaplError, Zone};
use vigie_energy::{
    CounterError, CounterStep, Judged, Microjoules, Watts, WrappingCounter, average_power,
};
use vigie_protocol::{Quality, Reading};

/// Peak power assumed per zone when checking that the sampling period
/// cannot miss a wrap (a large server package), and the bound that tells
/// a wrap from a reset: a counter that goes back by more than this power
/// could explain since the last read was reset (driver reload, firmware),
/// and its new value is a baseline.
const ASSUMED_PEAK: Watts = Watts(500.0);

struct Tracked {
    zone: Zone,
    counter: WrappingCounter,
    last_ms: Option<i64>,
}

/// Reads every zone, keeps its wrapping counter, and emits one reading per
/// zone per sample covering the time since that zone's last good read.
pub struct Sampler {
    tracked: Vec<Tracked>,
}

/// A zone that could not be read this time (it is retried next sample; the
/// next good read covers the gap, so no energy is lost).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// Reading the counter failed.
    #[error("{sensor}: {source}")]
    Read {
        /// Sensor.
        sensor: String,
        /// Cause.
        source: RaplError,
    },
    /// The counter went back by more than a wrap at the assumed peak
    /// power could explain: it was reset, and the new value is a baseline.
    #[error(
        "{sensor}: counter went back from {from} to {to} µJ in {dt_ms} ms, more than a wrap at {peak_w} W could explain: reset, new baseline (no energy counted for the interval)"
    )]
    Reset {
        /// Sensor.
        sensor: String,
        /// Previous reading.
        from: u64,
        /// This reading.
        to: u64,
        /// Time between them.
        dt_ms: i64,
        /// The plausible peak.
        peak_w: f64,
    },
    /// The counter went above its declared range: the baseline is reset.
    #[error("{sensor}: {source}; counter re-baselined")]
    Range {
        /// Sensor.
        sensor: String,
        /// Cause.
        source: CounterError,
    },
}

impl Sampler {
    /// Tracks `zones`; the first [`Sampler::sample`] sets the baselines.
    pub fn new(zones: Vec<Zone>) -> Result<Self, CounterError> {
        let tracked = zones
            .into_iter()
            .map(|zone| {
                Ok(Tracked {
                    counter: WrappingCounter::new(zone.max_range_uj)?,
                    zone,
                    last_ms: None,
                })
            })
            .collect::<Result<_, CounterError>>()?;
        Ok(Sampler { tracked })
    }

    /// Zones whose counter can wrap twice within `period_ms` at a plausible
    /// peak power, with the longest safe period for each.
    pub fn too_slow_for(&self, period_ms: u64) -> Vec<(String, u64)> {
        self.tracked
            .iter()
            .filter_map(|t| {
                let safe = t.counter.max_safe_period_ms(ASSUMED_PEAK)?;
                (period_ms > safe).then(|| (t.zone.sensor.clone(), safe))
            })
            .collect()
    }

    /// Where every counter with a baseline stands now.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        self.tracked
            .iter()
            .filter_map(|t| {
                Some(Checkpoint {
                    sensor: t.zone.sensor.clone(),
                    raw_uj: t.counter.last()?,
                    at_ms: t.last_ms?,
                })
            })
            .collect()
    }

    /// Restores baselines from checkpoints of an earlier run in the same
    /// boot (the counters kept counting meanwhile). Call before the first
    /// sample. A checkpoint is used only if the downtime cannot hide a wrap.
    pub fn resume(&mut self, checkpoints: &[Checkpoint], now_ms: i64) -> Vec<Unresumed> {
        let mut refused = Vec::new();
        for cp in checkpoints {
            let Some(t) = self.tracked.iter_mut().find(|t| t.zone.sensor == cp.sensor) else {
                continue;
            };
            let down_ms = now_ms - cp.at_ms;
            let safe_ms = t.counter.max_safe_period_ms(ASSUMED_PEAK).unwrap_or(0);
            if down_ms < 0 {
                refused.push(Unresumed::Invalid {
                    sensor: cp.sensor.clone(),
                });
                continue;
            }
            if down_ms.unsigned_abs() > safe_ms {
                refused.push(Unresumed::TooLong {
                    sensor: cp.sensor.clone(),
                    down_ms,
                    safe_ms,
                });
                continue;
            }
            match WrappingCounter::with_baseline(t.zone.max_range_uj, cp.raw_uj) {
                Ok(c) => {
                    t.counter = c;
                    t.last_ms = Some(cp.at_ms);
                }
                Err(_) => refused.push(Unresumed::Invalid {
                    sensor: cp.sensor.clone(),
                }),
            }
        }
        refused
    }

    /// The zones being read.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.tracked.iter().map(|t| &t.zone)
    }

    /// Reads every zone at `now_ms`, appending a reading per zone that has
    /// a baseline. Zones that fail are reported and retried next time.
    pub fn sample(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Vec<SampleError> {
        let mut errors = Vec::new();
        for t in &mut self.tracked {
            let value = match t.zone.read_energy_uj() {
                Ok(v) => v,
                Err(source) => {
                    errors.push(SampleError::Read {
                        sensor: t.zone.sensor.clone(),
                        source,
                    });
                    continue;
                }
            };
            let prev = t.counter.last();
            let dt_ms = t.last_ms.map_or(0, |l| now_ms - l);
            match t.counter.observe_judged(value, dt_ms, ASSUMED_PEAK) {
                Ok(None) => t.last_ms = Some(now_ms),
                Ok(Some(Judged::Reset)) => {
                    t.last_ms = Some(now_ms);
                    errors.push(SampleError::Reset {
                        sensor: t.zone.sensor.clone(),
                        from: prev.unwrap_or(0),
                        to: value,
                        dt_ms,
                        peak_w: ASSUMED_PEAK.0,
                    });
                }
                Ok(Some(Judged::Energy(step))) => {
                    let start_ms = t.last_ms.unwrap_or(now_ms);
                    t.last_ms = Some(now_ms);
                    out.push(reading(
                        &t.zone.sensor,
                        start_ms,
                        now_ms,
                        step,
                        t.counter.total(),
                    ));
                }
                Err(source) => {
                    // Out of range: a broken or reset counter. Start afresh
                    // rather than invent energy.
                    if let Ok(c) = WrappingCounter::new(t.zone.max_range_uj) {
                        t.counter = c;
                    }
                    t.last_ms = None;
                    errors.push(SampleError::Range {
                        sensor: t.zone.sensor.clone(),
                        source,
                    });
                }
            }
        }
        errors
    }
}

impl crate::source::Source for Sampler {
    fn kind(&self) -> &'static str {
        "rapl"
    }

    fn sensors(&self) -> Vec<vigie_protocol::SensorMeta> {
        self.zones()
            .map(|z| vigie_protocol::SensorMeta {
                name: z.sensor.clone(),
                kind: "rapl".into(),
                domain: z.domain.as_str().into(),
                source: z.path.display().to_string(),
                max_range_uj: Some(z.max_range_uj),
                method: None,
                topology: None,
                scope: None,
            })
            .collect()
    }

    fn poll(
        &mut self,
        now_ms: i64,
        sink: &mut crate::source::Sink<'_>,
    ) -> Vec<crate::source::PollError> {
        self.sample(now_ms, sink.readings)
            .into_iter()
            .map(|e| {
                let (sensor, message) = match &e {
                    SampleError::Read { sensor, source } => (sensor.clone(), source.to_string()),
                    SampleError::Range { sensor, .. } | SampleError::Reset { sensor, .. } => {
                        (sensor.clone(), e.to_string())
                    }
                };
                let reset = matches!(e, SampleError::Reset { .. });
                crate::source::PollError {
                    sensor,
                    message,
                    reset,
                }
            })
            .collect()
    }

    fn checkpoints(&self) -> Vec<Checkpoint> {
        Sampler::checkpoints(self)
    }

    fn resume(&mut self, checkpoints: &[Checkpoint], now_ms: i64) -> Vec<Unresumed> {
        Sampler::resume(self, checkpoints, now_ms)
    }

    fn too_slow_for(&self, period_ms: u64) -> Vec<(String, u64)> {
        Sampler::too_slow_for(self, period_ms)
    }
}

fn reading(
    sensor: &str,
    start_ms: i64,
    end_ms: i64,
    step: CounterStep,
    total: Microjoules,
) -> Reading {
    let energy = step.energy();
    Reading {
        sensor: sensor.to_owned(),
        start_ms,
        end_ms,
        energy_uj: energy.0,
        cumulative_uj: total.0,
        power_w: average_power(energy, end_ms - start_ms).map(|w| (w.0 * 1000.0).round() / 1000.0),
        quality: Quality::Measured,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rapl::discover;
    use vigie_testkit::FakePowercap;

    #[test]
    fn readings_follow_the_counters_through_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakePowercap::single_socket(dir.path(), 1_000_000, 999_000).unwrap();
        let mut s = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        let mut out = Vec::new();
        assert!(s.sample(1_000, &mut out).is_empty());
        assert!(out.is_empty(), "first sample only sets the baseline");
        p.advance("intel-rapl:0", 500).unwrap();
        s.sample(2_000, &mut out);
        p.advance("intel-rapl:0", 2_000).unwrap(); // wraps
        s.sample(3_000, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].start_ms, out[0].end_ms, out[0].energy_uj),
            (1_000, 2_000, 500)
        );
        assert_eq!(
            (out[1].start_ms, out[1].end_ms, out[1].energy_uj),
            (2_000, 3_000, 2_000)
        );
        assert_eq!(out[1].cumulative_uj, 2_500);
        assert_eq!(out[1].power_w, Some(0.002));
    }

    #[test]
    fn a_counter_reset_is_a_new_baseline_not_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        // The field finding: a 3.6e9 µJ range, 0 written to energy_uj at
        // 200 J (a driver reload) was +3.4 kJ in one second.
        let p = FakePowercap::single_socket(dir.path(), 3_600_000_000, 200_000_000).unwrap();
        let mut s = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        let mut out = Vec::new();
        s.sample(1_000, &mut out);
        p.set_energy("intel-rapl:0", 0).unwrap();
        let errors = s.sample(2_000, &mut out);
        assert!(out.is_empty(), "no phantom energy: {out:?}");
        assert!(
            matches!(
                &errors[..],
                [SampleError::Reset {
                    from: 200_000_000,
                    to: 0,
                    dt_ms: 1_000,
                    ..
                }]
            ),
            "{errors:?}"
        );
        assert!(errors[0].to_string().contains("reset, new baseline"));
        // Through the source interface the agent counts it as a reset.
        let mut other = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        let (mut r, mut g) = (Vec::new(), Vec::new());
        let mut sink = crate::source::Sink {
            readings: &mut r,
            gauges: &mut g,
        };
        p.set_energy("intel-rapl:0", 300_000_000).unwrap();
        assert!(crate::source::Source::poll(&mut other, 10_000, &mut sink).is_empty());
        p.set_energy("intel-rapl:0", 0).unwrap();
        let polled = crate::source::Source::poll(&mut other, 11_000, &mut sink);
        assert_eq!(polled.len(), 1);
        assert!(polled[0].reset, "{polled:?}");
        p.set_energy("intel-rapl:0", 0).unwrap();
        // Counting resumes from the reset value.
        p.set_energy("intel-rapl:0", 50_000_000).unwrap();
        assert!(s.sample(3_000, &mut out).is_empty());
        assert_eq!(
            (out[0].start_ms, out[0].end_ms, out[0].energy_uj),
            (2_000, 3_000, 50_000_000)
        );
        // A real wrap near the top, at a plausible power, is still energy.
        p.set_energy("intel-rapl:0", 3_500_000_000).unwrap();
        s.sample(4_000, &mut out);
        p.set_energy("intel-rapl:0", 99_999_999).unwrap();
        assert!(s.sample(5_000, &mut out).is_empty());
        assert_eq!(out.last().unwrap().energy_uj, 200_000_000);
    }

    #[test]
    fn a_resumed_checkpoint_counts_the_downtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakePowercap::single_socket(dir.path(), 262_143_328_850, 1_000).unwrap();
        let mut first = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        let mut out = Vec::new();
        first.sample(10_000, &mut out);
        p.advance("intel-rapl:0", 700).unwrap();
        first.sample(11_000, &mut out);
        let cps = first.checkpoints();
        assert_eq!(cps.len(), 1);
        assert_eq!((cps[0].raw_uj, cps[0].at_ms), (1_700, 11_000));
        drop(first); // crash; the counter keeps going
        p.advance("intel-rapl:0", 5_000).unwrap();

        let mut second = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        assert!(second.resume(&cps, 20_000).is_empty());
        let mut out = Vec::new();
        second.sample(20_000, &mut out);
        assert_eq!(out.len(), 1, "the first sample after a resume is a reading");
        assert_eq!(
            (out[0].start_ms, out[0].end_ms, out[0].energy_uj),
            (11_000, 20_000, 5_000)
        );
    }

    #[test]
    fn a_checkpoint_too_old_to_bridge_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 1 kJ range: at the assumed 500 W peak it can wrap in 2 s.
        FakePowercap::single_socket(dir.path(), 1_000_000_000, 0).unwrap();
        let mut s = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        let cp = Checkpoint {
            sensor: s.zones().next().unwrap().sensor.clone(),
            raw_uj: 0,
            at_ms: 0,
        };
        let refused = s.resume(std::slice::from_ref(&cp), 60_000);
        assert!(
            matches!(refused[0], Unresumed::TooLong { safe_ms: 2_000, .. }),
            "{refused:?}"
        );
        let clock_back = s.resume(std::slice::from_ref(&cp), -1);
        assert!(matches!(clock_back[0], Unresumed::Invalid { .. }));
        let mut out = Vec::new();
        s.sample(60_000, &mut out);
        assert!(
            out.is_empty(),
            "no checkpoint: the first sample is a baseline"
        );
    }

    #[test]
    fn a_failed_read_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakePowercap::single_socket(dir.path(), 1_000_000, 0).unwrap();
        let mut s = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        let mut out = Vec::new();
        s.sample(0, &mut out);
        p.advance("intel-rapl:0", 100).unwrap();
        let energy = dir.path().join("intel-rapl:0/energy_uj");
        std::fs::write(&energy, "garbage").unwrap();
        assert_eq!(s.sample(1_000, &mut out).len(), 1);
        p.set_energy("intel-rapl:0", 300).unwrap();
        s.sample(2_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].start_ms, out[0].end_ms, out[0].energy_uj),
            (0, 2_000, 300)
        );
    }

    #[test]
    fn warns_when_period_too_long_for_range() {
        let dir = tempfile::tempdir().unwrap();
        // 1 J range at 500 W wraps every 2 ms.
        FakePowercap::single_socket(dir.path(), 1_000_000, 0).unwrap();
        let s = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        assert_eq!(
            s.too_slow_for(1_000),
            vec![("rapl:package-0".to_owned(), 2)]
        );
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::single_socket(dir.path(), 262_143_328_850, 0).unwrap();
        let s = Sampler::new(discover(dir.path()).unwrap()).unwrap();
        assert!(s.too_slow_for(1_000).is_empty());
    }
}
