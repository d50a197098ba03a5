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

/// A power computed from other points' powers.
#[derive(Debug, Clone)]
struct Total {
    point: String,
    add: Vec<Pattern>,
    subtract: Vec<Pattern>,
}

/// A point name, or a prefix (`input-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.is_empty() || !body.chars().all(is_point_char) {
            return Err(format!("bad point pattern {text:?}"));
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    fn matches(&self, point: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == point,
            Pattern::Prefix(p) => point.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct PointSpec {
    name: Template,
    source: Source,
    vars: Vec<(String, Oid)>,
    where_eq: Vec<(Oid, i128)>,
    unless: Vec<(Oid, i128)>,
    decimals: Option<Oid>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Source {
    Scalar(Oid),
    Column { column: Oid, index: Vec<IndexPart> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IndexPart {
    Lit(u32),
    Cap(String),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Power {
        multiply: u32,
        divide: u32,
    },
    Gauge {
        quantity: GaugeQuantity,
        multiply: u32,
        divide: u32,
    },
    Energy {
        uj_per_unit: u64,
        max_raw: u64,
    },
}

#[derive(Debug, Clone)]
struct Template(Vec<TplPart>);

#[derive(Debug, Clone)]
enum TplPart {
    Text(String),
    Var(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    description: String,
    #[serde(default)]
    sys_object_ids: Vec<String>,
    #[serde(default)]
    unavailable: Vec<i64>,
    #[serde(default)]
    generic: bool,
    #[serde(default)]
    identify: Option<String>,
    points: Vec<PointFile>,
    #[serde(default)]
    totals: Vec<TotalFile>,
    #[serde(default)]
    places: BTreeMap<String, u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TotalFile {
    point: String,
    add: Vec<String>,
    #[serde(default)]
    subtract: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointFile {
    point: String,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    column: Option<String>,
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default, rename = "where")]
    where_eq: BTreeMap<String, i64>,
    #[serde(default)]
    unless: BTreeMap<String, i64>,
    #[serde(default)]
    decimals: Option<String>,
    measures: Measure,
    #[serde(default)]
    multiply: Option<u32>,
    #[serde(default)]
    divide: Option<u32>,
    #[serde(default)]
    uj_per_unit: Option<u64>,
    #[serde(default)]
    counter: Option<CounterWidth>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Measure {
    Power,
    Energy,
    Current,
    Voltage,
    Temperature,
    Load,
    BatteryCharge,
    BatteryRuntime,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CounterWidth {
    U32,
    I32,
    U64,
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
    /// Parses and checks one map file.
    pub fn parse(text: &str) -> Result<Model, String> {
        let file: ModelFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.name.is_empty() || file.name == "auto" {
            return Err(format!("bad map name {:?}", file.name));
        }
        if file.points.is_empty() {
            return Err("a map needs at least one point".into());
        }
        let sys_object_ids = file
            .sys_object_ids
            .iter()
            .map(|t| parse_oid(t))
            .collect::<Result<_, _>>()?;
        let points = file
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                PointSpec::parse(p).map_err(|e| format!("points[{i}] ({}): {e}", p.point))
            })
            .collect::<Result<_, _>>()?;
        let patterns = |list: &[String]| {
            list.iter()
                .map(|t| Pattern::parse(t))
                .collect::<Result<Vec<_>, _>>()
        };
        let totals = file
            .totals
            .iter()
            .map(|t| {
                Template::parse(&t.point)?;
                if t.point.contains('{') || t.add.is_empty() {
                    return Err(format!(
                        "total {:?}: a plain point name and at least one `add`",
                        t.point
                    ));
                }
                Ok(Total {
                    point: t.point.clone(),
                    add: patterns(&t.add)?,
                    subtract: patterns(&t.subtract)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let places = file
            .places
            .iter()
            .map(|(p, tier)| Ok((Pattern::parse(p)?, *tier)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Model {
            name: file.name,
            description: file.description,
            sys_object_ids,
            generic: file.generic,
            identify: file.identify.as_deref().map(parse_oid).transpose()?,
            unavailable: file.unavailable.into_iter().map(i128::from).collect(),
            points,
            totals,
            places,
        })
    }

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

impl PointSpec {
    fn parse(p: &PointFile) -> Result<PointSpec, String> {
        let source = match (&p.oid, &p.column, &p.index) {
            (Some(oid), None, None) => Source::Scalar(parse_oid(oid)?),
            (None, Some(column), Some(index)) => Source::Column {
                column: parse_oid(column)?,
                index: parse_index(index)?,
            },
            _ => return Err("give either `oid`, or `column` and `index`".into()),
        };
        let is_scalar = matches!(source, Source::Scalar(_));
        if is_scalar
            && (!p.vars.is_empty()
                || !p.where_eq.is_empty()
                || !p.unless.is_empty()
                || p.decimals.is_some())
        {
            return Err("vars, where, unless and decimals need a `column`".into());
        }
        let vars = p
            .vars
            .iter()
            .map(|(k, v)| Ok((k.clone(), parse_oid(v)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let conditions = |m: &BTreeMap<String, i64>| {
            m.iter()
                .map(|(k, v)| Ok((parse_oid(k)?, i128::from(*v))))
                .collect::<Result<Vec<_>, String>>()
        };
        let name = Template::parse(&p.point)?;
        let captures: BTreeSet<&str> = match &source {
            Source::Column { index, .. } => index
                .iter()
                .filter_map(|part| match part {
                    IndexPart::Cap(c) => Some(c.as_str()),
                    IndexPart::Lit(_) => None,
                })
                .collect(),
            Source::Scalar(_) => BTreeSet::new(),
        };
        for var in name.vars() {
            if !captures.contains(var) && !p.vars.contains_key(var) {
                return Err(format!("{{{var}}} is neither an index capture nor a var"));
            }
        }
        for var in p.vars.keys() {
            if captures.contains(var.as_str()) {
                return Err(format!("{var} is both an index capture and a var"));
            }
        }
        let gauge = |quantity| -> Result<Kind, String> {
            if p.uj_per_unit.is_some() || p.counter.is_some() {
                return Err("uj_per_unit and counter are for energy".into());
            }
            Ok(Kind::Gauge {
                quantity,
                multiply: nonzero(p.multiply)?,
                divide: nonzero(p.divide)?,
            })
        };
        let kind = match p.measures {
            Measure::Power => match gauge(GaugeQuantity::PowerWatts)? {
                Kind::Gauge {
                    multiply, divide, ..
                } => Kind::Power { multiply, divide },
                other => other,
            },
            Measure::Current => gauge(GaugeQuantity::CurrentAmperes)?,
            Measure::Voltage => gauge(GaugeQuantity::VoltageVolts)?,
            Measure::Temperature => gauge(GaugeQuantity::TemperatureCelsius)?,
            Measure::Load => gauge(GaugeQuantity::UtilizationRatio)?,
            Measure::BatteryCharge => gauge(GaugeQuantity::BatteryChargeRatio)?,
            Measure::BatteryRuntime => gauge(GaugeQuantity::BatteryRuntimeSeconds)?,
            Measure::Energy => {
                if p.multiply.is_some() || p.divide.is_some() {
                    return Err("energy is scaled by uj_per_unit, not multiply/divide".into());
                }
                let (Some(uj_per_unit), Some(width)) = (p.uj_per_unit, p.counter) else {
                    return Err("energy needs uj_per_unit and counter".into());
                };
                if uj_per_unit == 0 {
                    return Err("uj_per_unit must be positive".into());
                }
                Kind::Energy {
                    uj_per_unit,
                    max_raw: match width {
                        CounterWidth::U32 => u64::from(u32::MAX),
                        CounterWidth::I32 => i32::MAX as u64,
                        CounterWidth::U64 => u64::MAX,
                    },
                }
            }
        };
        Ok(PointSpec {
            name,
            source,
            vars,
            where_eq: conditions(&p.where_eq)?,
            unless: conditions(&p.unless)?,
            decimals: p.decimals.as_deref().map(parse_oid).transpose()?,
            kind,
        })
    }

    /// Columns read beside the value column: vars, conditions, decimals.
    fn aux_columns(&self) -> impl Iterator<Item = &Oid> {
        self.vars
            .iter()
            .map(|(_, c)| c)
            .chain(self.where_eq.iter().map(|(c, _)| c))
            .chain(self.unless.iter().map(|(c, _)| c))
            .chain(self.decimals.iter())
    }

    fn row_selected(&self, snap: &Snapshot, idx: &[u32]) -> bool {
        let cell = |col: &Oid| match snap.get(&[col.as_slice(), idx].concat()) {
            Some(Raw::Num(n)) => Some(*n),
            _ => None,
        };
        self.where_eq.iter().all(|(col, v)| cell(col) == Some(*v))
            && !self.unless.iter().any(|(col, v)| cell(col) == Some(*v))
    }
}

fn nonzero(v: Option<u32>) -> Result<u32, String> {
    match v.unwrap_or(1) {
        0 => Err("multiply and divide must be positive".into()),
        n => Ok(n),
    }
}

fn parse_index(text: &str) -> Result<Vec<IndexPart>, String> {
    if text.is_empty() {
        return Err("empty index".into());
    }
    text.split('.')
        .map(|part| {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if is_ident(name) {
                    Ok(IndexPart::Cap(name.to_owned()))
                } else {
                    Err(format!("bad capture {part:?} in index {text:?}"))
                }
            } else {
                part.parse()
                    .map(IndexPart::Lit)
                    .map_err(|_| format!("bad index part {part:?} in {text:?}"))
            }
        })
        .collect()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_point_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (lit, tail) = rest.split_at(open);
            let close = tail
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {text:?}"))?;
            let var = &tail[1..close];
            if !is_ident(var) {
                return Err(format!("bad placeholder {{{var}}} in {text:?}"));
            }
            if !lit.is_empty() {
                parts.push(TplPart::Text(lit.to_owned()));
            }
            parts.push(TplPart::Var(var.to_owned()));
            rest = &tail[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TplPart::Text(rest.to_owned()));
        }
        let literal_ok = parts.iter().all(|p| match p {
            TplPart::Text(t) => t.chars().all(is_point_char),
            TplPart::Var(_) => true,
        });
        if parts.is_empty() || !literal_ok {
            return Err(format!("bad point name {text:?}: use [A-Za-z0-9._:-]"));
        }
        Ok(Template(parts))
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            TplPart::Var(v) => Some(v.as_str()),
            TplPart::Text(_) => None,
        })
    }

    /// The name for one row; `None` when a var has no usable value.
    fn render<'a>(
        &self,
        caps: &BTreeMap<String, u32>,
        lookup: impl Fn(&str) -> Option<&'a Raw>,
    ) -> Option<String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                TplPart::Text(t) => out.push_str(t),
                TplPart::Var(v) => match caps.get(v) {
                    Some(n) => out.push_str(&n.to_string()),
                    None => match lookup(v)? {
                        Raw::Num(n) => out.push_str(&n.to_string()),
                        Raw::Text(t) => {
                            let t = t.trim();
                            if t.is_empty() {
                                return None;
                            }
                            // Device-given labels: keep the point charset.
                            out.extend(t.chars().map(|c| if is_point_char(c) { c } else { '_' }));
                        }
                    },
                },
            }
        }
        Some(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn oid(t: &str) -> Oid {
        parse_oid(t).unwrap()
    }

    #[test]
    fn every_embedded_map_parses_and_names_are_unique() {
        let all = models().unwrap();
        assert_eq!(all.len(), EMBEDDED.len());
        for m in all {
            assert!(
                !m.plan().get.is_empty() || !m.plan().walk.is_empty(),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn detection_takes_the_longest_prefix() {
        let m = detect(&oid("1.3.6.1.4.1.318.1.3.4.6")).unwrap().unwrap();
        assert_eq!(m.name, "apc-rpdu2");
        let m = detect(&oid("1.3.6.1.4.1.318.1.3.4.8")).unwrap().unwrap();
        assert_eq!(m.name, "apc-rpdu");
        let m = detect(&oid("1.3.6.1.4.1.13742.6")).unwrap().unwrap();
        assert_eq!(m.name, "raritan-pdu2");
        assert!(detect(&oid("1.3.6.1.4.1.9.1.1")).unwrap().is_none());
        assert!(model("nope").unwrap_err().contains("apc-rpdu2"));
    }

    const TEST_MAP: &str = r#"
        name = "test"
        description = "t"
        unavailable = [-1]
        [[points]]
        point = "device"
        oid = "1.9.1.0"
        measures = "power"
        multiply = 10
        [[points]]
        point = "outlet-{n}"
        column = "1.9.2.1.5"
        index = "1.{i}"
        vars = { n = "1.9.2.1.2" }
        where = { "1.9.2.1.3" = 1 }
        measures = "current"
        divide = 10
        [[points]]
        point = "outlet-{n}"
        column = "1.9.2.1.6"
        index = "1.{i}"
        vars = { n = "1.9.2.1.2" }
        decimals = "1.9.3.1"
        measures = "energy"
        uj_per_unit = 3_600_000_000
        counter = "u32"
    "#;

    #[test]
    fn plan_gets_scalars_and_walks_columns_once() {
        let m = Model::parse(TEST_MAP).unwrap();
        let plan = m.plan();
        assert_eq!(plan.get, vec![oid("1.9.1.0")]);
        assert_eq!(
            plan.walk,
            vec![
                oid("1.9.2.1.5"),
                oid("1.9.2.1.2"),
                oid("1.9.2.1.3"),
                oid("1.9.2.1.6"),
                oid("1.9.3.1")
            ]
        );
    }

    #[test]
    fn extraction_scales_names_filters_and_skips() {
        let m = Model::parse(TEST_MAP).unwrap();
        let mut snap = Snapshot::new();
        let mut put = |o: &str, r: Raw| {
            snap.insert(oid(o), r);
        };
        put("1.9.1.0", Raw::Num(121));
        // Row 1.1: label "A 1", module 1; row 1.2: module 2 (filtered out).
        put("1.9.2.1.2.1.1", Raw::Text("A 1".into()));
        put("1.9.2.1.2.1.2", Raw::Num(2));
        put("1.9.2.1.3.1.1", Raw::Num(1));
        put("1.9.2.1.3.1.2", Raw::Num(2));
        put("1.9.2.1.5.1.1", Raw::Num(16));
        put("1.9.2.1.5.1.2", Raw::Num(7));
        put("1.9.2.1.5.2.1", Raw::Num(9)); // pdu 2: index literal does not match
        // Energy: 1 decimal digit => units of 0.1 Wh; row 2 unavailable.
        put("1.9.2.1.6.1.1", Raw::Num(12345));
        put("1.9.2.1.6.1.2", Raw::Num(-1));
        put("1.9.3.1.1.1", Raw::Num(1));
        let ex = m.extract(&snap);
        assert_eq!(
            ex.values,
            vec![
                PointValue {
                    point: "device".into(),
                    value: Value::PowerW(1210.0)
                },
                PointValue {
                    point: "outlet-A_1".into(),
                    value: Value::Gauge(GaugeQuantity::CurrentAmperes, 1.6)
                },
                PointValue {
                    point: "outlet-A_1".into(),
                    value: Value::EnergyCounter {
                        raw: 12345,
                        uj_per_unit: 360_000_000,
                        max_raw: u64::from(u32::MAX)
                    }
                },
            ]
        );
        assert!(ex.problems.is_empty(), "{:?}", ex.problems);
        assert_eq!(ex.answered, 1 + 2 + 2);
    }

    #[test]
    fn bad_values_are_reported_not_invented() {
        let m = Model::parse(TEST_MAP).unwrap();
        let mut snap = Snapshot::new();
        snap.insert(oid("1.9.1.0"), Raw::Text("n/a".into()));
        snap.insert(oid("1.9.2.1.6.1.1"), Raw::Num(i128::from(u32::MAX) + 1));
        snap.insert(oid("1.9.2.1.2.1.1"), Raw::Num(1));
        snap.insert(oid("1.9.3.1.1.1"), Raw::Num(0));
        let ex = m.extract(&snap);
        assert!(ex.values.is_empty());
        assert_eq!(ex.problems.len(), 2, "{:?}", ex.problems);
        assert!(m.extract(&Snapshot::new()).answered == 0);
    }

    const UPS_MAP: &str = r#"
        name = "ups"
        description = "t"
        generic = true
        identify = "1.9.0.0"
        [[points]]
        point = "in-{n}"
        column = "1.9.1"
        index = "{n}"
        measures = "power"
        [[points]]
        point = "out"
        oid = "1.9.2.0"
        measures = "power"
        [[points]]
        point = "out"
        oid = "1.9.3.0"
        measures = "load"
        divide = 100
        [[points]]
        point = "battery"
        oid = "1.9.4.0"
        measures = "battery_runtime"
        multiply = 60
        [[totals]]
        point = "in"
        add = ["in-*"]
        [[totals]]
        point = "losses"
        add = ["in"]
        subtract = ["out"]
        [places]
        in = 0
        "in-*" = 1
        out = 1
        losses = 1
    "#;

    #[test]
    fn totals_add_and_subtract_powers_and_need_every_term() {
        let m = Model::parse(UPS_MAP).unwrap();
        assert!(m.generic);
        assert_eq!(m.identify(), Some((oid("1.9.0.0"), true)));
        let mut snap = Snapshot::new();
        snap.insert(oid("1.9.1.1"), Raw::Num(400));
        snap.insert(oid("1.9.1.2"), Raw::Num(350));
        snap.insert(oid("1.9.2.0"), Raw::Num(700));
        snap.insert(oid("1.9.3.0"), Raw::Num(35));
        snap.insert(oid("1.9.4.0"), Raw::Num(12));
        let ex = m.extract(&snap);
        let get = |p: &str| -> Vec<Value> {
            ex.values
                .iter()
                .filter(|v| v.point == p)
                .map(|v| v.value)
                .collect()
        };
        assert_eq!(get("in"), vec![Value::PowerW(750.0)]);
        assert_eq!(get("losses"), vec![Value::PowerW(50.0)]);
        assert_eq!(
            get("out"),
            vec![
                Value::PowerW(700.0),
                Value::Gauge(GaugeQuantity::UtilizationRatio, 0.35)
            ]
        );
        assert_eq!(
            get("battery"),
            vec![Value::Gauge(GaugeQuantity::BatteryRuntimeSeconds, 720.0)]
        );
        // No output power: no losses (a difference with a missing term
        // would be the whole input).
        snap.remove(&oid("1.9.2.0"));
        let ex = m.extract(&snap);
        assert!(ex.values.iter().any(|v| v.point == "in"));
        assert!(!ex.values.iter().any(|v| v.point == "losses"));
        // Output above input (meters disagree at low load): left out, said.
        snap.insert(oid("1.9.2.0"), Raw::Num(800));
        let ex = m.extract(&snap);
        assert!(!ex.values.iter().any(|v| v.point == "losses"));
        assert!(ex.problems.iter().any(|p| p.contains("losses")), "{ex:?}");
    }

    #[test]
    fn map_places_prefer_an_exact_name_and_leave_others_out() {
        let m = Model::parse(UPS_MAP).unwrap();
        let places = m
            .places(&["in", "in-1", "out", "losses", "battery"])
            .unwrap();
        let tier = |p: &str| places.iter().find(|x| x.point == p).map(|x| x.tier);
        assert_eq!(
            (tier("in"), tier("in-1"), tier("out"), tier("losses")),
            (Some(0), Some(1), Some(1), Some(1))
        );
        assert_eq!(tier("battery"), None);
        // PDU maps have no places: the naming rules apply.
        assert!(
            Model::parse(TEST_MAP)
                .unwrap()
                .places(&["device"])
                .is_none()
        );
        assert_eq!(
            Model::parse(TEST_MAP).unwrap().identify(),
            Some((oid("1.9.2.1.5"), false))
        );
    }

    #[test]
    fn every_map_is_listed_and_ups_and_tripp_lite_ids_select_their_maps() {
        let all = catalogue();
        for m in models().unwrap() {
            assert!(all.contains(&format!("{} (", m.name)), "{all}");
        }
        let m = detect(&oid("1.3.6.1.4.1.318.1.3.27")).unwrap().unwrap();
        assert_eq!(m.name, "apc-ups");
        let m = detect(&oid("1.3.6.1.4.1.318.1.3.2.12")).unwrap().unwrap();
        assert_eq!(m.name, "apc-ups");
        let m = detect(&oid("1.3.6.1.4.1.850.1.1.1")).unwrap().unwrap();
        assert_eq!(m.name, "tripplite-pdu");
        // The standard map has no sysObjectID: only the device's answers
        // select it.
        assert!(model("ups-mib").unwrap().sys_object_ids.is_empty());
        assert!(model("ups-mib").unwrap().generic);
    }

    #[test]
    fn malformed_maps_are_refused() {
        for (bad, why) in [
            (
                r#"oid = "1.2" 
                column = "1.3""#,
                "either",
            ),
            (
                r#"column = "1.3"
                index = "{i}"
                point_x = 1"#,
                "unknown field",
            ),
        ] {
            let text = format!(
                "name = \"x\"\ndescription = \"\"\n[[points]]\npoint = \"p\"\nmeasures = \"power\"\n{bad}\n"
            );
            let err = Model::parse(&text).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let base = |extra: &str| {
            format!(
                "name = \"x\"\ndescription = \"\"\n[[points]]\ncolumn = \"1.3\"\nindex = \"{{i}}\"\n{extra}\n"
            )
        };
        for (extra, why) in [
            ("point = \"o-{n}\"\nmeasures = \"power\"", "neither"),
            ("point = \"o p\"\nmeasures = \"power\"", "bad point name"),
            ("point = \"o\"\nmeasures = \"energy\"", "uj_per_unit"),
            (
                "point = \"o\"\nmeasures = \"energy\"\nuj_per_unit = 1\ncounter = \"u32\"\ndivide = 10",
                "not multiply",
            ),
            (
                "point = \"o\"\nmeasures = \"power\"\ndivide = 0",
                "positive",
            ),
        ] {
            let err = Model::parse(&base(extra)).unwrap_err();
            assert!(err.contains(why), "{extra}: {err}");
        }
    }
}
