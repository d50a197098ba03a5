//! The map file format: its TOML shape, and the parsing and checks that
//! turn one file into a [`Model`] (point specs, index patterns, name
//! templates, places).

use super::*;

/// A power computed from other points' powers.
#[derive(Debug, Clone)]
pub(super) struct Total {
    pub(super) point: String,
    pub(super) add: Vec<Pattern>,
    pub(super) subtract: Vec<Pattern>,
}

/// A point name, or a prefix (`input-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub(super) fn parse(text: &str) -> Result<Pattern, String> {
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

    pub(super) fn matches(&self, point: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == point,
            Pattern::Prefix(p) => point.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PointSpec {
    pub(super) name: Template,
    pub(super) source: Source,
    pub(super) vars: Vec<(String, Oid)>,
    pub(super) where_eq: Vec<(Oid, i128)>,
    pub(super) unless: Vec<(Oid, i128)>,
    pub(super) decimals: Option<Oid>,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone)]
pub(super) enum Source {
    Scalar(Oid),
    Column { column: Oid, index: Vec<IndexPart> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum IndexPart {
    Lit(u32),
    Cap(String),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
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
pub(super) struct Template(pub(super) Vec<TplPart>);

#[derive(Debug, Clone)]
pub(super) enum TplPart {
    Text(String),
    Var(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelFile {
    pub(super) name: String,
    pub(super) description: String,
    #[serde(default)]
    pub(super) sys_object_ids: Vec<String>,
    #[serde(default)]
    pub(super) unavailable: Vec<i64>,
    #[serde(default)]
    pub(super) generic: bool,
    #[serde(default)]
    pub(super) identify: Option<String>,
    pub(super) points: Vec<PointFile>,
    #[serde(default)]
    pub(super) totals: Vec<TotalFile>,
    #[serde(default)]
    pub(super) places: BTreeMap<String, u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TotalFile {
    pub(super) point: String,
    pub(super) add: Vec<String>,
    #[serde(default)]
    pub(super) subtract: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PointFile {
    pub(super) point: String,
    #[serde(default)]
    pub(super) oid: Option<String>,
    #[serde(default)]
    pub(super) column: Option<String>,
    #[serde(default)]
    pub(super) index: Option<String>,
    #[serde(default)]
    pub(super) vars: BTreeMap<String, String>,
    #[serde(default, rename = "where")]
    pub(super) where_eq: BTreeMap<String, i64>,
    #[serde(default)]
    pub(super) unless: BTreeMap<String, i64>,
    #[serde(default)]
    pub(super) decimals: Option<String>,
    pub(super) measures: Measure,
    #[serde(default)]
    pub(super) multiply: Option<u32>,
    #[serde(default)]
    pub(super) divide: Option<u32>,
    #[serde(default)]
    pub(super) uj_per_unit: Option<u64>,
    #[serde(default)]
    pub(super) counter: Option<CounterWidth>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Measure {
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
pub(super) enum CounterWidth {
    U32,
    I32,
    U64,
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
}

impl PointSpec {
    pub(super) fn parse(p: &PointFile) -> Result<PointSpec, String> {
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
    pub(super) fn aux_columns(&self) -> impl Iterator<Item = &Oid> {
        self.vars
            .iter()
            .map(|(_, c)| c)
            .chain(self.where_eq.iter().map(|(c, _)| c))
            .chain(self.unless.iter().map(|(c, _)| c))
            .chain(self.decimals.iter())
    }

    pub(super) fn row_selected(&self, snap: &Snapshot, idx: &[u32]) -> bool {
        let cell = |col: &Oid| match snap.get(&[col.as_slice(), idx].concat()) {
            Some(Raw::Num(n)) => Some(*n),
            _ => None,
        };
        self.where_eq.iter().all(|(col, v)| cell(col) == Some(*v))
            && !self.unless.iter().any(|(col, v)| cell(col) == Some(*v))
    }
}

pub(super) fn nonzero(v: Option<u32>) -> Result<u32, String> {
    match v.unwrap_or(1) {
        0 => Err("multiply and divide must be positive".into()),
        n => Ok(n),
    }
}

pub(super) fn parse_index(text: &str) -> Result<Vec<IndexPart>, String> {
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

pub(super) fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn is_point_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Template, String> {
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

    pub(super) fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            TplPart::Var(v) => Some(v.as_str()),
            TplPart::Text(_) => None,
        })
    }

    /// The name for one row; `None` when a var has no usable value.
    pub(super) fn render<'a>(
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
