//! Intensity series read from files: RTE eCO2mix exports, Electricity Maps
//! CSV exports and Carbon Intensity API JSON. Parsing never touches the
//! file system; [`Series::load`] reads the file and hands the bytes over.

use super::time::{self, LocalOrInstant, ParisLocal, Step};
use super::{
    Basis, FetchFuture, GridError, Intensity, IntensityPoint, Provider, check_range, checked_value,
    sort_dedup,
};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use vigie_energy::{HOUR_MS, MINUTE_MS};

/// Source name of eCO2mix points (files and the ODRE API alike, so that
/// both fill the same rows of the store).
pub const ECO2MIX_SOURCE: &str = "rte-eco2mix";
/// Source name of Electricity Maps points (CSV exports and the API).
pub const ELECTRICITY_MAPS_SOURCE: &str = "electricitymaps";
/// Source name of Carbon Intensity API points (files and the API).
pub const CARBON_INTENSITY_SOURCE: &str = "neso-carbon-intensity";

/// The formats [`Series::load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// RTE eCO2mix national export, see [`parse_eco2mix`].
    Eco2mix,
    /// Electricity Maps CSV export, see [`parse_electricity_maps_csv`].
    ElectricityMapsCsv,
    /// Carbon Intensity API JSON, see [`parse_carbon_intensity_json`].
    CarbonIntensityJson,
}

/// Points read from a file, and the rows that held no value.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Points, ordered by start.
    pub points: Vec<IntensityPoint>,
    /// Rows left out: empty, without a value (not yet published), a
    /// trailing notice, or a repeat of an earlier row's time.
    pub skipped_rows: usize,
}

/// Text of a file: UTF-8 (a byte-order mark dropped), else Latin-1, which
/// is what RTE's own downloads use.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// Fields of one delimited line; double quotes group and `""` escapes.
fn split_fields(line: &str, sep: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Lines without their CR, numbered from 1.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

fn normalise(header: &str) -> String {
    header.trim().trim_matches('"').trim().to_lowercase()
}

fn format_error(what: &str, line: usize, detail: impl Into<String>) -> GridError {
    GridError::Format {
        what: format!("{what} line {line}"),
        detail: detail.into(),
    }
}

/// A number as written in these files; a decimal comma is accepted where
/// the separator is not a comma.
fn number(cell: &str, sep: char) -> Option<f64> {
    let cell = cell.trim();
    if sep != ',' && cell.contains(',') {
        cell.replace(',', ".").parse().ok()
    } else {
        cell.parse().ok()
    }
}

/// Reads an RTE eCO2mix national export into direct average intensities
/// of zone `FR` from the `Taux de CO2 (g/kWh)` column.
///
/// Accepted: the ODRE export (UTF-8, `;`, CRLF, `Date - Heure` with its
/// offset, rows in any order) and RTE's own download (Latin-1, tab,
/// `Date` and `Heures` in French legal time, a notice as last line).
/// Column names are found in the header (`taux_co2` and `date_heure` too).
/// Empty rows and rows without a CO2 value (not yet published) are
/// skipped and counted. Each value lasts the series' step (15 min in the
/// real-time data). `taux_co2` counts the direct emissions of French
/// generation, hence [`Basis::Direct`].
pub fn parse_eco2mix(bytes: &[u8], retrieved_ms: i64) -> Result<Parsed, GridError> {
    const WHAT: &str = "eCO2mix";
    let text = decode(bytes);
    let mut lines = lines(&text).filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(format_error(WHAT, 1, "empty file"));
    };
    let sep = [';', '\t', ',']
        .into_iter()
        .max_by_key(|&c| header.matches(c).count())
        .unwrap_or(';');
    let columns: Vec<String> = split_fields(header, sep)
        .iter()
        .map(|h| normalise(h))
        .collect();
    let find = |names: &[&str]| columns.iter().position(|c| names.contains(&c.as_str()));
    let co2 = find(&["taux de co2 (g/kwh)", "taux_co2", "taux de co2"])
        .ok_or_else(|| format_error(WHAT, 1, "no `Taux de CO2 (g/kWh)` column"))?;
    let when = match find(&["date - heure", "date_heure"]) {
        Some(i) => When::DateTime(i),
        None => match (find(&["date"]), find(&["heures", "heure"])) {
            (Some(d), Some(h)) => When::DateAndTime(d, h),
            _ => {
                return Err(format_error(
                    WHAT,
                    1,
                    "no `Date - Heure` column, nor `Date` and `Heures`",
                ));
            }
        },
    };
    let perimeter = find(&["périmètre", "perimetre"]);

    let mut skipped = 0;
    let mut rows: Vec<(i64, f64)> = Vec::new();
    let mut seen: HashSet<i64> = HashSet::new();
    for (n, line) in lines {
        let fields = split_fields(line, sep);
        if fields.len() == 1 || fields.iter().all(|f| f.trim().is_empty()) {
            // RTE's downloads end with a one-field notice.
            skipped += 1;
            continue;
        }
        let cell = |i: usize| fields.get(i).map_or("", |s| s.trim());
        if let Some(p) = perimeter
            && !cell(p).is_empty()
            && cell(p) != "France"
        {
            return Err(format_error(
                WHAT,
                n,
                format!("perimeter {:?}: only the national file is read", cell(p)),
            ));
        }
        let value = cell(co2);
        if value.is_empty() || value == "ND" || value == "-" {
            skipped += 1;
            continue;
        }
        let value =
            number(value, sep).ok_or_else(|| format_error(WHAT, n, format!("CO2 {value:?}")))?;
        let start = match when {
            When::DateTime(i) => {
                let t = time::parse_local_or_instant(cell(i))
                    .map_err(|e| format_error(WHAT, n, e.to_string()))?;
                match t {
                    LocalOrInstant::Instant(t) => Some(t),
                    LocalOrInstant::Local(local) => paris(local, &seen),
                }
            }
            When::DateAndTime(d, h) => {
                let text = format!("{}T{}", cell(d), cell(h));
                match time::parse_local_or_instant(&text)
                    .map_err(|e| format_error(WHAT, n, e.to_string()))?
                {
                    LocalOrInstant::Instant(t) => Some(t),
                    LocalOrInstant::Local(local) => paris(local, &seen),
                }
            }
        };
        let Some(start) = start else {
            return Err(format_error(
                WHAT,
                n,
                "a time in the hour skipped when summer time starts",
            ));
        };
        if !seen.insert(start) {
            skipped += 1;
            continue;
        }
        let value = checked_value(value, || format!("{WHAT} line {n}"))?;
        rows.push((start, value.0));
    }
    rows.sort_by_key(|r| r.0);
    let starts: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let step = time::infer_step(&starts, Step::Fixed(15 * MINUTE_MS));
    let points = rows
        .into_iter()
        .map(|(start, v)| IntensityPoint {
            zone: "FR".into(),
            start_ms: start,
            end_ms: step.end(start),
            intensity: Intensity::Average(vigie_energy::GramsPerKwh(v)),
            basis: Basis::Direct,
            estimated: false,
            source: ECO2MIX_SOURCE.into(),
            retrieved_ms,
        })
        .collect();
    Ok(Parsed {
        points,
        skipped_rows: skipped,
    })
}

#[derive(Clone, Copy)]
enum When {
    DateTime(usize),
    DateAndTime(usize, usize),
}

/// French wall-clock time to an instant; in the repeated hour of October
/// the first occurrence is summer time, the second winter time.
fn paris(local_ms: i64, seen: &HashSet<i64>) -> Option<i64> {
    match time::paris_local_to_utc(local_ms) {
        ParisLocal::Single(t) => Some(t),
        ParisLocal::Ambiguous(summer, winter) => Some(if seen.contains(&summer) {
            winter
        } else {
            summer
        }),
        ParisLocal::Skipped => None,
    }
}

/// Reads an Electricity Maps CSV export (data portal): `Datetime (UTC)`,
/// `Zone Id`, `Carbon Intensity gCO₂eq/kWh (direct)`, `Carbon Intensity
/// gCO₂eq/kWh (life cycle assessment)` (or `(Life cycle)`), and `Data
/// Estimated`. Each row gives one average point per basis present, in
/// zone `Zone Id`. The step (hourly, daily, monthly, yearly) is inferred
/// per zone; one row alone is taken as hourly.
pub fn parse_electricity_maps_csv(bytes: &[u8], retrieved_ms: i64) -> Result<Parsed, GridError> {
    const WHAT: &str = "Electricity Maps CSV";
    let text = decode(bytes);
    let mut lines = lines(&text).filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(format_error(WHAT, 1, "empty file"));
    };
    let columns: Vec<String> = split_fields(header, ',')
        .iter()
        .map(|h| normalise(h))
        .collect();
    let position = |pred: &dyn Fn(&str) -> bool| columns.iter().position(|c| pred(c));
    let datetime = position(&|c| c.starts_with("datetime"))
        .ok_or_else(|| format_error(WHAT, 1, "no `Datetime (UTC)` column"))?;
    let zone_col = position(&|c| c == "zone id" || c == "zone_id" || c == "zone")
        .ok_or_else(|| format_error(WHAT, 1, "no `Zone Id` column"))?;
    let is_ci = |c: &str| c.starts_with("carbon intensity") || c.starts_with("carbon_intensity");
    let direct = position(&|c| is_ci(c) && c.contains("direct"));
    let lifecycle = position(&|c| {
        is_ci(c) && (c.contains("life cycle") || c.contains("lifecycle") || c.contains("lca"))
    });
    let estimated_col = position(&|c| c == "data estimated" || c == "data_estimated");
    let bases: Vec<(usize, Basis)> = [(direct, Basis::Direct), (lifecycle, Basis::Lifecycle)]
        .into_iter()
        .filter_map(|(c, b)| c.map(|c| (c, b)))
        .collect();
    if bases.is_empty() {
        return Err(format_error(WHAT, 1, "no carbon intensity column"));
    }

    let mut skipped = 0;
    // Per zone: (start, estimated, [(basis, value)]).
    type Row = (i64, bool, Vec<(Basis, f64)>);
    let mut by_zone: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i64)> = BTreeSet::new();
    for (n, line) in lines {
        let fields = split_fields(line, ',');
        let cell = |i: usize| fields.get(i).map_or("", |s| s.trim());
        if fields.iter().all(|f| f.trim().is_empty()) {
            skipped += 1;
            continue;
        }
        let start =
            time::parse_utc(cell(datetime)).map_err(|e| format_error(WHAT, n, e.to_string()))?;
        let zone = cell(zone_col);
        if zone.is_empty() {
            return Err(format_error(WHAT, n, "empty zone"));
        }
        let mut values = Vec::new();
        for &(col, basis) in &bases {
            let v = cell(col);
            if v.is_empty() {
                continue;
            }
            let v = number(v, ',').ok_or_else(|| format_error(WHAT, n, format!("value {v:?}")))?;
            values.push((basis, checked_value(v, || format!("{WHAT} line {n}"))?.0));
        }
        if values.is_empty() || !seen.insert((zone.to_owned(), start)) {
            skipped += 1;
            continue;
        }
        let estimated = estimated_col
            .is_some_and(|c| matches!(cell(c).to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        by_zone
            .entry(zone.to_owned())
            .or_default()
            .push((start, estimated, values));
    }
    let mut points = Vec::new();
    for (zone, rows) in by_zone {
        let starts: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let step = time::infer_step(&starts, Step::Fixed(HOUR_MS));
        for (start, estimated, values) in rows {
            for (basis, v) in values {
                points.push(IntensityPoint {
                    zone: zone.clone(),
                    start_ms: start,
                    end_ms: step.end(start),
                    intensity: Intensity::Average(vigie_energy::GramsPerKwh(v)),
                    basis,
                    estimated,
                    source: ELECTRICITY_MAPS_SOURCE.into(),
                    retrieved_ms,
                });
            }
        }
    }
    sort_dedup(&mut points);
    Ok(Parsed {
        points,
        skipped_rows: skipped,
    })
}

/// Carbon Intensity API response body (national endpoints).
#[derive(Deserialize)]
pub(crate) struct CiBody {
    pub(crate) data: Vec<CiPeriod>,
}

#[derive(Deserialize)]
pub(crate) struct CiPeriod {
    from: String,
    to: String,
    intensity: CiIntensity,
}

#[derive(Deserialize)]
struct CiIntensity {
    forecast: Option<f64>,
    actual: Option<f64>,
}

/// Points of a Carbon Intensity API body (`/intensity/...`), zone `zone`:
/// the actual value when published, else the forecast flagged estimated.
/// The API uses direct (operational) emission factors. Periods with
/// neither are skipped.
pub(crate) fn carbon_intensity_points(
    body: CiBody,
    zone: &str,
    what: &str,
    retrieved_ms: i64,
) -> Result<Parsed, GridError> {
    let mut points = Vec::with_capacity(body.data.len());
    let mut skipped = 0;
    for (i, p) in body.data.into_iter().enumerate() {
        let at = || format!("{what} data[{i}]");
        let bad = |e: time::BadTimestamp| GridError::Format {
            what: at(),
            detail: e.to_string(),
        };
        let start = time::parse_instant(&p.from).map_err(bad)?;
        let end = time::parse_instant(&p.to).map_err(bad)?;
        if end <= start {
            return Err(GridError::Format {
                what: at(),
                detail: format!("period {} to {} is empty", p.from, p.to),
            });
        }
        let (value, estimated) = match (p.intensity.actual, p.intensity.forecast) {
            (Some(a), _) => (a, false),
            (None, Some(f)) => (f, true),
            (None, None) => {
                skipped += 1;
                continue;
            }
        };
        points.push(IntensityPoint {
            zone: zone.to_owned(),
            start_ms: start,
            end_ms: end,
            intensity: Intensity::Average(checked_value(value, at)?),
            basis: Basis::Direct,
            estimated,
            source: CARBON_INTENSITY_SOURCE.into(),
            retrieved_ms,
        });
    }
    let before = points.len();
    sort_dedup(&mut points);
    skipped += before - points.len();
    Ok(Parsed {
        points,
        skipped_rows: skipped,
    })
}

/// Reads a saved Carbon Intensity API response
/// (`data[{from, to, intensity{forecast, actual, index}}]`) for zone
/// `zone` (`GB` for the national endpoints).
pub fn parse_carbon_intensity_json(
    bytes: &[u8],
    zone: &str,
    retrieved_ms: i64,
) -> Result<Parsed, GridError> {
    let what = "Carbon Intensity JSON";
    let body: CiBody = serde_json::from_slice(bytes).map_err(|e| GridError::Format {
        what: what.into(),
        detail: format!("unexpected JSON: {e}"),
    })?;
    carbon_intensity_points(body, zone, what, retrieved_ms)
}

/// A series held in memory (from a file), answering like any provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    source: String,
    points: Vec<IntensityPoint>,
    skipped_rows: usize,
}

impl Series {
    /// A series of `points` (sorted here), answering as `source`.
    pub fn new(source: impl Into<String>, mut points: Vec<IntensityPoint>) -> Self {
        sort_dedup(&mut points);
        Series {
            source: source.into(),
            points,
            skipped_rows: 0,
        }
    }

    /// Reads `path` in `format`. `zone` names the zone of Carbon Intensity
    /// JSON (other formats carry theirs); `retrieved_ms` is when the file
    /// was obtained.
    pub fn load(
        path: &Path,
        format: FileFormat,
        zone: &str,
        retrieved_ms: i64,
    ) -> Result<Self, GridError> {
        let bytes = std::fs::read(path).map_err(|source| GridError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let (source, parsed) = match format {
            FileFormat::Eco2mix => (ECO2MIX_SOURCE, parse_eco2mix(&bytes, retrieved_ms)),
            FileFormat::ElectricityMapsCsv => (
                ELECTRICITY_MAPS_SOURCE,
                parse_electricity_maps_csv(&bytes, retrieved_ms),
            ),
            FileFormat::CarbonIntensityJson => (
                CARBON_INTENSITY_SOURCE,
                parse_carbon_intensity_json(&bytes, zone, retrieved_ms),
            ),
        };
        let parsed = parsed.map_err(|e| match e {
            GridError::Format { what, detail } => GridError::Format {
                what: format!("{}: {what}", path.display()),
                detail,
            },
            e => e,
        })?;
        Ok(Series {
            source: source.into(),
            points: parsed.points,
            skipped_rows: parsed.skipped_rows,
        })
    }

    /// All points, ordered by start.
    pub fn points(&self) -> &[IntensityPoint] {
        &self.points
    }

    /// Rows of the file that held no value.
    pub fn skipped_rows(&self) -> usize {
        self.skipped_rows
    }

    /// Points of `zone` meeting `[from_ms, to_ms)`.
    pub fn between(&self, zone: &str, from_ms: i64, to_ms: i64) -> Vec<IntensityPoint> {
        self.points
            .iter()
            .filter(|p| p.zone == zone && p.overlaps(from_ms, to_ms))
            .cloned()
            .collect()
    }
}

impl Provider for Series {
    fn source(&self) -> &str {
        &self.source
    }

    /// The file's points; `retrieved_ms` stays the file's, not `now_ms`.
    fn fetch<'a>(
        &'a self,
        zone: &'a str,
        from_ms: i64,
        to_ms: i64,
        _now_ms: i64,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            check_range(from_ms, to_ms)?;
            if !self.points.iter().any(|p| p.zone == zone) {
                return Err(GridError::UnknownZone {
                    provider: self.source.clone(),
                    zone: zone.to_owned(),
                });
            }
            Ok(self.between(zone, from_ms, to_ms))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grid_files_split_fields_quotes() {
        assert_eq!(
            split_fields(r#"a,"b, c","d ""e""",,"#, ','),
            ["a", "b, c", r#"d "e""#, "", ""]
        );
        assert_eq!(split_fields("x;y", ';'), ["x", "y"]);
    }

    #[test]
    fn grid_files_latin1_fallback() {
        assert_eq!(decode(b"P\xe9rim\xe8tre"), "Périmètre");
        assert_eq!(decode("\u{feff}Périmètre".as_bytes()), "Périmètre");
    }

    #[test]
    fn grid_files_eco2mix_rejects_regional_and_garbage() {
        let regional = "Périmètre;Date - Heure;Taux de CO2 (g/kWh)\r\nBretagne;2021-12-01T00:00:00+01:00;12\r\n";
        assert!(matches!(
            parse_eco2mix(regional.as_bytes(), 0),
            Err(GridError::Format { .. })
        ));
        let bad = "Date - Heure;Taux de CO2 (g/kWh)\n2021-12-01T00:00:00+01:00;abc\n";
        let err = parse_eco2mix(bad.as_bytes(), 0).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let negative = "Date - Heure;Taux de CO2 (g/kWh)\n2021-12-01T00:00:00+01:00;-3\n";
        assert!(parse_eco2mix(negative.as_bytes(), 0).is_err());
        assert!(parse_eco2mix(b"Date;Heures;Consommation\n", 0).is_err());
    }

    #[test]
    fn grid_files_eco2mix_october_repeated_hour() {
        // Wall-clock 02:00 twice on 31 October 2021: summer, then winter.
        let text = "Date\tHeures\tTaux de CO2 (g/kWh)\n\
                    2021-10-31\t01:45\t30\n2021-10-31\t02:00\t31\n2021-10-31\t02:00\t32\n\
                    2021-10-31\t03:00\t33\n";
        let p = parse_eco2mix(text.as_bytes(), 0).unwrap();
        let starts: Vec<String> = p
            .points
            .iter()
            .map(|p| time::format_utc(p.start_ms))
            .collect();
        assert_eq!(
            starts,
            [
                "2021-10-30T23:45:00Z",
                "2021-10-31T00:00:00Z",
                "2021-10-31T01:00:00Z",
                "2021-10-31T02:00:00Z"
            ]
        );
        assert_eq!(p.points[2].signal().0, 32.0);
    }

    #[test]
    fn grid_files_carbon_intensity_prefers_actual() {
        let body = br#"{"data":[
            {"from":"2023-03-13T12:30Z","to":"2023-03-13T13:00Z","intensity":{"forecast":51,"actual":null,"index":"low"}},
            {"from":"2023-03-13T12:00Z","to":"2023-03-13T12:30Z","intensity":{"forecast":47,"actual":54,"index":"low"}},
            {"from":"2023-03-13T13:00Z","to":"2023-03-13T13:30Z","intensity":{"forecast":null,"actual":null,"index":null}}
        ]}"#;
        let p = parse_carbon_intensity_json(body, "GB", 9).unwrap();
        assert_eq!(p.skipped_rows, 1);
        assert_eq!(p.points.len(), 2);
        assert_eq!(
            (p.points[0].signal().0, p.points[0].estimated),
            (54.0, false)
        );
        assert_eq!(
            (p.points[1].signal().0, p.points[1].estimated),
            (51.0, true)
        );
        assert_eq!(p.points[1].retrieved_ms, 9);
    }
}
