//! The cost-benefit analysis of a waste-heat connection, as a permit file
//! asks for it: net present value and payback of the connection over a
//! stated horizon and discount rate, and the CO2 the delivered heat avoids
//! against a stated reference heat source.
//!
//! Conventions: costs and revenues in euros, energy in MWh, the
//! investment at the start of year 0, yearly cash flows at the end of
//! years 1 to `horizon_years` (end-of-year discounting), constant prices
//! (a real discount rate). Every input carries its basis in the caller's
//! assumptions; this module only does the arithmetic.

/// The economics of delivering waste heat to one offtaker.
#[derive(Debug, Clone, PartialEq)]
pub struct CbaInput {
    /// Capital cost of the connection (heat pump, exchangers, pipe), €.
    pub capex_eur: f64,
    /// Operating cost per year without the heat pump's electricity, €.
    pub opex_eur_per_year: f64,
    /// Heat sold per year, MWh.
    pub heat_sold_mwh_per_year: f64,
    /// Price paid for the heat, €/MWh.
    pub heat_price_eur_per_mwh: f64,
    /// Electricity used to upgrade the heat per year, MWh.
    pub electricity_mwh_per_year: f64,
    /// Price of that electricity, €/MWh.
    pub electricity_price_eur_per_mwh: f64,
    /// Discount rate, per year (0.05 for 5 %).
    pub discount_rate: f64,
    /// Horizon, years.
    pub horizon_years: u32,
    /// Emission factor of the reference heat source the delivered heat
    /// displaces, kg CO2e per MWh of heat.
    pub reference_kg_per_mwh_heat: f64,
    /// Emission factor of the upgrade electricity, kg CO2e per MWh.
    pub electricity_kg_per_mwh: f64,
}

/// The result.
#[derive(Debug, Clone, PartialEq)]
pub struct CbaResult {
    /// Yearly net cash flow (revenue - opex - electricity), €.
    pub net_cash_flow_eur_per_year: f64,
    /// Net present value over the horizon, €.
    pub npv_eur: f64,
    /// Simple payback, years (`None`: the yearly cash flow does not repay).
    pub simple_payback_years: Option<f64>,
    /// Discounted payback, years, interpolated within the year it is
    /// reached (`None`: not within the horizon).
    pub discounted_payback_years: Option<f64>,
    /// CO2 avoided per year, tonnes (reference heat minus upgrade
    /// electricity's emissions).
    pub co2_avoided_t_per_year: f64,
    /// Over the horizon, tonnes.
    pub co2_avoided_t_horizon: f64,
}

/// Why a cost-benefit analysis cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CbaError {
    /// An input is not a finite number, or out of its range.
    #[error("{0}")]
    Input(&'static str),
}

/// The present value factor of one euro a year for `n` years at `r`
/// (end of year): `(1 - (1 + r)^-n) / r`, `n` when `r` is 0.
///
/// ```
/// let a = vigie_energy::heat_cba::annuity_factor(0.05, 20);
/// assert!((a - 12.462_210_3).abs() < 1e-6);
/// assert_eq!(vigie_energy::heat_cba::annuity_factor(0.0, 20), 20.0);
/// ```
pub fn annuity_factor(r: f64, n: u32) -> f64 {
    if r == 0.0 {
        f64::from(n)
    } else {
        (1.0 - (1.0 + r).powi(-(n as i32))) / r
    }
}

/// Computes the analysis.
pub fn cost_benefit(i: &CbaInput) -> Result<CbaResult, CbaError> {
    let all = [
        i.capex_eur,
        i.opex_eur_per_year,
        i.heat_sold_mwh_per_year,
        i.heat_price_eur_per_mwh,
        i.electricity_mwh_per_year,
        i.electricity_price_eur_per_mwh,
        i.discount_rate,
        i.reference_kg_per_mwh_heat,
        i.electricity_kg_per_mwh,
    ];
    if all.iter().any(|x| !x.is_finite()) {
        return Err(CbaError::Input("every input must be a finite number"));
    }
    if i.capex_eur < 0.0 || i.heat_sold_mwh_per_year < 0.0 || i.electricity_mwh_per_year < 0.0 {
        return Err(CbaError::Input(
            "capital cost, heat and electricity must not be negative",
        ));
    }
    if i.discount_rate <= -1.0 {
        return Err(CbaError::Input("the discount rate must be above -100 %"));
    }
    if i.horizon_years == 0 {
        return Err(CbaError::Input("the horizon must be at least one year"));
    }
    let cf = i.heat_sold_mwh_per_year * i.heat_price_eur_per_mwh
        - i.opex_eur_per_year
        - i.electricity_mwh_per_year * i.electricity_price_eur_per_mwh;
    let npv = -i.capex_eur + cf * annuity_factor(i.discount_rate, i.horizon_years);
    let simple = (cf > 0.0).then(|| i.capex_eur / cf);
    let mut discounted = None;
    let mut left = i.capex_eur;
    for year in 1..=i.horizon_years {
        let pv = cf / (1.0 + i.discount_rate).powi(year as i32);
        if pv <= 0.0 {
            break;
        }
        if pv >= left {
            discounted = Some(f64::from(year - 1) + left / pv);
            break;
        }
        left -= pv;
    }
    if i.capex_eur == 0.0 && cf > 0.0 {
        discounted = Some(0.0);
    }
    let co2 = (i.heat_sold_mwh_per_year * i.reference_kg_per_mwh_heat
        - i.electricity_mwh_per_year * i.electricity_kg_per_mwh)
        / 1000.0;
    Ok(CbaResult {
        net_cash_flow_eur_per_year: cf,
        npv_eur: npv,
        simple_payback_years: simple,
        discounted_payback_years: discounted,
        co2_avoided_t_per_year: co2,
        co2_avoided_t_horizon: co2 * f64::from(i.horizon_years),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn example() -> CbaInput {
        // A worked example: 1.2 M€ for a 2 MW heat pump and 800 m of pipe,
        // 40 k€ a year of upkeep; 8 000 MWh of heat sold a year at
        // 45 €/MWh; 2 000 MWh of electricity at 100 €/MWh; 5 % over
        // 20 years; gas boiler reference 220 kg/MWh heat, grid 60 kg/MWh.
        CbaInput {
            capex_eur: 1_200_000.0,
            opex_eur_per_year: 40_000.0,
            heat_sold_mwh_per_year: 8_000.0,
            heat_price_eur_per_mwh: 45.0,
            electricity_mwh_per_year: 2_000.0,
            electricity_price_eur_per_mwh: 100.0,
            discount_rate: 0.05,
            horizon_years: 20,
            reference_kg_per_mwh_heat: 220.0,
            electricity_kg_per_mwh: 60.0,
        }
    }

    #[test]
    fn worked_example_by_hand() {
        let r = cost_benefit(&example()).unwrap();
        // 8 000 x 45 - 40 000 - 2 000 x 100 = 120 000 € a year.
        assert_eq!(r.net_cash_flow_eur_per_year, 120_000.0);
        // -1 200 000 + 120 000 x 12.4622103 = 295 465.24 €.
        assert!((r.npv_eur - 295_465.241).abs() < 0.01, "{}", r.npv_eur);
        // 1 200 000 / 120 000 = 10 years.
        assert_eq!(r.simple_payback_years, Some(10.0));
        // Discounted: the annuity factor passes 10 between years 14
        // (9.8986) and 15 (10.3797): 14 + (10 - 9.8986) / 0.48102.
        let d = r.discounted_payback_years.unwrap();
        assert!((d - 14.2108).abs() < 1e-3, "{d}");
        // 8 000 x 0.22 - 2 000 x 0.06 = 1 640 t a year, 32 800 t in 20.
        assert!((r.co2_avoided_t_per_year - 1_640.0).abs() < 1e-9);
        assert!((r.co2_avoided_t_horizon - 32_800.0).abs() < 1e-6);
    }

    #[test]
    fn a_loss_making_connection_never_pays_back() {
        let mut i = example();
        i.heat_price_eur_per_mwh = 25.0;
        let r = cost_benefit(&i).unwrap();
        // 200 000 - 40 000 - 200 000 = -40 000 € a year.
        assert_eq!(r.net_cash_flow_eur_per_year, -40_000.0);
        assert_eq!(r.simple_payback_years, None);
        assert_eq!(r.discounted_payback_years, None);
        assert!(r.npv_eur < -i.capex_eur);
        // Short horizon: positive flows that do not repay in time.
        let mut i = example();
        i.horizon_years = 12;
        let r = cost_benefit(&i).unwrap();
        assert_eq!(r.simple_payback_years, Some(10.0));
        assert_eq!(r.discounted_payback_years, None);
        assert!(r.npv_eur < 0.0);
    }

    #[test]
    fn zero_rate_is_the_undiscounted_sum_and_bad_inputs_are_refused() {
        let mut i = example();
        i.discount_rate = 0.0;
        let r = cost_benefit(&i).unwrap();
        assert_eq!(r.npv_eur, -1_200_000.0 + 20.0 * 120_000.0);
        assert_eq!(r.discounted_payback_years, Some(10.0));
        for bad in [
            CbaInput {
                horizon_years: 0,
                ..example()
            },
            CbaInput {
                capex_eur: f64::NAN,
                ..example()
            },
            CbaInput {
                heat_sold_mwh_per_year: -1.0,
                ..example()
            },
            CbaInput {
                discount_rate: -1.0,
                ..example()
            },
        ] {
            assert!(cost_benefit(&bad).is_err(), "{bad:?}");
        }
    }
}
