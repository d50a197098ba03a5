//! Per-model OID maps: which OIDs a PDU family answers, what each measures,
//! its scale, and how its points are named. The maps are data, one TOML
//! file per family in `agent/src/device/snmp_maps/`, embedded at build time
//! ([`EMBEDDED`]); this module parses and checks them, says what to read
//! ([`Model::plan`]) and turns what was read into [`PointValue`]s
//! ([`Model::extract`]) without touching the network.
//!
//! A new model is a new file plus one line in [`EMBEDDED`]:
//!
//! ```toml
//! name = "apc-rpdu2"                 # what `model = "..."` names
//! description = "..."
//! sys_object_ids = ["1.3.6.1.4.1.318.1.3.4.6"]  # prefixes for model = "auto"
//! unavailable = [-1]                 # raw values meaning "not available"
//!
//! [[points]]
//! point = "outlet-{n}"               # point name: {capture} or {var}
//! column = "1.3.6.1.4.1.318.1.1.26.9.4.3.1.7"  # a table column, and
//! index = "{i}"                      # its row index pattern (literals must match);
//! # or: oid = "1.3.6.1.4.1.318.1.1.12.1.16.0"  # a scalar
//! vars = { n = "1.3.6.1.4.1.318.1.1.26.9.4.3.1.4" }   # columns with the same index
//! where = { "1.3.6.1.4.1.318.1.1.26.9.4.3.1.2" = 1 }  # keep rows whose column equals
//! unless = { }                       # drop rows whose column equals
//! decimals = "..."                   # column giving decimal digits: value / 10^d
//! measures = "power"                 # power | energy | current | voltage | temperature
//!                                    # | load (0-1) | battery_charge (0-1) | battery_runtime (s)
//! multiply = 1                       # power and gauges: raw * multiply / divide
//! divide = 1
//! uj_per_unit = 360_000_000_000      # energy: exact microjoules per raw unit
//! counter = "i32"                    # energy: register width, u32 | i32 | u64
//! ```
//!
//! Optional, for maps whose points the PDU naming rules do not place
//! (a UPS: its input, output, losses) and for detection:
//!
//! ```toml
//! generic = true                     # a standard MIB any vendor may speak (UPS-MIB)
//! identify = "1.3.6.1.2.1.33.1.1.2.0"  # a scalar that a device speaking this map answers
//! [[totals]]                         # a power computed from other points' powers
//! point = "losses"
//! add = ["input"]                    # point names; "input-*" matches a prefix
//! subtract = ["output"]
//! [places]                           # point (or "prefix-*") = tier in the device's scope
//! input = 0                          # (0: the whole; higher: parts, see `scope`)
//! "input-*" = 1
//! ```
//!
//! Point names: `device` (the whole PDU, where the MIB has a total),
//! `inlet-<n>`, `phase-<n>`, `bank-<n>`, `outlet-<n>`; ServerTech uses the
//! IDs printed on its units (`inlet-AA`, `outlet-AA1`). UPSes: `input`,
//! `input-<line>`, `output`, `output-<line>`, `losses`, `battery`.

use crate::device::scope::Place;
use crate::device::{PointValue, Value};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use vigie_protocol::GaugeQuantity;

mod spec;
#[cfg(test)]
mod tests;

use spec::*;

/// The embedded maps: file name and contents.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "apc-rpdu2.toml",
        include_str!("../snmp_maps/apc-rpdu2.toml"),
    ),
    ("apc-rpdu.toml", include_str!("../snmp_maps/apc-rpdu.toml")),
    (
        "raritan-pdu2.toml",
        include_str!("../snmp_maps/raritan-pdu2.toml"),
    ),
    (
        "servertech-sentry4.toml",
        include_str!("../snmp_maps/servertech-sentry4.toml"),
    ),
    (
        "eaton-epdu.toml",
        include_str!("../snmp_maps/eaton-epdu.toml"),
    ),
    (
        "tripplite-pdu.toml",
        include_str!("../snmp_maps/tripplite-pdu.toml"),
    ),
    ("apc-ups.toml", include_str!("../snmp_maps/apc-ups.toml")),
    ("ups-mib.toml", include_str!("../snmp_maps/ups-mib.toml")),
];

/// An object identifier as its arcs.
pub type Oid = Vec<u32>;

/// Parses dotted-decimal OID text (`1.3.6.1...`, a leading dot allowed).
pub fn parse_oid(text: &str) -> Result<Oid, String> {
    let text = text.strip_prefix('.').unwrap_or(text);
    if text.is_empty() {
        return Err("empty OID".into());
    }
    text.split('.')
        .map(|arc| {
            arc.parse::<u32>()
                .map_err(|_| format!("bad OID {text:?}: arc {arc:?}"))
        })
        .collect()
}

/// Dotted-decimal text of an OID.
pub fn oid_text(oid: &[u32]) -> String {
    oid.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// One value read from the device, as the map needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    /// Any SNMP integer type (INTEGER, Counter32/64, Gauge32, TimeTicks).
    Num(i128),
    /// An OCTET STRING, decoded lossily as UTF-8.
    Text(String),
}

/// Everything one poll read: OID to value. Absent OIDs were not answered
/// (noSuchObject, noSuchInstance, or past the end of a walked column).
pub type Snapshot = BTreeMap<Oid, Raw>;

/// What to read for one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// OIDs read with GET (scalars and fixed rows), in one request where
    /// the agent allows.
    pub get: Vec<Oid>,
    /// Columns walked with GETBULK.
    pub walk: Vec<Oid>,
}

/// What a poll turned into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// Values, in map order then row order.
    pub values: Vec<PointValue>,
    /// Map entries or rows the device answered (including unavailable
    /// values): zero means the device does not speak this map.
    pub answered: usize,
    /// Values skipped for a reason worth logging.
    pub problems: Vec<String>,
}

/// A PDU family's map, checked.
#[derive(Debug, Clone)]
pub struct Model {
    /// Name used in the configuration (`model = "apc-rpdu2"`).
    pub name: String,
    /// What it covers.
    pub description: String,
    /// sysObjectID prefixes that select it under `model = "auto"`.
    pub sys_object_ids: Vec<Oid>,
    /// A standard MIB that any vendor's device may speak (UPS-MIB): chosen
    /// under `auto` only when no vendor map fits.
    pub generic: bool,
    identify: Option<Oid>,
    unavailable: Vec<i128>,
    points: Vec<PointSpec>,
    totals: Vec<Total>,
    places: Vec<(Pattern, u8)>,
}

static MODELS: LazyLock<Result<Vec<Model>, String>> = LazyLock::new(|| {
    let models = EMBEDDED
        .iter()
        .map(|(file, text)| Model::parse(text).map_err(|e| format!("{file}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = BTreeSet::new();
    for m in &models {
        if !names.insert(m.name.as_str()) {
            return Err(format!("two maps are named {:?}", m.name));
        }
    }
    Ok(models)
});

/// Every embedded map; an error names the file that does not parse.
pub fn models() -> Result<&'static [Model], String> {
    MODELS.as_deref().map_err(Clone::clone)
}

/// The map called `name`.
pub fn model(name: &str) -> Result<&'static Model, String> {
    let all = models()?;
    all.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<_> = all.iter().map(|m| m.name.as_str()).collect();
        format!(
            "unknown SNMP model {name:?}: use \"auto\" or one of {}",
            known.join(", ")
        )
    })
}

/// Every map's name and what it covers, for messages.
pub fn catalogue() -> String {
    match models() {
        Ok(all) => all
            .iter()
            .map(|m| format!("{} ({})", m.name, m.description))
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => e,
    }
}

/// The map whose sysObjectID prefix is the longest match, if any.
pub fn detect(sys_object_id: &[u32]) -> Result<Option<&'static Model>, String> {
    Ok(models()?
        .iter()
        .flat_map(|m| m.sys_object_ids.iter().map(move |p| (p, m)))
        .filter(|(prefix, _)| sys_object_id.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, m)| m))
}

impl Model {
    /// What to read to learn whether a device speaks this map: the
    /// `identify` scalar (GET, `true`), else the first column (GETNEXT,
    /// `false`) or scalar of the plan.
    pub fn identify(&self) -> Option<(Oid, bool)> {
        if let Some(oid) = &self.identify {
            return Some((oid.clone(), true));
        }
        let plan = self.plan();
        plan.walk
            .first()
            .map(|c| (c.clone(), false))
            .or_else(|| plan.get.first().map(|o| (o.clone(), true)))
    }

    /// Where each point sits in the device, from the map's `places`; `None`
    /// when the map has none (the PDU naming rules apply). An exact name
    /// wins over a prefix.
    pub fn places(&self, points: &[&str]) -> Option<Vec<Place>> {
        if self.places.is_empty() {
            return None;
        }
        Some(
            points
                .iter()
                .filter_map(|p| {
                    let tier = self
                        .places
                        .iter()
                        .find(|(pat, _)| matches!(pat, Pattern::Exact(x) if x == p))
                        .or_else(|| self.places.iter().find(|(pat, _)| pat.matches(p)))
                        .map(|(_, tier)| *tier)?;
                    Some(Place {
                        point: (*p).to_owned(),
                        scope: String::new(),
                        tier,
                        rank: 0,
                    })
                })
                .collect(),
        )
    }

    /// The map's totals over the powers extracted so far, in order (a
    /// total may use an earlier one). A total whose terms are not all
    /// present is left out: a sum of some phases is no total.
    fn add_totals(&self, out: &mut Extracted) {
        for t in &self.totals {
            let sum = |patterns: &[Pattern], values: &[PointValue]| -> Option<f64> {
                let mut total = 0.0;
                for pat in patterns {
                    let mut found = false;
                    for v in values {
                        if let Value::PowerW(w) = v.value
                            && pat.matches(&v.point)
                        {
                            total += w;
                            found = true;
                        }
                    }
                    if !found {
                        return None;
                    }
                }
                Some(total)
            };
            let (Some(add), Some(sub)) = (sum(&t.add, &out.values), sum(&t.subtract, &out.values))
            else {
                continue;
            };
            let w = add - sub;
            if w < 0.0 {
                out.problems
                    .push(format!("{}: negative total {w} W, left out", t.point));
                continue;
            }
            out.values.push(PointValue {
                point: t.point.clone(),
                value: Value::PowerW(w),
            });
        }
    }

    /// What to read: GETs for scalars and fixed rows, walks for tables.
    pub fn plan(&self) -> ReadPlan {
        let mut plan = ReadPlan::default();
        let push = |list: &mut Vec<Oid>, oid: Oid| {
            if !list.contains(&oid) {
                list.push(oid);
            }
        };
        for p in &self.points {
            match &p.source {
                Source::Scalar(oid) => push(&mut plan.get, oid.clone()),
                Source::Column { column, index } => {
                    let fixed: Option<Vec<u32>> = index
                        .iter()
                        .map(|part| match part {
                            IndexPart::Lit(n) => Some(*n),
                            IndexPart::Cap(_) => None,
                        })
                        .collect();
                    for col in std::iter::once(column).chain(p.aux_columns()) {
                        match &fixed {
                            Some(idx) => push(&mut plan.get, [col.as_slice(), idx].concat()),
                            None => push(&mut plan.walk, col.clone()),
                        }
                    }
                }
            }
        }
        plan
    }

    /// Turns what was read into point values. Pure: the same snapshot
    /// always gives the same values.
    pub fn extract(&self, snap: &Snapshot) -> Extracted {
        let mut out = Extracted::default();
        let mut seen: BTreeSet<(String, u8)> = BTreeSet::new();
        for p in &self.points {
            match &p.source {
                Source::Scalar(oid) => {
                    if let Some(raw) = snap.get(oid) {
                        out.answered += 1;
                        let name = p.name.render(&BTreeMap::new(), |_| None);
                        if let Some(name) = name {
                            self.push_value(p, name, raw, 0, &mut seen, &mut out);
                        }
                    }
                }
                Source::Column { column, index } => {
                    let rows = snap
                        .range(column.clone()..)
                        .take_while(|(oid, _)| oid.starts_with(column));
                    for (oid, raw) in rows {
                        let idx = &oid[column.len()..];
                        let Some(caps) = match_index(index, idx) else {
                            continue;
                        };
                        out.answered += 1;
                        if !p.row_selected(snap, idx) || self.is_unavailable(raw) {
                            continue;
                        }
                        let lookup = |var: &str| {
                            p.vars
                                .iter()
                                .find(|(v, _)| v == var)
                                .and_then(|(_, col)| snap.get(&[col.as_slice(), idx].concat()))
                        };
                        let Some(name) = p.name.render(&caps, lookup) else {
                            out.problems.push(format!(
                                "row {} of {}: no usable name",
                                oid_text(idx),
                                oid_text(column)
                            ));
                            continue;
                        };
                        let digits = match &p.decimals {
                            None => 0,
                            Some(col) => match snap.get(&[col.as_slice(), idx].concat()) {
                                Some(Raw::Num(d)) if (0..=9).contains(d) => *d as u32,
                                other => {
                                    out.problems.push(format!(
                                        "{name}: decimal digits {other:?} at {}.{}",
                                        oid_text(col),
                                        oid_text(idx)
                                    ));
                                    continue;
                                }
                            },
                        };
                        self.push_value(p, name, raw, digits, &mut seen, &mut out);
                    }
                }
            }
        }
        self.add_totals(&mut out);
        out
    }

    fn is_unavailable(&self, raw: &Raw) -> bool {
        matches!(raw, Raw::Num(n) if self.unavailable.contains(n))
    }

    fn push_value(
        &self,
        p: &PointSpec,
        point: String,
        raw: &Raw,
        digits: u32,
        seen: &mut BTreeSet<(String, u8)>,
        out: &mut Extracted,
    ) {
        let n = match raw {
            Raw::Num(n) => *n,
            Raw::Text(t) => {
                out.problems
                    .push(format!("{point}: a number was expected, got text {t:?}"));
                return;
            }
        };
        if self.unavailable.contains(&n) {
            return;
        }
        let scale = 10u64.pow(digits);
        let value = match p.kind {
            Kind::Power { multiply, divide } => {
                let w = scaled(n, multiply, u64::from(divide) * scale);
                if w < 0.0 {
                    out.problems.push(format!("{point}: negative power {w} W"));
                    return;
                }
                Value::PowerW(w)
            }
            Kind::Gauge {
                quantity,
                multiply,
                divide,
            } => Value::Gauge(quantity, scaled(n, multiply, u64::from(divide) * scale)),
            Kind::Energy {
                uj_per_unit,
                max_raw,
            } => {
                let Ok(raw) = u64::try_from(n) else {
                    out.problems
                        .push(format!("{point}: negative energy register {n}"));
                    return;
                };
                if raw > max_raw {
                    out.problems.push(format!(
                        "{point}: energy register {raw} above its width ({max_raw})"
                    ));
                    return;
                }
                if uj_per_unit % scale != 0 {
                    out.problems.push(format!(
                        "{point}: {digits} decimal digits do not divide {uj_per_unit} µJ exactly"
                    ));
                    return;
                }
                Value::EnergyCounter {
                    raw,
                    uj_per_unit: uj_per_unit / scale,
                    max_raw,
                }
            }
        };
        if !seen.insert((point.clone(), kind_slot(&value))) {
            out.problems.push(format!(
                "{point}: two rows give the same point; kept the first"
            ));
            return;
        }
        out.values.push(PointValue { point, value });
    }
}

/// Which value of a point a [`Value`] is, so that a point is not reported
/// twice for the same thing.
fn kind_slot(v: &Value) -> u8 {
    match v {
        Value::PowerW(_) => 0,
        Value::EnergyCounter { .. } => 1,
        Value::Gauge(q, _) => 2 + *q as u8,
    }
}

/// `n * multiply / divide`, one rounding (exact for the integers PDUs send).
fn scaled(n: i128, multiply: u32, divide: u64) -> f64 {
    let num = n.saturating_mul(i128::from(multiply));
    num as f64 / divide as f64
}

fn match_index(pattern: &[IndexPart], idx: &[u32]) -> Option<BTreeMap<String, u32>> {
    if pattern.len() != idx.len() {
        return None;
    }
    let mut caps = BTreeMap::new();
    for (part, arc) in pattern.iter().zip(idx) {
        match part {
            IndexPart::Lit(n) if n == arc => {}
            IndexPart::Lit(_) => return None,
            IndexPart::Cap(name) => {
                caps.insert(name.clone(), *arc);
            }
        }
    }
    Some(caps)
}
