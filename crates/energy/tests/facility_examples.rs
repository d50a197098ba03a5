//! Worked examples for the facility figures, Scope 2 and heat reuse, with
//! the arithmetic done by hand in the comments.

use std::collections::BTreeMap;

use vigie_energy::{
    AverageFactor, Celsius, Cooling, CoolingTechnology, CopModel, FacilityEnergy, GapRule,
    GramsCo2e, GramsPerKwh, GridFactorSource, GridFactors, HOUR_MS, HeatError, HeatMeterSample,
    HeatPump, HeatStudyInput, Indicator, Instrument, InstrumentKind, KilowattHours, Litres,
    MarketInputs, MarketSource, Microjoules, Offtaker, Origin, Period, PueCategory, Quality,
    Sample, Scope2Basis, Scope2Error, Series, Status, SupplierFactor, Volume, Watts,
    carbon_usage_effectiveness, cooling_efficiency_ratio, energy_reuse_factor, heat_potential,
    measured_heat, partial_pue, pue, renewable_energy_factor, scope2, water_usage_effectiveness,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const H: i64 = HOUR_MS;
/// Microjoules per kWh.
const KWH: u64 = 3_600_000_000_000;

fn kwh(x: u64) -> Microjoules {
    Microjoules(x * KWH)
}

/// Hourly samples from hour 0, one value in kWh per hour, all `quality`.
fn hourly(
    values: &[u64],
    quality: Quality,
) -> Result<Series<Microjoules>, vigie_energy::SeriesError> {
    Series::new(values.iter().enumerate().map(|(i, &v)| Sample {
        start_ms: i as i64 * H,
        end_ms: (i as i64 + 1) * H,
        amount: kwh(v),
        quality,
    }))
}

fn hours(n: i64) -> Result<Period, vigie_energy::SeriesError> {
    Period::new(0, n * H)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn value(f: &vigie_energy::Figure) -> f64 {
    f.value.unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------
// Facility indicators
// ---------------------------------------------------------------------

#[test]
fn pue_worked_example() -> TestResult {
    // E_DC = 150 + 150 + 160 + 140 = 600 kWh; E_IT = 4 × 100 = 400 kWh.
    // PUE = 600 / 400 = 1.5, IT metered at the PDU output (category 2).
    let e_dc = hourly(&[150, 150, 160, 140], Quality::Measured)?;
    let e_it = hourly(&[100, 100, 100, 100], Quality::Measured)?;
    let f = pue(
        hours(4)?,
        GapRule::Strict,
        PueCategory::PduOutput,
        &e_dc,
        &e_it,
    );
    assert_eq!(f.value, Some(1.5));
    assert_eq!(f.status, Status::Measured);
    assert!(f.is_complete());
    assert_eq!(
        f.indicator,
        Indicator::Pue {
            category: PueCategory::PduOutput
        }
    );
    assert_eq!(PueCategory::PduOutput.number(), 2);
    assert_eq!(f.input("E_DC").and_then(|i| i.total), Some(600.0));
    assert_eq!(f.input("E_IT").and_then(|i| i.total), Some(400.0));
    assert!(f.notes.is_empty());
    Ok(())
}

#[test]
fn pue_below_one_is_flagged() -> TestResult {
    // 90 / 100 = 0.9: returned, with a note about meter boundaries.
    let f = pue(
        hours(1)?,
        GapRule::Strict,
        PueCategory::ItInput,
        &hourly(&[90], Quality::Measured)?,
        &hourly(&[100], Quality::Measured)?,
    );
    assert_eq!(f.value, Some(0.9));
    assert_eq!(f.notes.len(), 1);
    Ok(())
}

#[test]
fn partial_pue_worked_example() -> TestResult {
    // Room A: 130 kWh in total (IT + its cooling), 100 kWh IT. pPUE = 1.3.
    let f = partial_pue(
        hours(1)?,
        GapRule::Strict,
        PueCategory::ItInput,
        "room A",
        &hourly(&[130], Quality::Measured)?,
        &hourly(&[100], Quality::Measured)?,
    );
    assert_eq!(f.value, Some(1.3));
    assert_eq!(f.indicator.symbol(), "pPUE");
    Ok(())
}

fn renewable(name: &str, kind: InstrumentKind, volume: Volume) -> Instrument {
    Instrument {
        name: name.into(),
        kind,
        origin: Origin::Renewable,
        volume,
        factor: None,
    }
}

#[test]
fn ref_worked_example() -> TestResult {
    // E_DC = 500 + 500 = 1000 kWh. Renewable: on-site PV 20 + 30 = 50 kWh,
    // guarantees of origin 300 kWh for the period, a PPA delivering 100 kWh
    // in each hour = 200 kWh. A nuclear certificate (carbon-free, not
    // renewable) and an on-site instrument (counted through the series)
    // are left out. REF = (50 + 300 + 200) / 1000 = 0.55.
    let e_dc = hourly(&[500, 500], Quality::Measured)?;
    let pv = hourly(&[20, 30], Quality::Measured)?;
    let instruments = vec![
        renewable(
            "GO wind",
            InstrumentKind::Certificate,
            Volume::Period(kwh(300).into()),
        ),
        renewable(
            "PPA solar",
            InstrumentKind::Ppa,
            Volume::Hourly(BTreeMap::from([
                (0, kwh(100)),
                (H, kwh(100)),
                (5 * H, kwh(999)),
            ])),
        ),
        Instrument {
            origin: Origin::CarbonFreeNonRenewable,
            ..renewable(
                "GO nuclear",
                InstrumentKind::Certificate,
                Volume::Period(kwh(100).into()),
            )
        },
        renewable("PV", InstrumentKind::OnSite, Volume::Period(kwh(50).into())),
    ];
    let f = renewable_energy_factor(hours(2)?, GapRule::Strict, &e_dc, Some(&pv), &instruments);
    assert!(close(value(&f), 0.55));
    assert_eq!(f.status, Status::Measured);
    assert_eq!(
        f.input("E_renewable,on-site").and_then(|i| i.total),
        Some(50.0)
    );
    assert_eq!(
        f.input("E_renewable,certificates").and_then(|i| i.total),
        Some(300.0)
    );
    // The hour at 5 h is outside the period.
    assert_eq!(
        f.input("E_renewable,PPA").and_then(|i| i.total),
        Some(200.0)
    );

    // 2000 kWh of certificates for 1000 kWh used: capped at 1, with a note.
    let many = vec![renewable(
        "GO",
        InstrumentKind::Certificate,
        Volume::Period(kwh(2000).into()),
    )];
    let f = renewable_energy_factor(hours(2)?, GapRule::Strict, &e_dc, None, &many);
    assert_eq!(f.value, Some(1.0));
    assert_eq!(f.notes.len(), 1);
    Ok(())
}

#[test]
fn erf_worked_example() -> TestResult {
    // Heat handed over 120 kWh; E_DC 600 kWh. ERF = 120 / 600 = 0.2.
    let f = energy_reuse_factor(
        hours(2)?,
        GapRule::Strict,
        &hourly(&[50, 70], Quality::Measured)?,
        &hourly(&[300, 300], Quality::Measured)?,
    );
    assert!(close(value(&f), 0.2));
    Ok(())
}

#[test]
fn cer_worked_example() -> TestResult {
    // Heat removed 500 kWh_th; cooling electricity 50 kWh. CER = 10.
    let f = cooling_efficiency_ratio(
        hours(1)?,
        GapRule::Strict,
        &hourly(&[500], Quality::Measured)?,
        &hourly(&[50], Quality::Measured)?,
    );
    assert_eq!(f.value, Some(10.0));
    Ok(())
}

fn grid(values: &[f64]) -> Result<GridFactors, Scope2Error> {
    GridFactors::new(
        values.iter().enumerate().map(|(i, &g)| {
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
}

#[test]
fn cue_of_measured_energy_is_measured_without_round_off() -> TestResult {
    // 1 234 567 891 uJ at 45.3 g/kWh: splitting the grams by a float
    // share, g * T / T, leaves 1.7e-18 g "estimated" (found in the demo:
    // CUE estimated beside a measured location-based figure).
    let amount = Microjoules(1_234_567_891);
    let sample = |quality| Sample {
        start_ms: 0,
        end_ms: H,
        amount,
        quality,
    };
    let e_dc = Series::new([sample(Quality::Measured)])?;
    let report = scope2(hours(1)?, &e_dc, &grid(&[45.3])?, &MarketInputs::default())?;
    let it = hourly(&[1], Quality::Measured)?;
    let f = carbon_usage_effectiveness(GapRule::Strict, &report, Scope2Basis::LocationBased, &it);
    assert_eq!(f.status, Status::Measured, "{f:?}");
    // All estimated energy: all grams estimated, none measured.
    let e_dc = Series::new([sample(Quality::Estimated)])?;
    let report = scope2(hours(1)?, &e_dc, &grid(&[45.3])?, &MarketInputs::default())?;
    let f = carbon_usage_effectiveness(GapRule::Strict, &report, Scope2Basis::LocationBased, &it);
    assert_eq!(f.status, Status::Estimated, "{f:?}");
    Ok(())
}

#[test]
fn cue_and_location_based_worked_example() -> TestResult {
    // E_DC 300 kWh at 200 g/kWh then 300 kWh at 100 g/kWh:
    // location-based = 60 000 + 30 000 = 90 000 g = 90 kg.
    // E_IT = 100 + 100 = 200 kWh. CUE = 90 / 200 = 0.45 kgCO2e/kWh.
    let e_dc = hourly(&[300, 300], Quality::Measured)?;
    let report = scope2(
        hours(2)?,
        &e_dc,
        &grid(&[200.0, 100.0])?,
        &MarketInputs::default(),
    )?;
    assert!(close(report.location.0, 90_000.0));
    assert!(close(report.hours[0].location.0, 60_000.0));
    assert_eq!(
        report.hours[0].grid.map(|g| g.1),
        Some(GridFactorSource::Hourly)
    );
    let f = carbon_usage_effectiveness(
        GapRule::Strict,
        &report,
        Scope2Basis::LocationBased,
        &hourly(&[100, 100], Quality::Measured)?,
    );
    assert!(close(value(&f), 0.45));
    assert_eq!(f.status, Status::Measured);
    // No residual mix given: the market basis fell back to the grid average.
    let f = carbon_usage_effectiveness(
        GapRule::Strict,
        &report,
        Scope2Basis::MarketBased,
        &hourly(&[100, 100], Quality::Measured)?,
    );
    assert!(close(value(&f), 0.45));
    assert_eq!(f.notes.len(), 1);
    Ok(())
}

#[test]
fn cue_with_fallback_factor_is_estimated() -> TestResult {
    // Hour 1 has no hourly factor: the fallback 150 g/kWh is used and
    // flagged. 100 × 250 + 100 × 150 = 40 000 g = 40 kg over 100 kWh IT: 0.4.
    let factors = GridFactors::new(
        [(
            0,
            AverageFactor {
                intensity: GramsPerKwh(250.0),
                estimated: false,
            },
        )],
        Some(AverageFactor {
            intensity: GramsPerKwh(150.0),
            estimated: false,
        }),
    )?;
    let report = scope2(
        hours(2)?,
        &hourly(&[100, 100], Quality::Measured)?,
        &factors,
        &MarketInputs::default(),
    )?;
    assert_eq!(
        report.hours[1].grid.map(|g| g.1),
        Some(GridFactorSource::Fallback)
    );
    let f = carbon_usage_effectiveness(
        GapRule::Strict,
        &report,
        Scope2Basis::LocationBased,
        &hourly(&[50, 50], Quality::Measured)?,
    );
    assert!(close(value(&f), 0.4));
    assert_eq!(f.status, Status::Estimated);
    Ok(())
}

#[test]
fn wue_worked_example() -> TestResult {
    // 900 L of water over 600 kWh of IT energy: WUE = 1.5 L/kWh.
    let water = Series::new([Sample {
        start_ms: 0,
        end_ms: 2 * H,
        amount: Litres(900),
        quality: Quality::Measured,
    }])?;
    let f = water_usage_effectiveness(
        hours(2)?,
        GapRule::Strict,
        &water,
        &hourly(&[300, 300], Quality::Measured)?,
    );
    assert_eq!(f.value, Some(1.5));
    assert_eq!(f.indicator.unit(), "L/kWh");
    assert_eq!(f.input("water").map(|i| i.unit), Some("L"));
    Ok(())
}

// ---------------------------------------------------------------------
// Coverage and gap rules
// ---------------------------------------------------------------------

#[test]
fn gaps_make_strict_figures_incomplete() -> TestResult {
    // Ten hours. E_DC: hours 0-5 measured (6 h), 6-7 estimated (2 h), 8-9
    // missing (2 h), 150 kWh each hour it has. E_IT: 100 kWh every hour.
    let mut samples: Vec<Sample<Microjoules>> = Vec::new();
    for i in 0..8 {
        samples.push(Sample {
            start_ms: i * H,
            end_ms: (i + 1) * H,
            amount: kwh(150),
            quality: if i < 6 {
                Quality::Measured
            } else {
                Quality::Estimated
            },
        });
    }
    let e_dc = Series::new(samples)?;
    let e_it = hourly(&[100; 10], Quality::Measured)?;
    let period = hours(10)?;

    // Shares: 6/10 measured, 2/10 estimated, 2/10 missing.
    let cov = e_dc.coverage(period);
    assert_eq!(cov.measured_share(), 0.6);
    assert_eq!(cov.estimated_share(), 0.2);
    assert_eq!(cov.missing_share(), 0.2);

    // Strict: no value, and it says so.
    let strict = pue(period, GapRule::Strict, PueCategory::ItInput, &e_dc, &e_it);
    assert_eq!(strict.value, None);
    assert_eq!(strict.status, Status::Incomplete);
    assert!(!strict.is_complete());
    let input = strict.input("E_DC").ok_or("no E_DC input")?;
    assert_eq!(input.total, None);
    // What was found is still reported: 6 × 150 measured, 2 × 150 estimated.
    assert_eq!((input.measured, input.estimated), (900.0, 300.0));
    assert_eq!(input.coverage, Some(cov));

    // ScaleToPeriod: 1200 kWh over 8 h, 2 h missing: 1200 × 2/8 = 300 kWh
    // filled, E_DC = 1500 kWh; PUE = 1500 / 1000 = 1.5, estimated.
    let scaled = pue(
        period,
        GapRule::ScaleToPeriod,
        PueCategory::ItInput,
        &e_dc,
        &e_it,
    );
    assert_eq!(scaled.value, Some(1.5));
    assert_eq!(scaled.status, Status::Estimated);
    assert_eq!(scaled.input("E_DC").map(|i| i.filled), Some(300.0));

    // Nothing at all cannot be scaled.
    let none = pue(
        period,
        GapRule::ScaleToPeriod,
        PueCategory::ItInput,
        &Series::empty(),
        &e_it,
    );
    assert_eq!((none.value, none.status), (None, Status::Incomplete));
    Ok(())
}

#[test]
fn estimated_but_complete_and_zero_denominator() -> TestResult {
    // Complete but estimated: 120 / 100 = 1.2, Estimated.
    let f = pue(
        hours(1)?,
        GapRule::Strict,
        PueCategory::ItInput,
        &hourly(&[120], Quality::Estimated)?,
        &hourly(&[100], Quality::Measured)?,
    );
    assert_eq!((f.value, f.status), (Some(1.2), Status::Estimated));
    // E_IT = 0: no PUE, Undefined.
    let f = pue(
        hours(1)?,
        GapRule::Strict,
        PueCategory::ItInput,
        &hourly(&[120], Quality::Measured)?,
        &hourly(&[0], Quality::Measured)?,
    );
    assert_eq!((f.value, f.status), (None, Status::Undefined));
    Ok(())
}

// ---------------------------------------------------------------------
// Scope 2, market-based, and CFE
// ---------------------------------------------------------------------

/// Three hours of 100 kWh at 300, 200 and 100 g/kWh, covered by:
/// - a solar PPA with hourly volumes 60, 0, 150 kWh;
/// - guarantees of origin, 70 kWh for the period;
/// - a supplier factor of 250 g/kWh for half of what remains;
/// - a residual mix of 400 g/kWh (when `residual`).
fn market_case(residual: bool) -> Result<vigie_energy::Scope2Report, Box<dyn std::error::Error>> {
    let market = MarketInputs {
        instruments: vec![
            renewable(
                "GO hydro",
                InstrumentKind::Certificate,
                Volume::Period(kwh(70).into()),
            ),
            renewable(
                "PPA solar",
                InstrumentKind::Ppa,
                Volume::Hourly(BTreeMap::from([(0, kwh(60)), (2 * H, kwh(150))])),
            ),
        ],
        supplier: Some(SupplierFactor {
            factor: GramsPerKwh(250.0),
            share: 0.5,
        }),
        residual_mix: residual.then_some(GramsPerKwh(400.0)),
    };
    Ok(scope2(
        hours(3)?,
        &hourly(&[100, 100, 100], Quality::Measured)?,
        &grid(&[300.0, 200.0, 100.0])?,
        &market,
    )?)
}

fn tranche(
    r: &vigie_energy::Scope2Report,
    hour: usize,
    source: MarketSource,
) -> Option<(u64, f64)> {
    r.hours[hour]
        .tranches
        .iter()
        .find(|t| t.source == source)
        .map(|t| (t.energy.0 / KWH, t.factor.0))
}

#[test]
fn market_based_hierarchy_worked_example() -> TestResult {
    let r = market_case(true)?;
    // Location: 100 × 300 + 100 × 200 + 100 × 100 = 60 000 g.
    assert!(close(r.location.0, 60_000.0));

    // 1a. Hourly PPA (listed second, applied first): h0 60 of 100; h1
    //     nothing; h2 100 of 150 (50 surplus, it cannot move hours).
    //     Remaining: 40, 100, 0.
    let ppa = MarketSource::Instrument(1);
    assert_eq!(tranche(&r, 0, ppa), Some((60, 0.0)));
    assert_eq!(tranche(&r, 1, ppa), None);
    assert_eq!(tranche(&r, 2, ppa), Some((100, 0.0)));
    // 1b. GO 70 kWh pro rata to the remaining 40 + 100 = 140:
    //     h0 70·40/140 = 20, h1 70·140/140 − 20 = 50. Remaining: 20, 50, 0.
    let go = MarketSource::Instrument(0);
    assert_eq!(tranche(&r, 0, go), Some((20, 0.0)));
    assert_eq!(tranche(&r, 1, go), Some((50, 0.0)));
    // 2. Supplier, half of what remains: h0 10, h1 25. Remaining: 10, 25, 0.
    assert_eq!(tranche(&r, 0, MarketSource::Supplier), Some((10, 250.0)));
    assert_eq!(tranche(&r, 1, MarketSource::Supplier), Some((25, 250.0)));
    // 3. Residual mix for the rest: h0 10, h1 25.
    assert_eq!(tranche(&r, 0, MarketSource::ResidualMix), Some((10, 400.0)));
    assert_eq!(tranche(&r, 1, MarketSource::ResidualMix), Some((25, 400.0)));
    assert_eq!(tranche(&r, 2, MarketSource::ResidualMix), None);
    // Market: h0 10 × 250 + 10 × 400 = 6 500 g; h1 25 × 250 + 25 × 400 =
    // 16 250 g; h2 0 g. Total 22 750 g.
    assert!(close(r.hours[0].market.0, 6_500.0));
    assert!(close(r.hours[1].market.0, 16_250.0));
    assert_eq!(r.hours[2].market, GramsCo2e(0.0));
    assert!(close(r.market.0, 22_750.0));

    // Instrument use: GO 70 offered, 70 applied; PPA 210 offered, 160
    // applied, 50 surplus.
    assert_eq!(r.instruments[0].applied, kwh(70).into());
    assert_eq!(r.instruments[0].surplus, Microjoules::ZERO.into());
    assert_eq!(r.instruments[1].offered, kwh(210).into());
    assert_eq!(r.instruments[1].applied, kwh(160).into());
    assert_eq!(r.instruments[1].surplus, kwh(50).into());
    Ok(())
}

#[test]
fn grid_average_is_the_last_resort() -> TestResult {
    // Same case without a residual mix: the rest goes at the hour's grid
    // average, flagged. h0 10 × 250 + 10 × 300 = 5 500 g; h1 25 × 250 +
    // 25 × 200 = 11 250 g. Total 16 750 g.
    let r = market_case(false)?;
    assert_eq!(tranche(&r, 0, MarketSource::GridAverage), Some((10, 300.0)));
    assert_eq!(tranche(&r, 1, MarketSource::GridAverage), Some((25, 200.0)));
    assert!(close(r.market.0, 16_750.0));
    Ok(())
}

#[test]
fn cfe_score_worked_example() -> TestResult {
    // Hourly carbon-free supply: only the PPA's hourly volumes (the GO's
    // period volume has no hour). Matched: min(100, 60) + min(100, 0) +
    // min(100, 150) = 60 + 0 + 100 = 160 kWh. CFE = 160 / 300 = 0.5333...
    let r = market_case(true)?;
    assert_eq!(r.cfe.matched, kwh(160).into());
    assert_eq!(r.cfe.supply, kwh(210).into());
    assert_eq!(r.cfe.consumption, kwh(300).into());
    assert!(close(r.cfe.score.unwrap_or(f64::NAN), 160.0 / 300.0));
    assert_eq!(r.hours[2].cfe_matched, kwh(100));
    Ok(())
}

#[test]
fn fossil_instruments_need_a_factor() -> TestResult {
    // A gas PPA of 50 kWh at 350 g/kWh, rest at a 400 g/kWh residual mix:
    // 50 × 350 + 50 × 400 = 37 500 g.
    let mut gas = renewable(
        "PPA gas",
        InstrumentKind::Ppa,
        Volume::Period(kwh(50).into()),
    );
    gas.origin = Origin::Other;
    let consumption = hourly(&[100], Quality::Measured)?;
    let mut market = MarketInputs {
        instruments: vec![gas],
        supplier: None,
        residual_mix: Some(GramsPerKwh(400.0)),
    };
    assert_eq!(
        scope2(hours(1)?, &consumption, &grid(&[300.0])?, &market),
        Err(Scope2Error::MissingFactor("PPA gas".into()))
    );
    market.instruments[0].factor = Some(GramsPerKwh(350.0));
    let r = scope2(hours(1)?, &consumption, &grid(&[300.0])?, &market)?;
    assert!(close(r.market.0, 37_500.0));
    // Not carbon-free: no CFE supply.
    assert_eq!(r.cfe.score, Some(0.0));
    Ok(())
}

#[test]
fn scope2_input_errors() -> TestResult {
    let c = hourly(&[100], Quality::Measured)?;
    let m = MarketInputs::default();
    assert!(matches!(
        scope2(Period::new(0, H + 1)?, &c, &grid(&[1.0])?, &m),
        Err(Scope2Error::PeriodNotHourAligned { .. })
    ));
    assert_eq!(
        scope2(hours(1)?, &c, &GridFactors::default(), &m),
        Err(Scope2Error::NoGridFactor { hour_ms: 0 })
    );
    assert!(matches!(grid(&[-1.0]), Err(Scope2Error::BadFactor { .. })));
    Ok(())
}

#[test]
fn scope2_reports_gaps_without_filling_them() -> TestResult {
    // Hour 1 missing: emissions cover hours 0 and 2 only, and the report
    // says a third of the period is missing.
    let c = Series::new([0, 2].map(|i| Sample {
        start_ms: i * H,
        end_ms: (i + 1) * H,
        amount: kwh(10),
        quality: Quality::Measured,
    }))?;
    let r = scope2(hours(3)?, &c, &grid(&[100.0; 3])?, &MarketInputs::default())?;
    assert!(!r.is_complete());
    assert!(close(r.coverage.missing_share(), 1.0 / 3.0));
    assert!(close(r.location.0, 2_000.0));
    assert_eq!(r.hours[1].coverage.missing_ms(), H as u64);
    Ok(())
}

// ---------------------------------------------------------------------
// Heat
// ---------------------------------------------------------------------

#[test]
fn measured_heat_worked_example() -> TestResult {
    // Delivered 100 kWh at 60/40 °C, then 300 kWh at 70/50 °C.
    // Mean supply (100·60 + 300·70)/400 = 27 000/400 = 67.5 °C;
    // mean return (100·40 + 300·50)/400 = 19 000/400 = 47.5 °C.
    // Rejected 600 kWh: recovered share 400/1000 = 0.4.
    // E_DC 2000 kWh: ERF = 400/2000 = 0.2.
    let delivered = [
        HeatMeterSample {
            start_ms: 0,
            end_ms: H,
            heat: kwh(100),
            supply: Celsius(60.0),
            return_temperature: Celsius(40.0),
            quality: Quality::Measured,
        },
        HeatMeterSample {
            start_ms: H,
            end_ms: 2 * H,
            heat: kwh(300),
            supply: Celsius(70.0),
            return_temperature: Celsius(50.0),
            quality: Quality::Measured,
        },
    ];
    let m = measured_heat(
        hours(2)?,
        GapRule::Strict,
        &delivered,
        &hourly(&[300, 300], Quality::Measured)?,
        Some(&hourly(&[10, 10], Quality::Measured)?),
        &hourly(&[1000, 1000], Quality::Measured)?,
    )?;
    assert_eq!(m.mean_supply, Some(Celsius(67.5)));
    assert_eq!(m.mean_return, Some(Celsius(47.5)));
    assert_eq!(m.recovered_share, Some(0.4));
    assert_eq!(m.erf.value, Some(0.2));
    assert_eq!(m.delivered.total, Some(400.0));
    // Heat-pump electricity is reported beside, never netted.
    assert_eq!(m.heat_pump_electricity.and_then(|i| i.total), Some(20.0));
    Ok(())
}

fn flat(kw: f64) -> Vec<Watts> {
    vec![Watts(kw * 1e3); 8760]
}

fn study(cooling: Cooling) -> HeatStudyInput {
    HeatStudyInput {
        it_load: flat(1000.0),
        cooling,
        heat_pump: None,
        offtaker: None,
        facility: FacilityEnergy::AssumedPue(1.25),
        home_heat_demand: None,
    }
}

#[test]
fn heat_potential_without_heat_pump() -> TestResult {
    // 1000 kW of IT all year, direct liquid cooling with its defaults:
    // capture 0.75, outlet 67.5 °C. Source heat 750 kW every hour.
    // Deliverable 750 kW × 8760 h = 6 570 000 kWh = 6 570 MWh; peak 750 kW.
    // E_IT = 8 760 000 kWh; PUE 1.25: E_DC = 10 950 000 kWh.
    // ERF = 6 570 000 / 10 950 000 = 0.6.
    // Homes: 6 570 000 / 10 000 = 657.
    let s = heat_potential(&study(Cooling::new(CoolingTechnology::DirectLiquid)))?;
    assert!(close(s.deliverable.0, 6_570_000.0));
    assert!(close(s.deliverable.as_mwh(), 6_570.0));
    assert!(close(s.peak.0, 750_000.0));
    assert_eq!(s.hourly.len(), 8760);
    assert_eq!(s.supply_temperature, Some(Celsius(67.5)));
    assert_eq!(s.heat_pump_electricity, KilowattHours(0.0));
    assert!(close(s.e_dc.0, 10_950_000.0));
    assert!(close(s.projected_erf.unwrap_or(f64::NAN), 0.6));
    assert!(close(s.homes_heated, 657.0));
    assert!(s.summary.contains("6570 MWh"), "{}", s.summary);
    assert!(s.summary.contains("657 homes"), "{}", s.summary);
    for name in [
        "profile length",
        "IT electricity ending as heat",
        "heat capture share (direct liquid)",
        "outlet temperature (direct liquid)",
        "offtaker demand",
        "PUE",
        "home heat demand",
    ] {
        assert!(
            s.assumptions.iter().any(|a| a.name == name),
            "missing assumption {name}"
        );
    }
    assert!(s.assumptions.iter().all(|a| !a.basis.is_empty()));
    Ok(())
}

#[test]
fn heat_potential_with_fixed_cop_heat_pump() -> TestResult {
    // Air cooling defaults: capture 0.9, outlet 30 °C. Offtaker needs 70 °C.
    // Heat pump with COP 4, outside the boundary. Source 900 kW:
    // Q_out = 900 × 4/3 = 1200 kW; W = 1200/4 = 300 kW.
    // Year: delivered 1200 × 8760 = 10 512 000 kWh; heat-pump electricity
    // 300 × 8760 = 2 628 000 kWh; from the DC 900 × 8760 = 7 884 000 kWh.
    // PUE 1.3: E_DC = 11 388 000 kWh (heat pump outside: not added).
    // ERF = 7 884 000 / 11 388 000 = 0.9/1.3 = 0.6923...
    // Homes: 10 512 000 / 10 000 = 1051.2.
    let mut input = study(Cooling::new(CoolingTechnology::Air));
    input.facility = FacilityEnergy::AssumedPue(1.3);
    input.heat_pump = Some(HeatPump {
        cop: CopModel::Fixed(4.0),
        inside_boundary: false,
    });
    input.offtaker = Some(Offtaker {
        supply_temperature: Celsius(70.0),
        demand: None,
    });
    let s = heat_potential(&input)?;
    assert_eq!(s.cop, Some(4.0));
    assert!(close(s.peak.0, 1_200_000.0));
    assert!(close(s.deliverable.0, 10_512_000.0));
    assert!(close(s.heat_pump_electricity.0, 2_628_000.0));
    assert!(close(s.from_data_centre.0, 7_884_000.0));
    assert!(close(s.e_dc.0, 11_388_000.0));
    assert!(close(s.projected_erf.unwrap_or(f64::NAN), 0.9 / 1.3));
    assert!(close(s.homes_heated, 1051.2));
    assert_eq!(s.supply_temperature, Some(Celsius(70.0)));

    // Inside the boundary: E_DC = 11 388 000 + 2 628 000 = 14 016 000 kWh,
    // and the lifted heat leaves it: ERF = 10 512 000 / 14 016 000 = 0.75.
    input.heat_pump = Some(HeatPump {
        cop: CopModel::Fixed(4.0),
        inside_boundary: true,
    });
    let s = heat_potential(&input)?;
    assert!(close(s.e_dc.0, 14_016_000.0));
    assert!(close(s.projected_erf.unwrap_or(f64::NAN), 0.75));
    Ok(())
}

#[test]
fn heat_potential_with_carnot_heat_pump_and_demand() -> TestResult {
    // Warm water (capture 0.9) with outlet set to 46.85 °C = 320 K; offtaker
    // at 86.85 °C = 360 K. Carnot COP = 360/(360 − 320) = 9; × 0.5 = 4.5.
    // Source 900 kW: available Q_out = 900 × 4.5/3.5 = 1157.14 kW.
    // Demand 500 kW caps it: delivered 500 kW; W = 500/4.5 = 111.11 kW;
    // from the DC 500 − 111.11 = 388.89 kW.
    let mut input = study(Cooling {
        technology: CoolingTechnology::WarmWater,
        capture_share: None,
        outlet: Some(Celsius(46.85)),
    });
    input.heat_pump = Some(HeatPump::default());
    input.offtaker = Some(Offtaker {
        supply_temperature: Celsius(86.85),
        demand: Some(flat(500.0)),
    });
    let s = heat_potential(&input)?;
    assert!(close(s.cop.unwrap_or(f64::NAN), 4.5));
    assert!(close(s.peak.0, 500_000.0));
    assert!(close(s.heat_pump_electricity.0, 500.0 / 4.5 * 8760.0));
    assert!(close(s.from_data_centre.0, (500.0 - 500.0 / 4.5) * 8760.0));
    let cop = s
        .assumptions
        .iter()
        .find(|a| a.name == "heat pump COP")
        .ok_or("no COP assumption")?;
    assert!(cop.basis.contains("T_sink"), "{}", cop.basis);
    assert!(
        s.assumptions
            .iter()
            .any(|a| a.name == "heat pump Carnot fraction")
    );

    // Without demand cap: 1157.14 kW every hour.
    input.offtaker = Some(Offtaker {
        supply_temperature: Celsius(86.85),
        demand: None,
    });
    let s = heat_potential(&input)?;
    assert!(close(s.peak.0, 900_000.0 * 4.5 / 3.5));
    Ok(())
}

#[test]
fn heat_potential_too_cold_without_heat_pump() -> TestResult {
    // Air at 30 °C, offtaker at 70 °C, no heat pump: nothing deliverable,
    // and a note says why.
    let mut input = study(Cooling::new(CoolingTechnology::Air));
    input.offtaker = Some(Offtaker {
        supply_temperature: Celsius(70.0),
        demand: None,
    });
    let s = heat_potential(&input)?;
    assert_eq!(s.deliverable, KilowattHours(0.0));
    assert_eq!(s.supply_temperature, None);
    assert_eq!(s.projected_erf, Some(0.0));
    assert_eq!(s.notes.len(), 1);
    assert!(s.summary.starts_with("No heat"));
    Ok(())
}

#[test]
fn heat_potential_input_errors() {
    let mut input = study(Cooling::new(CoolingTechnology::Air));
    input.it_load.pop();
    assert_eq!(heat_potential(&input), Err(HeatError::ProfileLength(8759)));
    let mut input = study(Cooling {
        capture_share: Some(1.5),
        ..Cooling::new(CoolingTechnology::Air)
    });
    assert!(matches!(
        heat_potential(&input),
        Err(HeatError::OutOfRange { .. })
    ));
    input.cooling.capture_share = None;
    input.facility = FacilityEnergy::AssumedPue(0.9);
    assert!(matches!(
        heat_potential(&input),
        Err(HeatError::OutOfRange { what: "PUE", .. })
    ));
}

#[test]
fn a_year_of_a_ten_megawatt_site_is_exact_past_u64_microjoules() -> TestResult {
    // 8,760 hours at 10,000 kWh: 87,600,000 kWh = 3.1536e20 µJ, past
    // u64 µJ (about 5.1 GWh). A 50 GWh certificate for the year covers
    // part of it. Location-based at 50 g/kWh: 4,380 t.
    let e_dc = hourly(&vec![10_000; 8_760], Quality::Measured)?;
    let grid = GridFactors::new(
        (0..8_760).map(|i| {
            (
                i * H,
                AverageFactor {
                    intensity: GramsPerKwh(50.0),
                    estimated: false,
                },
            )
        }),
        None,
    )?;
    let certificate = vigie_energy::MicrojoulesSum::from_kwh_f64(50_000_000.0).ok_or("a volume")?;
    let market = MarketInputs {
        instruments: vec![renewable(
            "GO hydro",
            InstrumentKind::Certificate,
            Volume::Period(certificate),
        )],
        ..MarketInputs::default()
    };
    let r = scope2(hours(8_760)?, &e_dc, &grid, &market)?;
    let want: u128 = 8_760 * 10_000 * u128::from(KWH);
    assert_eq!(r.consumption().0, want);
    assert!(close(r.consumption().as_kwh(), 87_600_000.0));
    assert!(close(r.location.0, 87_600_000.0 * 50.0));
    assert_eq!(r.instruments[0].offered, certificate);
    assert_eq!(r.instruments[0].applied, certificate);
    assert_eq!(r.instruments[0].surplus.0, 0);
    // The rest, 37.6 GWh, at the grid average (no residual mix given).
    assert!(close(r.market.0, 37_600_000.0 * 50.0));
    Ok(())
}
