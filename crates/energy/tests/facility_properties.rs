//! Property tests for the facility figures, Scope 2 and heat reuse: time
//! and energy are conserved, scores stay in range, and instruments never
//! make things worse than they are.

// A failed unwrap here is a failed test case, which proptest then shrinks.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigie_energy::{
    AverageFactor, Cooling, CoolingTechnology, CopModel, FacilityEnergy, GapRule, GramsPerKwh,
    GridFactors, HOUR_MS, HeatError, HeatPump, HeatStudyInput, Instrument, InstrumentKind, Litres,
    MarketInputs, Microjoules, Offtaker, Origin, Period, PueCategory, Quality, Sample, Series,
    Status, SupplierFactor, Volume, Watts, heat_potential, pue, renewable_energy_factor, scope2,
};

const H: i64 = HOUR_MS;

fn quality() -> impl Strategy<Value = Quality> {
    prop_oneof![Just(Quality::Measured), Just(Quality::Estimated)]
}

/// Disjoint samples from a start at -1000 ms, in shuffled order: (gap
/// before, length, amount, quality) each. Half the series are contiguous
/// (every gap 0), so samples that touch, and series that cover a whole
/// period, are common; the other half have gaps of up to 500 ms.
fn samples(max_amount: u64) -> impl Strategy<Value = Vec<Sample<Litres>>> {
    (any::<bool>(), 0usize..20)
        .prop_flat_map(move |(contiguous, n)| series(max_amount, contiguous, n))
}

/// `n` samples as [`samples`] makes them, with no gaps when `contiguous`.
fn series(
    max_amount: u64,
    contiguous: bool,
    n: usize,
) -> impl Strategy<Value = Vec<Sample<Litres>>> {
    let gap = if contiguous { 0..1i64 } else { 0..500i64 };
    prop::collection::vec((gap, 1..500i64, 0..=max_amount, quality()), n)
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

/// Two series and the length of a period from -1000 ms, in two halves of
/// equal weight. Complete by construction: both series contiguous from
/// -1000 ms and the period ending within the shorter. Anything: gaps,
/// empty series, periods past their end (incomplete all but by chance).
fn two_series_and_period()
-> impl Strategy<Value = (Vec<Sample<Litres>>, Vec<Sample<Litres>>, i64, bool)> {
    let covered = |v: &[Sample<Litres>]| v.iter().map(|s| s.end_ms - s.start_ms).sum::<i64>();
    prop_oneof![
        (1usize..20, 1usize..20)
            .prop_flat_map(|(n, m)| (series(1_000_000, true, n), series(1_000_000, true, m)))
            .prop_flat_map(move |(dc, it)| {
                let end = covered(&dc).min(covered(&it));
                (Just(dc), Just(it), 1..=end, Just(true))
            }),
        (
            samples(1_000_000),
            samples(1_000_000),
            1i64..12_000,
            Just(false)
        ),
    ]
}

// 256 cases each (proptest's default).
proptest! {
    /// Targets periods that start and end inside samples, gaps and
    /// touching samples of both qualities: the samples start at -1 s and
    /// span a few seconds (19 s at most), the periods -2 s to 12 s.
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

    /// Targets cuts inside a sample (apportioned on both sides), in gaps
    /// and outside the samples: the cut ranges over the samples' span.
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

    /// Targets both sides of the equivalence: half the cases are complete
    /// by construction (and checked to be), so `complete => value` and
    /// the scaling check run in every run, not only by chance.
    #[test]
    fn strict_figures_are_complete_exactly_when_inputs_are(
        (dc, it, len, built_complete) in two_series_and_period(),
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
        if built_complete {
            prop_assert!(complete, "a case built complete is not");
        }
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

/// Cases of 1 to 23 hours. One in ten has no consumption at all (every
/// hour missing or zero), where the CFE score has no value; the others miss
/// an hour in ten. Instruments offer up to 1.5 times an hour's maximum, so
/// hours with a surplus and hours short of cover both occur in most cases.
fn case() -> impl Strategy<Value = Case> {
    (1usize..24).prop_flat_map(|n| {
        let consumption = prop_oneof![
            9 => prop::collection::vec(prop::option::weighted(0.9, 0..=1_000_000_000u64), n),
            1 => prop::collection::vec(prop::option::of(Just(0u64)), n),
        ];
        (
            consumption,
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

// 256 cases each (proptest's default); see `case` for the regions.
proptest! {
    /// Targets hours with a surplus of instruments, hours short of cover,
    /// missing hours and periods without consumption (no CFE score).
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

    /// Targets every shape of `case`, including missing hours.
    #[test]
    fn without_market_data_market_equals_location(c in case()) {
        let r = scope2(c.period(), &c.series(), &c.grid(), &MarketInputs::default()).unwrap();
        prop_assert_eq!(r.market, r.location);
    }

    /// Targets partly and fully covered consumption: period volumes up to
    /// 30 times an hour's maximum cover short cases in full (most runs
    /// have over a hundred such cases).
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

    /// Targets REF below, at and (were it not bounded) above 1:
    /// certificates range from none to 20 000 J, over twice what 9 hours
    /// can consume; one case in eight consumes nothing, where REF is
    /// undefined.
    #[test]
    fn ref_stays_within_zero_and_one(
        dc in prop_oneof![
            7 => prop::collection::vec(0..=1_000_000_000u64, 1..10),
            1 => prop::collection::vec(Just(0u64), 1..10),
        ],
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

/// A heat pump: (Carnot fraction, inside the boundary).
type Pump = Option<(f64, bool)>;

/// Technology, offtaker supply temperature and heat pump, with whether
/// the case was built to fail. Three cases in four: anything (no
/// offtaker, no lift needed, a working lift, no heat pump). One in four:
/// a lift of 20 to 27 K above the technology's outlet for a pump at 1 to
/// 5 % of Carnot, whose COP is then at most 0.05 × 368 K / 20 K < 1: the
/// one error the study may return.
fn heat_case() -> impl Strategy<Value = (CoolingTechnology, Option<f64>, Pump, bool)> {
    prop_oneof![
        3 => (
            technology(),
            prop::option::of(20.0..95.0f64),
            prop::option::of((0.1..=1.0f64, any::<bool>())),
            Just(false),
        ),
        1 => technology().prop_flat_map(|tech| (
            Just(tech),
            (20.0..27.0f64).prop_map(move |lift| Some(tech.default_outlet().0 + lift)),
            (0.01..0.05f64, any::<bool>()).prop_map(Some),
            Just(true),
        )),
    ]
}

proptest! {
    // Each case is a year of hours: 64 cases, of which a quarter are built
    // to fail (P(none in a run) = 0.75^64 < 1e-7) and most of the rest
    // deliver heat, half of them through a heat pump.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Targets the energy balance of the study with and without a heat
    /// pump, demand and offtaker, and the one failure it allows.
    #[test]
    fn heat_study_balances(
        (tech, t_req, heat_pump, built_to_fail) in heat_case(),
        load in prop::collection::vec(0.0..5e6f64, 24),
        demand in prop::option::of(prop::collection::vec(0.0..5e6f64, 24)),
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
        let s = match heat_potential(&input) {
            Ok(s) => s,
            // Only a too-large lift for a poor heat pump may fail.
            Err(e) => {
                prop_assert!(
                    matches!(e, HeatError::CopTooLow(c) if c <= 1.0) && heat_pump.is_some(),
                    "{e:?} with heat pump {heat_pump:?}"
                );
                return Ok(());
            }
        };
        prop_assert!(!built_to_fail, "a heat pump with a COP under 1 was accepted");
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
