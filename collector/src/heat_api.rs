//! `POST /api/v1/heat/potential`: the heat-reuse potential study for a
//! permit application, from a planned hourly IT load profile (the maths
//! and every default with its basis are in `vigie_energy::heat`).

use serde::Deserialize;
use serde_json::{Value, json};
use vigie_energy::{
    Celsius, Cooling, CoolingTechnology, CopModel, FacilityEnergy, HeatPump, HeatStudyInput,
    KilowattHours, Offtaker, Watts,
};

/// The request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotentialRequest {
    /// Planned IT load, kW, one value per hour of a year (8760 or 8784);
    /// or `it_load_kw_constant` for a flat profile.
    #[serde(default)]
    pub it_load_kw: Option<Vec<f64>>,
    /// A flat IT load, kW, over a 8760-hour year.
    #[serde(default)]
    pub it_load_kw_constant: Option<f64>,
    /// `air`, `warm-water`, `direct-liquid`, `immersion`.
    pub cooling: CoolingRequest,
    /// Captured share of IT heat (overrides the technology's default).
    #[serde(default)]
    pub capture_share: Option<f64>,
    /// Cooling outlet temperature, °C (overrides the default).
    #[serde(default)]
    pub outlet_c: Option<f64>,
    /// A heat pump lifting the heat to the offtaker's temperature.
    #[serde(default)]
    pub heat_pump: Option<HeatPumpRequest>,
    /// The heat user.
    #[serde(default)]
    pub offtaker: Option<OfftakerRequest>,
    /// PUE assumed for E_DC (or `annual_e_dc_kwh`).
    #[serde(default)]
    pub assumed_pue: Option<f64>,
    /// Planned annual facility energy, kWh.
    #[serde(default)]
    pub annual_e_dc_kwh: Option<f64>,
    /// A home's annual heat demand, kWh (default documented in the study).
    #[serde(default)]
    pub home_heat_demand_kwh: Option<f64>,
}

/// Cooling technology.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoolingRequest {
    /// Air cooling.
    Air,
    /// Warm-water loop.
    WarmWater,
    /// Direct liquid cooling.
    DirectLiquid,
    /// Immersion.
    Immersion,
}

/// Heat pump.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatPumpRequest {
    /// A datasheet COP; absent: Carnot COP × `carnot_fraction`.
    #[serde(default)]
    pub cop: Option<f64>,
    /// Share of the Carnot COP reached (default documented in the study).
    #[serde(default)]
    pub carnot_fraction: Option<f64>,
    /// Whether the heat pump is inside the data-centre boundary.
    #[serde(default)]
    pub inside_boundary: bool,
}

/// Heat user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfftakerRequest {
    /// Required supply temperature, °C.
    pub supply_c: f64,
    /// Hourly demand, kW thermal (same length as the IT profile).
    #[serde(default)]
    pub demand_kw: Option<Vec<f64>>,
}

/// PUE assumed when neither `assumed_pue` nor `annual_e_dc_kwh` is given.
pub const DEFAULT_PUE: f64 = 1.3;

/// Decimals a homes-heated figure is shown with: one below ten homes (a
/// small site heats "0.6 homes", not "about 1 homes"), none above.
pub fn homes_decimals(homes: f64) -> usize {
    if homes.abs() < 10.0 { 1 } else { 0 }
}

/// The study in one sentence, its figures at the precision the study's
/// table shows them (MWh, °C and kW to one decimal), so that the two never
/// read differently.
fn summary(s: &vigie_energy::HeatStudy) -> String {
    let Some(t) = s.supply_temperature else {
        return "No heat is deliverable with these assumptions.".to_owned();
    };
    let home_mwh = s
        .assumptions
        .iter()
        .find(|a| a.name == "home heat demand")
        .and_then(|a| match a.value {
            vigie_energy::AssumptionValue::Number(kwh) => Some(kwh / 1000.0),
            vigie_energy::AssumptionValue::Text(_) => None,
        });
    let homes = format!(
        "{:.*}",
        homes_decimals(s.homes_heated),
        s.homes_heated + 0.0
    );
    let homes = if homes == "1" || homes == "1.0" {
        format!("{homes} home")
    } else {
        format!("{homes} homes")
    };
    format!(
        "About {:.1} MWh of heat a year at {:.1} °C (peak {:.1} kW), enough for about {homes}{}.",
        s.deliverable.0 / 1000.0,
        t.0,
        s.peak.0 / 1000.0,
        home_mwh.map_or(String::new(), |m| format!(
            " using {m:.1} MWh of heat a year each"
        )),
    )
}

/// Runs the study; errors are the request's fault (400).
pub fn study(req: &PotentialRequest) -> Result<Value, String> {
    let it_load: Vec<Watts> = match (&req.it_load_kw, req.it_load_kw_constant) {
        (Some(v), None) => v.iter().map(|kw| Watts(kw * 1000.0)).collect(),
        (None, Some(kw)) => vec![Watts(kw * 1000.0); 8760],
        _ => return Err(
            "give exactly one of it_load_kw (hourly, 8760 or 8784 values) and it_load_kw_constant"
                .into(),
        ),
    };
    let facility = match (req.assumed_pue, req.annual_e_dc_kwh) {
        (Some(p), None) => FacilityEnergy::AssumedPue(p),
        (None, Some(k)) => FacilityEnergy::Annual(KilowattHours(k)),
        (None, None) => FacilityEnergy::AssumedPue(DEFAULT_PUE),
        _ => return Err("give at most one of assumed_pue and annual_e_dc_kwh".into()),
    };
    let input = HeatStudyInput {
        it_load,
        cooling: Cooling {
            technology: match req.cooling {
                CoolingRequest::Air => CoolingTechnology::Air,
                CoolingRequest::WarmWater => CoolingTechnology::WarmWater,
                CoolingRequest::DirectLiquid => CoolingTechnology::DirectLiquid,
                CoolingRequest::Immersion => CoolingTechnology::Immersion,
            },
            capture_share: req.capture_share,
            outlet: req.outlet_c.map(Celsius),
        },
        heat_pump: req.heat_pump.as_ref().map(|h| HeatPump {
            cop: match (h.cop, h.carnot_fraction) {
                (Some(c), _) => CopModel::Fixed(c),
                (None, Some(f)) => CopModel::CarnotFraction(f),
                (None, None) => CopModel::default(),
            },
            inside_boundary: h.inside_boundary,
        }),
        offtaker: req.offtaker.as_ref().map(|o| Offtaker {
            supply_temperature: Celsius(o.supply_c),
            demand: o
                .demand_kw
                .as_ref()
                .map(|d| d.iter().map(|kw| Watts(kw * 1000.0)).collect()),
        }),
        facility,
        home_heat_demand: req.home_heat_demand_kwh.map(KilowattHours),
    };
    let s = vigie_energy::heat_potential(&input).map_err(|e| e.to_string())?;
    // The hourly profile in kW, rounded to the watt, for charts.
    let kw = |v: &[Watts]| -> Vec<f64> { v.iter().map(|w| (w.0).round() / 1000.0).collect() };
    Ok(json!({
        "deliverable_mwh_th": s.deliverable.0 / 1000.0,
        "from_data_centre_mwh_th": s.from_data_centre.0 / 1000.0,
        "peak_kw_th": s.peak.0 / 1000.0,
        "supply_temperature_c": s.supply_temperature.map(|c| c.0),
        "heat_pump_electricity_mwh": s.heat_pump_electricity.0 / 1000.0,
        "cop": s.cop,
        "e_it_mwh": s.e_it.0 / 1000.0,
        "e_dc_mwh": s.e_dc.0 / 1000.0,
        "projected_erf": s.projected_erf,
        "homes_heated": s.homes_heated,
        "summary": summary(&s),
        "assumptions": s.assumptions.iter().map(|a| json!({
            "name": a.name,
            "value": a.value.to_string(),
            "unit": a.unit,
            // The study sees a PUE either way; say when it was not given.
            "basis": if a.name == "PUE" && req.assumed_pue.is_none() && req.annual_e_dc_kwh.is_none() {
                format!("default: {DEFAULT_PUE}, no assumed_pue or annual_e_dc_kwh given; E_DC = E_IT × PUE")
            } else {
                a.basis.clone()
            },
        })).collect::<Vec<_>>(),
        "notes": s.notes,
        "hourly_kw_th": kw(&s.hourly),
        "hourly_heat_pump_kw": kw(&s.hourly_heat_pump),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_megawatt_of_direct_liquid_cooling() {
        let req: PotentialRequest = serde_json::from_value(json!({
            "it_load_kw_constant": 1000.0,
            "cooling": "direct-liquid",
            "offtaker": { "supply_c": 60.0 },
            "assumed_pue": 1.25,
        }))
        .unwrap();
        let s = study(&req).unwrap();
        // 1 MW x 8760 h = 8760 MWh of IT energy; E_DC = 1.25 x that.
        assert_eq!(s["e_it_mwh"], 8760.0);
        assert_eq!(s["e_dc_mwh"], 10950.0);
        // DLC default capture 0.75 at 67.5 °C, above the 60 °C needed: no
        // heat pump; 0.75 x 8760 = 6570 MWh_th; ERF = 6570 / 10950 = 0.6.
        assert_eq!(s["deliverable_mwh_th"], 6570.0);
        assert_eq!(s["peak_kw_th"], 750.0);
        assert!((s["projected_erf"].as_f64().unwrap() - 0.6).abs() < 1e-9);
        assert!(s["assumptions"].as_array().unwrap().len() >= 4);
        let pue = |s: &Value| {
            s["assumptions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == "PUE")
                .unwrap()["basis"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(pue(&s).starts_with("given"), "{}", pue(&s));
        // Without a PUE the default is said to be one.
        let req: PotentialRequest = serde_json::from_value(json!({
            "it_load_kw_constant": 1000.0,
            "cooling": "air",
        }))
        .unwrap();
        assert!(pue(&study(&req).unwrap()).starts_with("default: 1.3"));
        assert_eq!(s["hourly_kw_th"].as_array().unwrap().len(), 8760);
    }

    #[test]
    fn the_summary_reads_as_the_table_for_a_small_site() {
        // The demo's 1.6 kW of IT: under two homes, a peak under 2 kW.
        let req: PotentialRequest = serde_json::from_value(json!({
            "it_load_kw_constant": 1.6,
            "cooling": "air",
            "heat_pump": { "carnot_fraction": 0.5 },
            "offtaker": { "supply_c": 65.0 },
            "assumed_pue": 1.4,
        }))
        .unwrap();
        let s = study(&req).unwrap();
        let text = s["summary"].as_str().unwrap();
        let peak = format!("peak {:.1} kW", s["peak_kw_th"].as_f64().unwrap());
        assert!(text.contains(&peak), "{text}");
        let homes = s["homes_heated"].as_f64().unwrap();
        assert!(homes < 10.0, "{homes}");
        assert!(text.contains(&format!("about {homes:.1} home")), "{text}");
        assert!(!text.contains("about 1 homes"), "{text}");
        assert!(
            text.contains(&format!(
                "About {:.1} MWh",
                s["deliverable_mwh_th"].as_f64().unwrap()
            )),
            "{text}"
        );
        assert_eq!(homes_decimals(0.6), 1);
        assert_eq!(homes_decimals(250.0), 0);
    }

    #[test]
    fn bad_requests_say_why() {
        let req: PotentialRequest = serde_json::from_value(json!({ "cooling": "air" })).unwrap();
        assert!(study(&req).unwrap_err().contains("it_load_kw"));
        let req: PotentialRequest = serde_json::from_value(json!({
            "it_load_kw": [1.0, 2.0], "cooling": "air"
        }))
        .unwrap();
        assert!(study(&req).is_err(), "a profile must cover a year");
    }
}
