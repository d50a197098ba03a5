//! Property tests for the facility figures, Scope 2 and heat reuse: time
//! and energy are conserved, scores stay in range, and instruments never
//! make things worse than they are.

// A failed unwrap here is a failed test case, which proptest then shrinks.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigie_energy::{
    AverageFactor, Cooling, CoolingTechnology, CopModel, FacilityEnergy, GapRule, GramsPerKwh,
    GridFactors, HOUR_MS, HeatPump, HeatStudyInput, Instrument, InstrumentKind, Litres,
    MarketInputs, Microjoules, Offtaker, Origin, Period, PueCategory, Quality, Sample, Series,
    Status, SupplierFactor, Volume, Watts, heat_potential, pue, renewable_energy_factor, scope2,
};

const H: i64 = HOUR_MS;

fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![Just(Quality::Measured), Just(Quality::Estimated)]
}

/// Disjoint samples with gaps, in shuffled order: (gap before, length,
/// amount, quality) from a start at -1000 ms.
fn samples(max_amount: u64) -> impl Strategy<Value = Vec<Sample<Litres>>> {
    prop::collection::vec((0..500i64, 1..500i64, 0..=max_amount, quality()), 0..20)
        .prop_map(|parts| {
            let mut t = -1_000;
            parts
                .into_iter()
                .map(|(gap, len, amount, quality)| {
                    let s = Sample {
                        start_ms: t + gap,
                        end_ms: t + gap + len,
                        amount: Litres(amount),
                        quality,
                    };
                    t = s.end_ms;
                    s
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

proptest! {
    #[test]
    fn coverage_accounts_for_every_millisecond(
        samples in samples(1_000_000),
        from in -2_000i64..2_000,
        len in 1i64..12_000,
    ) {
        let series = Series::new(samples.clone()).unwrap();
        let period = Period::new(from, from + len).unwrap();
        let cov = series.coverage(period);
        prop_assert_eq!(cov.measured_ms + cov.estimated_ms + cov.missing_ms(), len as u64);
        let shares = cov.measured_share() + cov.estimated_share() + cov.missing_share();
        prop_assert!((shares - 1.0).abs() < 1e-12);
        // Brute force: every millisecond, is it in a sample and which kind?
        let (mut m, mut e) = (0u64, 0u64);
        for t in from..from + len {
            match samples.iter().find(|s| s.start_ms <= t && t < s.end_ms) {
                Some(s) if s.quality == Quality::Measured => m += 1,
                Some(_) => e += 1,
                None => {}
            }
        }
        prop_assert_eq!((cov.measured_ms, cov.estimated_ms), (m, e));
    }

    #[test]
    fn amounts_are_conserved_when_a_period_is_cut(
        samples in samples(1_000_000),
        cut in -1_000i64..12_000,
    ) {
        // Litres report in litres: sums below 2^53 are exact in f64.
        let series = Series::new(samples.clone()).unwrap();
        let (a, b) = (-2_000, 13_000);
        let found = |from, to| {
            let i = series.input("x", Period::new(from, to).unwrap(), GapRule::Strict);
            i.measured + i.estimated
        };
        let whole = found(a, b);
        prop_assert_eq!(whole, found(a, cut) + found(cut, b));
        let total: u64 = samples.iter().map(|s| s.amount.0).sum();
        prop_assert_eq!(whole, total as f64);
    }

    #[test]
    fn strict_figures_are_complete_exactly_when_inputs_are(
        dc in samples(1_000_000),
        it in samples(1_000_000),
        len in 1i64..12_000,
    ) {
        let to_uj = |v: Vec<Sample<Litres>>| {
            Series::new(v.into_iter().map(|s| Sample {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                amount: Microjoules(s.amount.0),
                quality: s.quality,
            }))
            .unwrap()
        };
        let (dc, it) = (to_uj(dc), to_uj(it));
        let period = Period::new(-1_000, -1_000 + len).unwrap();
        let f = pue(period, GapRule::Strict, PueCategory::ItInput, &dc, &it);
        let complete = dc.coverage(period).is_complete() && it.coverage(period).is_complete();
        prop_assert_eq!(f.value.is_some() || f.status == Status::Undefined, complete);
        prop_assert_eq!(f.status == Status::Incomplete, !complete);
        // Scaling changes nothing when nothing is missing.
        let g = pue(period, GapRule::ScaleToPeriod, PueCategory::ItInput, &dc, &it);
        if complete {
            prop_assert_eq!(f.value, g.value);
            prop_assert_eq!(f.status, g.status);
        }
    }
}

/// Per-hour consumption in kWh-ish µJ units, factors and instruments.
#[derive(Debug, Clone)]
struct Case {
    consumption: Vec<Option<u64>>,
    grid: Vec<f64>,
    hourly: Vec<Vec<u64>>,
    period_volumes: Vec<u64>,
    supplier: Option<(f64, f64)>,
    residual: Option<f64>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..24).prop_flat_map(|n| {
        (
            prop::collection::vec(prop::option::weighted(0.9, 0..=1_000_000_000u64), n),
            prop::collection::vec(0.0..900.0f64, n),
            prop::collection::vec(prop::collection::vec(0..=1_500_000_000u64, n), 0..3),
            prop::collection::vec(0..=30_000_000_000u64, 0..3),
            prop::option::of((0.0..900.0f64, 0.0..=1.0f64)),
            prop::option::of(0.0..900.0f64),
        )
            .prop_map(
                |(consumption, grid, hourly, period_volumes, supplier, residual)| Case {
                    consumption,
                    grid,
                    hourly,
                    period_volumes,
                    supplier,
                    residual,
                },
            )
    })
}

impl Case {
    fn hours(&self) -> usize {
        self.consumption.len()
    }

    fn series(&self) -> Series<Microjoules> {
        Series::new(self.consumption.iter().enumerate().filter_map(|(i, c)| {
            c.map(|c| Sample {
                start_ms: i as i64 * H,
                end_ms: (i as i64 + 1) * H,
                amount: Microjoules(c),
                quality: Quality::Measured,
            })
        }))
        .unwrap()
    }

    fn grid(&self) -> GridFactors {
        GridFactors::new(
            self.grid.iter().enumerate().map(|(i, &g)| {
                (
                    i as i64 * H,
                    AverageFactor {
                        intensity: GramsPerKwh(g),
                        estimated: false,
                    },
                )
            }),
            None,
        )
        .unwrap()
    }

    /// Market inputs; instruments are carbon-free at factor 0.
    fn market(&self, with_instruments: bool) -> MarketInputs {
        let mut instruments = Vec::new();
        if with_instruments {
            for (k, v) in self.hourly.iter().enumerate() {
                let map: BTreeMap<i64, Microjoules> = v
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (i as i64 * H, Microjoules(x)))
                    .collect();
                instruments.push(Instrument {
                    name: format!("hourly {k}"),
                    kind: InstrumentKind::Ppa,
                    origin: Origin::Renewable,
                    volume: Volume::Hourly(map),
                    factor: None,
                });
            }
            for (k, &v) in self.period_volumes.iter().enumerate() {
                instruments.push(Instrument {
                    name: format!("period {k}"),
                    kind: InstrumentKind::Certificate,
                    origin: Origin::CarbonFreeNonRenewable,
                    volume: Volume::Period(Microjoules(v).into()),
                    factor: None,
                });
            }
        }
        MarketInputs {
            instruments,
            supplier: self.supplier.map(|(factor, share)| SupplierFactor {
                factor: GramsPerKwh(factor),
                share,
            }),
            residual_mix: self.residual.map(GramsPerKwh),
        }
    }

    fn period(&self) -> Period {
        Period::new(0, self.hours() as i64 * H).unwrap()
    }
}

proptest! {
    #[test]
    fn scope2_conserves_energy_and_bounds_cfe(c in case()) {
        let r = scope2(c.period(), &c.series(), &c.grid(), &c.market(true)).unwrap();
        for h in &r.hours {
            // Every µJ of the hour is covered exactly once.
            let covered: u64 = h.tranches.iter().map(|t| t.energy.0).sum();
            prop_assert_eq!(covered, h.consumption().0);
            prop_assert!(h.cfe_matched <= h.consumption() && h.cfe_matched <= h.cfe_supply);
        }
        for u in &r.instruments {
            prop_assert!(u.applied <= u.offered);
            prop_assert_eq!(u.applied.0 + u.surplus.0, u.offered.0);
        }
        // A period volume is used in full up to the consumption it can cover.
        let score = r.cfe.score;
        prop_assert_eq!(score.is_some(), r.consumption() > Microjoules::ZERO.into());
        if let Some(s) = score {
            prop_assert!((0.0..=1.0).contains(&s), "CFE {s}");
        }
        prop_assert!(r.cfe.matched <= r.cfe.consumption);
        let total: u64 = c.consumption.iter().flatten().sum();
        prop_assert_eq!(r.consumption(), Microjoules(total).into());
    }

    #[test]
    fn without_market_data_market_equals_location(c in case()) {
        let r = scope2(c.period(), &c.series(), &c.grid(), &MarketInputs::default()).unwrap();
        prop_assert_eq!(r.market, r.location);
    }

    #[test]
    fn zero_carbon_instruments_never_raise_market_emissions(c in case()) {
        let with = scope2(c.period(), &c.series(), &c.grid(), &c.market(true)).unwrap();
        let without = scope2(c.period(), &c.series(), &c.grid(), &c.market(false)).unwrap();
        // Allow the supplier's rounding of 1 µJ per hour at up to 900 g/kWh.
        let slack = c.hours() as f64 * 900.0 / 3.6e12 + 1e-9 * without.market.0;
        prop_assert!(with.market.0 <= without.market.0 + slack,
            "{} > {}", with.market.0, without.market.0);
        // When every hour's consumption is covered, nothing is left to emit.
        let covered = with.instruments.iter().map(|u| u.applied.0).sum::<u128>()
            == with.consumption().0;
        if covered {
            prop_assert_eq!(with.market.0, 0.0);
            prop_assert!(with.market.0 <= with.location.0);
        }
    }

    #[test]
    fn ref_stays_within_zero_and_one(
        dc in prop::collection::vec(0..=1_000_000_000u64, 1..10),
        certs in 0..=20_000_000_000u64,
    ) {
        let n = dc.len() as i64;
        let e_dc = Series::new(dc.iter().enumerate().map(|(i, &v)| Sample {
            start_ms: i as i64 * H,
            end_ms: (i as i64 + 1) * H,
            amount: Microjoules(v),
            quality: Quality::Measured,
        })).unwrap();
        let go = Instrument {
            name: "GO".into(),
            kind: InstrumentKind::Certificate,
            origin: Origin::Renewable,
            volume: Volume::Period(Microjoules(certs).into()),
            factor: None,
        };
        let f = renewable_energy_factor(
            Period::new(0, n * H).unwrap(), GapRule::Strict, &e_dc, None, &[go]);
        if let Some(v) = f.value {
            prop_assert!((0.0..=1.0).contains(&v), "REF {v}");
        } else {
            prop_assert_eq!(f.status, Status::Undefined);
        }
    }
}

fn technology() -> impl Strategy<Value = CoolingTechnology> {
    prop_oneof![
        Just(CoolingTechnology::Air),
        Just(CoolingTechnology::WarmWater),
        Just(CoolingTechnology::DirectLiquid),
        Just(CoolingTechnology::Immersion),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn heat_study_balances(
        tech in technology(),
        load in prop::collection::vec(0.0..5e6f64, 24),
        demand in prop::option::of(prop::collection::vec(0.0..5e6f64, 24)),
        t_req in prop::option::of(20.0..95.0f64),
        heat_pump in prop::option::of((0.1..=1.0f64, any::<bool>())),
        pue_value in 1.0..2.5f64,
    ) {
        // A year made of one day's profile repeated.
        let year = |v: &Vec<f64>| -> Vec<Watts> { v.iter().cycle().take(8760).map(|&w| Watts(w)).collect() };
        let input = HeatStudyInput {
            it_load: year(&load),
            cooling: Cooling::new(tech),
            heat_pump: heat_pump.map(|(eta, inside)| HeatPump {
                cop: CopModel::CarnotFraction(eta),
                inside_boundary: inside,
            }),
            offtaker: t_req.map(|t| Offtaker {
                supply_temperature: vigie_energy::Celsius(t),
                demand: demand.as_ref().map(year),
            }),
            facility: FacilityEnergy::AssumedPue(pue_value),
            home_heat_demand: None,
        };
        let Ok(s) = heat_potential(&input) else {
            // Only a too-large lift for a poor heat pump may fail.
            prop_assert!(heat_pump.is_some());
            return Ok(());
        };
        let tol = 1e-9 * s.deliverable.0.max(1.0);
        // Energy balance: delivered = heat from the DC + heat-pump electricity.
        prop_assert!((s.deliverable.0 - s.from_data_centre.0 - s.heat_pump_electricity.0).abs() <= tol);
        // Never more heat from the DC than the cooling medium captures.
        let captured = s.e_it.0 * tech.default_capture_share();
        prop_assert!(s.from_data_centre.0 <= captured + tol);
        // Hourly profile sums to the annual figure; peak is its maximum.
        let sum: f64 = s.hourly.iter().map(|w| w.0).sum::<f64>() / 1e3;
        prop_assert!((sum - s.deliverable.0).abs() <= tol);
        prop_assert!(s.hourly.iter().all(|w| w.0 <= s.peak.0));
        // Delivery never exceeds the offtaker's demand.
        if let (Some(d), Some(_)) = (&demand, t_req) {
            for (h, w) in s.hourly.iter().enumerate() {
                prop_assert!(w.0 <= d[h % 24] * (1.0 + 1e-12));
            }
        }
        // ERF stays within [0, 1]: what leaves is at most what comes in.
        if let Some(erf) = s.projected_erf {
            prop_assert!((0.0..=1.0).contains(&erf), "ERF {erf}");
        }
    }
}
