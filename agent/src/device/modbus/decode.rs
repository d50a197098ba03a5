//! Pure Modbus register decoding: words to numbers (type, word order),
//! numbers to [`Value`]s (scale, unit, what is measured), and the grouping
//! of a register map into few read requests. Nothing here touches a socket.

use crate::device::Value;
use vigie_protocol::GaugeQuantity;

/// Largest number of registers one read request may ask for (Modbus
/// application protocol, function codes 3 and 4).
pub const MAX_READ: u16 = 125;

/// How a value is laid out in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// IEEE 754 single precision, two registers.
    F32,
    /// IEEE 754 double precision, four registers.
    F64,
}

impl DataType {
    /// Registers the value spans.
    pub fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::F64 => 4,
        }
    }

    /// Whether the type is a float.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }

    /// Largest value an integer register holds before it wraps.
    pub fn max_raw(self) -> u64 {
        match self {
            DataType::U16 => u64::from(u16::MAX),
            DataType::I16 => i16::MAX as u64,
            DataType::U32 => u64::from(u32::MAX),
            DataType::I32 => i32::MAX as u64,
            DataType::U64 | DataType::F32 | DataType::F64 => u64::MAX,
        }
    }
}

/// Order of the 16-bit words of a multi-register value. Bytes within a
/// word are always big-endian, as Modbus sends them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (ABCD): the Modbus convention.
    #[default]
    Big,
    /// Low word first (CDAB), as many meters do.
    Little,
}

/// A decoded register value, before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Any integer type.
    Int(i128),
    /// A float type.
    Float(f64),
}

/// Decodes `ty.words()` registers. `None` when too few words were given.
pub fn decode(words: &[u16], ty: DataType, order: WordOrder) -> Option<Number> {
    let n = usize::from(ty.words());
    let words = words.get(..n)?;
    // Most significant word first.
    let mut be: u64 = 0;
    let mut push = |w: u16| be = (be << 16) | u64::from(w);
    match order {
        WordOrder::Big => words.iter().copied().for_each(&mut push),
        WordOrder::Little => words.iter().rev().copied().for_each(&mut push),
    }
    Some(match ty {
        DataType::U16 => Number::Int(i128::from(be as u16)),
        DataType::I16 => Number::Int(i128::from(be as u16 as i16)),
        DataType::U32 => Number::Int(i128::from(be as u32)),
        DataType::I32 => Number::Int(i128::from(be as u32 as i32)),
        DataType::U64 => Number::Int(i128::from(be)),
        DataType::F32 => Number::Float(f64::from(f32::from_bits(be as u32))),
        DataType::F64 => Number::Float(f64::from_bits(be)),
    })
}

/// What a register measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measures {
    /// Electrical power (W) or an energy counter (Wh).
    Electricity,
    /// A heat meter: thermal power, thermal energy, supply or return
    /// temperature (with `role`).
    Heat,
    /// A water meter: volume or flow.
    Water,
    /// A temperature.
    Temperature,
}

/// A heat meter's temperature: which pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Flow (supply) temperature.
    Supply,
    /// Return temperature.
    Return,
}

/// The unit of the scaled register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Unit {
    /// Watt.
    #[serde(rename = "W")]
    W,
    /// Kilowatt.
    #[serde(rename = "kW")]
    KW,
    /// Megawatt.
    #[serde(rename = "MW")]
    MW,
    /// Watt-hour.
    #[serde(rename = "Wh")]
    Wh,
    /// Kilowatt-hour.
    #[serde(rename = "kWh")]
    KWh,
    /// Megawatt-hour.
    #[serde(rename = "MWh")]
    MWh,
    /// Megajoule.
    #[serde(rename = "MJ")]
    MJ,
    /// Gigajoule.
    #[serde(rename = "GJ")]
    GJ,
    /// Cubic metre.
    #[serde(rename = "m3")]
    M3,
    /// Litre.
    #[serde(rename = "l")]
    L,
    /// Cubic metres per hour.
    #[serde(rename = "m3/h")]
    M3h,
    /// Litres per hour.
    #[serde(rename = "l/h")]
    Lh,
    /// Litres per minute.
    #[serde(rename = "l/min")]
    Lmin,
    /// Litres per second.
    #[serde(rename = "l/s")]
    Ls,
    /// Degree Celsius.
    #[serde(rename = "C")]
    C,
}

/// How one register becomes a [`Value`], decided once from the
/// configuration ([`Conversion::new`]) and applied at every poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Conversion {
    /// `value × factor` watts.
    Power {
        /// Scale times unit factor to W.
        factor: f64,
    },
    /// An integer energy register: the raw value, exactly `uj_per_unit` µJ
    /// each, wrapping after `max_raw`.
    IntEnergy {
        /// Microjoules per register unit (scale × unit, exact).
        uj_per_unit: u64,
        /// The register's largest value.
        max_raw: u64,
    },
    /// A float energy register, turned into a fixed-point count of
    /// milliwatt-hours (3.6 J each) so the tracker counts exact integers.
    FloatEnergy {
        /// Scale times unit factor to mWh.
        mwh_factor: f64,
    },
    /// A gauge: `value × factor` in the quantity's unit.
    Gauge {
        /// What it is.
        quantity: GaugeQuantity,
        /// Scale times unit factor.
        factor: f64,
    },
}

/// One mWh in µJ.
pub const MWH_UJ: u64 = 3_600_000;

impl Conversion {
    /// Checks that `measures`, `unit` and `role` go together and fixes the
    /// arithmetic. The error says what is wrong, for the configuration.
    pub fn new(
        measures: Measures,
        unit: Unit,
        role: Option<Role>,
        ty: DataType,
        scale: f64,
    ) -> Result<Conversion, String> {
        if !scale.is_finite() || scale <= 0.0 {
            return Err(format!("scale must be a positive number, not {scale}"));
        }
        if role.is_some() && !(measures == Measures::Heat && unit == Unit::C) {
            return Err(
                "role is for a heat meter's temperatures (measures = \"heat\", unit = \"C\")"
                    .into(),
            );
        }
        let gauge = |quantity, to_unit: f64| Conversion::Gauge {
            quantity,
            factor: scale * to_unit,
        };
        let bad = || {
            Err(format!(
                "unit {unit:?} does not fit measures = {:?}",
                format!("{measures:?}").to_lowercase()
            ))
        };
        Ok(match measures {
            Measures::Electricity => match unit {
                Unit::W | Unit::KW | Unit::MW => Conversion::Power {
                    factor: scale * watts(unit),
                },
                Unit::Wh | Unit::KWh | Unit::MWh | Unit::MJ | Unit::GJ => {
                    let uj = scale * microjoules(unit);
                    if ty.is_float() {
                        Conversion::FloatEnergy {
                            mwh_factor: uj / MWH_UJ as f64,
                        }
                    } else {
                        let exact = uj.round();
                        if exact < 1.0
                            || (uj - exact).abs() > exact * 1e-9
                            || exact > u64::MAX as f64
                        {
                            return Err(format!(
                                "scale {scale} {unit:?} is not a whole number of microjoules"
                            ));
                        }
                        Conversion::IntEnergy {
                            uj_per_unit: exact as u64,
                            max_raw: ty.max_raw(),
                        }
                    }
                }
                _ => return bad(),
            },
            Measures::Heat => match (unit, role) {
                (Unit::W | Unit::KW | Unit::MW, _) => {
                    gauge(GaugeQuantity::HeatPowerWatts, watts(unit))
                }
                (Unit::Wh | Unit::KWh | Unit::MWh | Unit::MJ | Unit::GJ, _) => gauge(
                    GaugeQuantity::HeatEnergyKwh,
                    microjoules(unit) / microjoules(Unit::KWh),
                ),
                (Unit::C, Some(Role::Supply)) => {
                    gauge(GaugeQuantity::SupplyTemperatureCelsius, 1.0)
                }
                (Unit::C, Some(Role::Return)) => {
                    gauge(GaugeQuantity::ReturnTemperatureCelsius, 1.0)
                }
                (Unit::C, None) => {
                    return Err(
                        "a heat meter's temperature needs role = \"supply\" or \"return\"".into(),
                    );
                }
                (Unit::M3h | Unit::Lh | Unit::Lmin | Unit::Ls, _) => {
                    gauge(GaugeQuantity::FlowCubicMetresPerHour, cubic_metres(unit))
                }
                (Unit::M3 | Unit::L, _) => {
                    gauge(GaugeQuantity::VolumeCubicMetres, cubic_metres(unit))
                }
            },
            Measures::Water => match unit {
                Unit::M3 | Unit::L => gauge(GaugeQuantity::VolumeCubicMetres, cubic_metres(unit)),
                Unit::M3h | Unit::Lh | Unit::Lmin | Unit::Ls => {
                    gauge(GaugeQuantity::FlowCubicMetresPerHour, cubic_metres(unit))
                }
                _ => return bad(),
            },
            Measures::Temperature => match unit {
                Unit::C => gauge(GaugeQuantity::TemperatureCelsius, 1.0),
                _ => return bad(),
            },
        })
    }

    /// The value of a decoded register; `Err` says why there is none
    /// (a float that is not finite, a negative counter, a negative power).
    pub fn apply(&self, n: Number) -> Result<Value, String> {
        let as_f64 = match n {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        };
        if !as_f64.is_finite() {
            return Err(format!("not a number: {as_f64}"));
        }
        match *self {
            Conversion::Power { factor } => {
                let w = apply_factor(as_f64, factor);
                if w < 0.0 {
                    return Err(format!("negative power {w} W"));
                }
                Ok(Value::PowerW(w))
            }
            Conversion::IntEnergy {
                uj_per_unit,
                max_raw,
            } => match n {
                Number::Int(i) => {
                    let raw = u64::try_from(i).map_err(|_| format!("negative counter {i}"))?;
                    if raw > max_raw {
                        return Err(format!("counter {raw} above its width {max_raw}"));
                    }
                    Ok(Value::EnergyCounter {
                        raw,
                        uj_per_unit,
                        max_raw,
                    })
                }
                Number::Float(_) => Err("a float where an integer counter was expected".into()),
            },
            Conversion::FloatEnergy { mwh_factor } => {
                let mwh = apply_factor(as_f64, mwh_factor).round();
                if mwh < 0.0 || mwh >= u64::MAX as f64 {
                    return Err(format!("energy {as_f64} out of range"));
                }
                Ok(Value::EnergyCounter {
                    raw: mwh as u64,
                    uj_per_unit: MWH_UJ,
                    max_raw: u64::MAX,
                })
            }
            Conversion::Gauge { quantity, factor } => {
                Ok(Value::Gauge(quantity, apply_factor(as_f64, factor)))
            }
        }
    }
}

/// `x × factor`, as a division when the factor is one over a whole number
/// (0.1, 0.001): `-125 / 10` is exactly -12.5 where `-125 × 0.1` need not be.
fn apply_factor(x: f64, factor: f64) -> f64 {
    if factor < 1.0 {
        let inverse = 1.0 / factor;
        let whole = inverse.round();
        if (inverse - whole).abs() <= whole * 1e-9 {
            return x / whole;
        }
    }
    x * factor
}

fn watts(unit: Unit) -> f64 {
    match unit {
        Unit::KW => 1e3,
        Unit::MW => 1e6,
        _ => 1.0,
    }
}

fn microjoules(unit: Unit) -> f64 {
    match unit {
        Unit::Wh => 3.6e9,
        Unit::KWh => 3.6e12,
        Unit::MWh => 3.6e15,
        Unit::MJ => 1e12,
        Unit::GJ => 1e15,
        _ => 1.0,
    }
}

fn cubic_metres(unit: Unit) -> f64 {
    match unit {
        Unit::L => 1e-3,
        Unit::Lh => 1e-3,
        Unit::Lmin => 60e-3,
        Unit::Ls => 3600e-3,
        _ => 1.0,
    }
}

/// Which register table a read goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Holding registers (function code 3).
    #[default]
    Holding,
    /// Input registers (function code 4).
    Input,
}

/// One read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Register table.
    pub kind: RegisterKind,
    /// First register.
    pub start: u16,
    /// Number of registers.
    pub count: u16,
}

/// Groups register spans `(kind, address, words)` into as few reads as
/// possible: spans that overlap, touch, or lie at most `gap` registers
/// apart share a read, up to [`MAX_READ`] registers each.
pub fn plan_reads(spans: &[(RegisterKind, u16, u16)], gap: u16) -> Vec<Read> {
    let mut spans: Vec<_> = spans.to_vec();
    spans.sort_unstable();
    let mut reads: Vec<Read> = Vec::new();
    for (kind, start, words) in spans {
        let end = u32::from(start) + u32::from(words); // exclusive
        if let Some(last) = reads.last_mut()
            && last.kind == kind
        {
            let last_end = u32::from(last.start) + u32::from(last.count);
            let merged_end = last_end.max(end);
            if u32::from(start) <= last_end + u32::from(gap)
                && merged_end - u32::from(last.start) <= u32::from(MAX_READ)
            {
                last.count = (merged_end - u32::from(last.start)) as u16;
                continue;
            }
        }
        reads.push(Read {
            kind,
            start,
            count: words,
        });
    }
    reads
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::{Big, Little};

    #[test]
    fn decoding_table() {
        // 1.5f32 = 0x3FC0_0000; -12.5 (°C) as i16 = 0xFF83 (tenths: -125).
        let cases: &[(&[u16], DataType, WordOrder, Number)] = &[
            (&[0x0001, 0x0002], U32, Big, Number::Int(0x0001_0002)),
            (&[0x0002, 0x0001], U32, Little, Number::Int(0x0001_0002)),
            // A u32 counter near its top: 0xFFFF_FFFE = 4294967294.
            (&[0xFFFF, 0xFFFE], U32, Big, Number::Int(4_294_967_294)),
            (&[0xFF83], I16, Big, Number::Int(-125)),
            (&[0xFF83], U16, Big, Number::Int(65_411)),
            (&[0xFFFF, 0xFFFF], I32, Big, Number::Int(-1)),
            (&[0x3FC0, 0x0000], F32, Big, Number::Float(1.5)),
            (&[0x0000, 0x3FC0], F32, Little, Number::Float(1.5)),
            (
                &[0x0000, 0x0000, 0x0001, 0x0000],
                U64,
                Big,
                Number::Int(65_536),
            ),
            (
                &[0x0000, 0x0001, 0x0000, 0x0000],
                U64,
                Little,
                Number::Int(65_536),
            ),
            // 230.5f64 = 0x406C_D000_0000_0000.
            (
                &[0x406C, 0xD000, 0x0000, 0x0000],
                F64,
                Big,
                Number::Float(230.5),
            ),
            (
                &[0x0000, 0x0000, 0xD000, 0x406C],
                F64,
                Little,
                Number::Float(230.5),
            ),
        ];
        for (words, ty, order, want) in cases {
            assert_eq!(
                decode(words, *ty, *order),
                Some(*want),
                "{words:04x?} {ty:?} {order:?}"
            );
        }
        assert_eq!(decode(&[1], U32, Big), None, "too few words");
    }

    #[test]
    fn conversion_table() {
        let conv = |m, u, r, t, s| Conversion::new(m, u, r, t, s).unwrap();
        use Measures::*;
        // A u32 energy counter in 0.01 kWh: 36_000_000_000 µJ per unit, wraps at u32::MAX.
        let c = conv(Electricity, Unit::KWh, None, U32, 0.01);
        assert_eq!(
            c.apply(Number::Int(4_294_967_294)).unwrap(),
            Value::EnergyCounter {
                raw: 4_294_967_294,
                uj_per_unit: 36_000_000_000,
                max_raw: u64::from(u32::MAX)
            }
        );
        // A float kWh counter: 1234.5 kWh = 1_234_500_000 mWh, exact µJ per mWh.
        let c = conv(Electricity, Unit::KWh, None, F32, 1.0);
        assert_eq!(
            c.apply(Number::Float(1234.5)).unwrap(),
            Value::EnergyCounter {
                raw: 1_234_500_000,
                uj_per_unit: MWH_UJ,
                max_raw: u64::MAX
            }
        );
        // Power in kW with a 0.001 scale: 1500 -> 1.5 kW -> 1500 W.
        let c = conv(Electricity, Unit::KW, None, U16, 0.001);
        assert_eq!(c.apply(Number::Int(1500)).unwrap(), Value::PowerW(1500.0));
        // A negative i16 temperature in tenths: -125 -> -12.5 °C.
        let c = conv(Temperature, Unit::C, None, I16, 0.1);
        assert_eq!(
            c.apply(Number::Int(-125)).unwrap(),
            Value::Gauge(GaugeQuantity::TemperatureCelsius, -12.5)
        );
        // Heat: MWh register -> kWh gauge; supply temperature; kW -> W.
        let c = conv(Heat, Unit::MWh, None, U32, 0.001);
        assert_eq!(
            c.apply(Number::Int(123_456)).unwrap(),
            Value::Gauge(GaugeQuantity::HeatEnergyKwh, 123_456.0)
        );
        let c = conv(Heat, Unit::C, Some(Role::Supply), F32, 1.0);
        assert_eq!(
            c.apply(Number::Float(65.5)).unwrap(),
            Value::Gauge(GaugeQuantity::SupplyTemperatureCelsius, 65.5)
        );
        let c = conv(Heat, Unit::KW, None, U32, 1.0);
        assert_eq!(
            c.apply(Number::Int(250)).unwrap(),
            Value::Gauge(GaugeQuantity::HeatPowerWatts, 250_000.0)
        );
        // Water: litres -> m³; l/min -> m³/h.
        let c = conv(Water, Unit::L, None, U32, 1.0);
        assert_eq!(
            c.apply(Number::Int(1500)).unwrap(),
            Value::Gauge(GaugeQuantity::VolumeCubicMetres, 1.5)
        );
        let c = conv(Water, Unit::Lmin, None, U16, 1.0);
        assert_eq!(
            c.apply(Number::Int(50)).unwrap(),
            Value::Gauge(GaugeQuantity::FlowCubicMetresPerHour, 3.0)
        );
        // No value rather than a wrong one.
        let c = conv(Electricity, Unit::Wh, None, I32, 1.0);
        assert!(c.apply(Number::Int(-5)).is_err());
        assert!(
            conv(Electricity, Unit::W, None, F32, 1.0)
                .apply(Number::Float(f64::NAN))
                .is_err()
        );
        assert!(
            conv(Electricity, Unit::W, None, I16, 1.0)
                .apply(Number::Int(-3))
                .is_err()
        );
    }

    #[test]
    fn impossible_combinations_are_refused() {
        use Measures::*;
        for (m, u, r, t, s) in [
            (Electricity, Unit::C, None, U16, 1.0),
            (Water, Unit::KWh, None, U16, 1.0),
            (Temperature, Unit::W, None, U16, 1.0),
            (Heat, Unit::C, None, U16, 1.0),
            (Electricity, Unit::W, Some(Role::Supply), U16, 1.0),
            (Electricity, Unit::W, None, U16, 0.0),
            // 1e-10 Wh is 0.36 µJ: not a whole number.
            (Electricity, Unit::Wh, None, U32, 1e-10),
        ] {
            assert!(
                Conversion::new(m, u, r, t, s).is_err(),
                "{m:?} {u:?} {r:?} {s}"
            );
        }
    }

    #[test]
    fn reads_are_grouped() {
        use RegisterKind::{Holding, Input};
        let reads = plan_reads(
            &[
                (Holding, 10, 2),
                (Input, 0, 1),
                (Holding, 12, 2), // touches 10..12
                (Holding, 13, 1), // overlaps
                (Holding, 20, 4), // 6 registers away
                (Input, 1, 2),
            ],
            0,
        );
        assert_eq!(
            reads,
            vec![
                Read {
                    kind: Holding,
                    start: 10,
                    count: 4
                },
                Read {
                    kind: Holding,
                    start: 20,
                    count: 4
                },
                Read {
                    kind: Input,
                    start: 0,
                    count: 3
                },
            ]
        );
        // With gap 6 the two holding groups share one read.
        assert_eq!(
            plan_reads(&[(Holding, 10, 2), (Holding, 18, 2)], 6).len(),
            1
        );
        // Never more than 125 registers in a read.
        let far = plan_reads(&[(Holding, 0, 2), (Holding, 124, 2)], 200);
        assert_eq!(far.len(), 2);
        let big: Vec<_> = (0..200).map(|a| (Holding, a, 1)).collect();
        let reads = plan_reads(&big, 0);
        assert_eq!(
            reads.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![125, 75]
        );
    }
}
