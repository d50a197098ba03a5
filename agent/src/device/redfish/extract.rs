//! Readings: what one resource's JSON yields (power, energy registers,
//! gauges), and the link and name helpers the walk shares.

use super::*;

/// `doc[key]["@odata.id"]`, when it is a path on this service.
pub(super) fn link(doc: &Json, key: &str) -> Option<String> {
    doc.get(key).and_then(odata_id)
}

/// A reference's path, without fragment; links to other services are not
/// followed.
pub(super) fn odata_id(reference: &Json) -> Option<String> {
    let id = reference.get("@odata.id")?.as_str()?;
    let id = id.split('#').next().unwrap_or(id);
    id.starts_with("/redfish/v1").then(|| id.to_owned())
}

pub(super) fn last_segment(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_owned()
}

/// A point-name part: `[A-Za-z0-9._-]`, anything else becomes `_`.
pub(super) fn clean(part: &str) -> String {
    let cleaned: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// Every `DataSourceUri` in a document.
pub(super) fn data_sources(doc: &Json, out: &mut HashSet<String>) {
    match doc {
        Json::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("DataSourceUri", Json::String(uri)) => {
                        out.insert(uri.split('#').next().unwrap_or(uri).to_owned());
                    }
                    _ => data_sources(value, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|v| data_sources(v, out)),
        _ => {}
    }
}

/// Units of a Redfish energy reading.
#[derive(Debug, Clone, Copy)]
pub(super) enum EnergyUnit {
    KWh,
    Wh,
    Joules,
}

/// An energy reading as an exact register: kWh and Wh in mWh
/// (3.6 J each), joules in mJ. `None` for a negative or absurd value.
pub(super) fn energy(reading: f64, unit: EnergyUnit) -> Option<Value> {
    let (scale, uj_per_unit) = match unit {
        EnergyUnit::KWh => (1e6, 3_600_000),
        EnergyUnit::Wh => (1e3, 3_600_000),
        EnergyUnit::Joules => (1e3, 1_000),
    };
    let raw = (reading * scale).round();
    // u64::MAX as f64 rounds up to 2^64: `<` keeps the cast exact.
    (raw.is_finite() && raw >= 0.0 && raw < u64::MAX as f64).then_some(Value::EnergyCounter {
        raw: raw as u64,
        uj_per_unit,
        max_raw: u64::MAX,
    })
}

/// What a `Sensor` measures, when it is power or energy.
pub(super) fn sensor_kind(doc: &Json) -> Option<Option<EnergyUnit>> {
    match doc.get("ReadingType").and_then(Json::as_str)? {
        "Power" => Some(None),
        "EnergykWh" => Some(Some(EnergyUnit::KWh)),
        "EnergyWh" => Some(Some(EnergyUnit::Wh)),
        "EnergyJoules" => Some(Some(EnergyUnit::Joules)),
        _ => None,
    }
}

/// A finite number, or nothing (null, missing, a string).
pub(super) fn number(v: Option<&Json>) -> Option<f64> {
    v.and_then(Json::as_f64).filter(|x| x.is_finite())
}

/// `doc[key]["Reading"]`.
pub(super) fn reading(doc: &Json, key: &str) -> Option<f64> {
    number(doc.get(key).and_then(|o| o.get("Reading")))
}

pub(super) fn push(out: &mut Vec<PointValue>, point: &str, value: Option<Value>) {
    if let Some(value) = value {
        out.push(PointValue {
            point: point.to_owned(),
            value,
        });
    }
}

pub(super) fn power(w: Option<f64>) -> Option<Value> {
    w.map(Value::PowerW)
}

pub(super) fn gauge(quantity: GaugeQuantity, x: Option<f64>) -> Option<Value> {
    x.map(|x| Value::Gauge(quantity, x))
}

/// The values one resource yields; anything null or missing is skipped.
pub(super) fn extract(t: &Target, doc: &Json, out: &mut Vec<PointValue>) {
    let p = t.point.as_str();
    match t.kind {
        Kind::LegacyPower => {
            let controls = doc.get("PowerControl").and_then(Json::as_array);
            for (i, control) in controls.into_iter().flatten().enumerate() {
                let point = if i == 0 {
                    p.to_owned()
                } else {
                    format!("{p}.{}", clean(&member_id(control, i)))
                };
                push(
                    out,
                    &point,
                    power(number(control.get("PowerConsumedWatts"))),
                );
                let limit = control
                    .get("PowerLimit")
                    .and_then(|l| l.get("LimitInWatts"));
                push(
                    out,
                    &point,
                    gauge(GaugeQuantity::PowerLimitWatts, number(limit)),
                );
            }
            let supplies = doc.get("PowerSupplies").and_then(Json::as_array);
            for (i, supply) in supplies.into_iter().flatten().enumerate() {
                let point = format!("{}.{}", t.supply_prefix, clean(&member_id(supply, i)));
                let input = number(supply.get("PowerInputWatts"));
                push(out, &point, gauge(GaugeQuantity::PowerWatts, input));
                let volts = number(supply.get("LineInputVoltage"));
                push(out, &point, gauge(GaugeQuantity::VoltageVolts, volts));
                // Average output over the supply's own window: integrated,
                // a part of the chassis (all a blade enclosure may report).
                let output = number(supply.get("LastPowerOutputWatts"));
                push(out, &format!("{point}.output"), power(output));
            }
        }
        Kind::SupplyMetrics | Kind::ShelfSupply => {
            let input = reading(doc, "InputPowerWatts");
            if t.kind == Kind::ShelfSupply {
                push(out, p, power(input));
            } else {
                push(out, p, gauge(GaugeQuantity::PowerWatts, input));
            }
            push(out, p, energy_of(doc));
            push(
                out,
                p,
                gauge(GaugeQuantity::VoltageVolts, reading(doc, "InputVoltage")),
            );
            let amps = reading(doc, "InputCurrentAmps");
            push(out, p, gauge(GaugeQuantity::CurrentAmperes, amps));
            let output = reading(doc, "OutputPowerWatts");
            push(
                out,
                &format!("{p}.output"),
                gauge(GaugeQuantity::PowerWatts, output),
            );
        }
        Kind::Environment => {
            push(out, p, power(reading(doc, "PowerWatts")));
            push(out, p, energy_of(doc));
            let temp = reading(doc, "TemperatureCelsius");
            push(out, p, gauge(GaugeQuantity::TemperatureCelsius, temp));
            let limit = number(doc.get("PowerLimitWatts").and_then(|l| l.get("SetPoint")));
            push(out, p, gauge(GaugeQuantity::PowerLimitWatts, limit));
        }
        Kind::Sensor => {
            let value = number(doc.get("Reading"));
            let value = match sensor_kind(doc) {
                Some(None) => power(value),
                Some(Some(unit)) => value.and_then(|x| energy(x, unit)),
                None => None,
            };
            push(out, p, value);
        }
        Kind::Coolant => {
            let heat = reading(doc, "HeatRemovedkW").map(|kw| kw * 1000.0);
            push(out, p, gauge(GaugeQuantity::HeatPowerWatts, heat));
            // L/min to m³/h: x 60 / 1000.
            let flow = reading(doc, "FlowLitersPerMinute").map(|lpm| lpm * 60.0 / 1000.0);
            push(out, p, gauge(GaugeQuantity::FlowCubicMetresPerHour, flow));
            let supply = reading(doc, "SupplyTemperatureCelsius");
            push(
                out,
                p,
                gauge(GaugeQuantity::SupplyTemperatureCelsius, supply),
            );
            let ret = reading(doc, "ReturnTemperatureCelsius");
            push(out, p, gauge(GaugeQuantity::ReturnTemperatureCelsius, ret));
        }
        Kind::PduMetrics => {
            push(out, p, power(reading(doc, "PowerWatts")));
            push(out, p, energy_of(doc));
            let temp = reading(doc, "TemperatureCelsius");
            push(out, p, gauge(GaugeQuantity::TemperatureCelsius, temp));
        }
        Kind::Circuit => {
            let watts = reading(doc, "PowerWatts");
            push(out, p, power(watts));
            push(out, p, energy_of(doc));
            let volts = reading(doc, "Voltage");
            push(out, p, gauge(GaugeQuantity::VoltageVolts, volts));
            let amps = reading(doc, "CurrentAmps");
            push(out, p, gauge(GaugeQuantity::CurrentAmperes, amps));
            // Per-line figures only where the circuit gives no single one
            // (three-phase mains): an outlet repeats its one line there.
            let lines = [
                ("PolyPhaseVoltage", GaugeQuantity::VoltageVolts, volts),
                ("PolyPhaseCurrentAmps", GaugeQuantity::CurrentAmperes, amps),
                ("PolyPhasePowerWatts", GaugeQuantity::PowerWatts, watts),
            ];
            for (key, quantity, single) in lines {
                if single.is_some() {
                    continue;
                }
                let Some(map) = doc.get(key).and_then(Json::as_object) else {
                    continue;
                };
                for (line, v) in map {
                    let x = number(v.get("Reading"));
                    push(out, &format!("{p}.{}", clean(line)), gauge(quantity, x));
                }
            }
        }
    }
}

/// `EnergykWh.Reading`, else `EnergyJoules.Reading`, as a register.
pub(super) fn energy_of(doc: &Json) -> Option<Value> {
    reading(doc, "EnergykWh")
        .and_then(|x| energy(x, EnergyUnit::KWh))
        .or_else(|| reading(doc, "EnergyJoules").and_then(|x| energy(x, EnergyUnit::Joules)))
}

/// An array member's `MemberId`, else its index.
pub(super) fn member_id(member: &Json, index: usize) -> String {
    member
        .get("MemberId")
        .and_then(Json::as_str)
        .map_or_else(|| index.to_string(), str::to_owned)
}
