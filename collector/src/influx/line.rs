//! Line protocol for the sink: one line per point, built with InfluxData's
//! `influxdb-line-protocol` builder (it escapes measurement names, tag
//! keys and values and field keys; integers get the `i` suffix).

use super::Precision;
use crate::metrics::SiteGauges;
use influxdb_line_protocol::LineProtocolBuilder;

/// Measurement of the minute energy of one (host, sensor).
pub const ENERGY: &str = "vigie_energy";
/// Measurement of a site figure (PUE, ERF, REF, CER, WUE, pPUE).
pub const SITE: &str = "vigie_site";
/// Measurement of a site meter's energy over a period.
pub const SITE_METER: &str = "vigie_site_meter";

/// Timestamp of `ms` in `precision` (minute and second starts are whole
/// seconds, so `s` loses nothing).
pub fn timestamp(ms: i64, precision: Precision) -> i64 {
    match precision {
        Precision::Seconds => ms.div_euclid(1000),
        Precision::Milliseconds => ms,
    }
}

/// The line of one minute bucket: energy measured and estimated (integer
/// µJ, exact), their sum, the mean power over the minute (energy / 60 s)
/// and `estimated` (any of it estimated). `None` when a figure does not
/// fit a line (never for a bucket the ledger can hold).
pub fn minute(
    host: &str,
    sensor: &str,
    bucket_ms: i64,
    measured_uj: u64,
    estimated_uj: u64,
    precision: Precision,
) -> Option<Vec<u8>> {
    if host.is_empty() || sensor.is_empty() {
        return None;
    }
    let measured = i64::try_from(measured_uj).ok()?;
    let estimated = i64::try_from(estimated_uj).ok()?;
    let total = measured.checked_add(estimated)?;
    let power_w = total as f64 / (vigie_energy::MINUTE_MS as f64 * 1000.0);
    Some(
        LineProtocolBuilder::new()
            .measurement(ENERGY)
            .tag("host", host)
            .tag("sensor", sensor)
            .field("energy_uj", total)
            .field("measured_uj", measured)
            .field("estimated_uj", estimated)
            .field("power_w", power_w)
            .field("estimated", estimated > 0)
            .timestamp(timestamp(bucket_ms, precision))
            .close_line()
            .build(),
    )
}

/// The lines of the site's figures over `period` (`day`, `ytd`) at
/// `at_ms`, and how many figures were left out (not finite, or an empty
/// meter or zone name, which a tag cannot carry).
pub fn site(period: &str, g: &SiteGauges, at_ms: i64, precision: Precision) -> (Vec<Vec<u8>>, u64) {
    let ts = timestamp(at_ms, precision);
    let mut lines = Vec::new();
    let mut invalid = 0;
    let figure = |indicator: &str, zone: Option<&str>, value: f64, estimated: bool| {
        if !value.is_finite() || zone.is_some_and(str::is_empty) {
            return None;
        }
        let b = LineProtocolBuilder::new()
            .measurement(SITE)
            .tag("indicator", indicator)
            .tag("period", period);
        let b = match zone {
            Some(z) => b.tag("zone", z),
            None => b,
        };
        Some(
            b.field("value", value)
                .field("estimated", estimated)
                .timestamp(ts)
                .close_line()
                .build(),
        )
    };
    for (symbol, value, estimated) in &g.figures {
        match figure(symbol, None, *value, *estimated) {
            Some(l) => lines.push(l),
            None => invalid += 1,
        }
    }
    for (zone, value, estimated) in &g.ppue {
        match figure("pPUE", Some(zone), *value, *estimated) {
            Some(l) => lines.push(l),
            None => invalid += 1,
        }
    }
    for (meter, role, joules, estimated) in &g.energy {
        if !joules.is_finite() || meter.is_empty() {
            invalid += 1;
            continue;
        }
        lines.push(
            LineProtocolBuilder::new()
                .measurement(SITE_METER)
                .tag("meter", meter)
                .tag("role", role)
                .tag("period", period)
                .field("energy_j", *joules)
                .field("estimated", *estimated)
                .timestamp(ts)
                .close_line()
                .build(),
        );
    }
    (lines, invalid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(l: Vec<u8>) -> String {
        String::from_utf8(l).unwrap()
    }

    #[test]
    fn minute_lines_have_integer_microjoules_power_and_the_flag() {
        // 2026-03-10T12:01:00Z; 6 J measured and 0.6 J estimated in the minute.
        let at = 1_773_144_060_000;
        let l = text(
            minute(
                "node-01",
                "rapl:package-0",
                at,
                6_000_000,
                600_000,
                Precision::Seconds,
            )
            .unwrap(),
        );
        assert_eq!(
            l,
            "vigie_energy,host=node-01,sensor=rapl:package-0 energy_uj=6600000i,measured_uj=6000000i,estimated_uj=600000i,power_w=0.11,estimated=true 1773144060\n"
        );
        let l = text(minute("n", "s", at, 60_000_000, 0, Precision::Milliseconds).unwrap());
        assert!(l.ends_with(" 1773144060000\n"), "{l}");
        assert!(l.contains("power_w=1,estimated=false"), "{l}");
        // A bucket past i64 (never written by the ledger) makes no line.
        assert!(minute("n", "s", at, u64::MAX, 0, Precision::Seconds).is_none());
        assert!(minute("n", "s", at, i64::MAX as u64, 1, Precision::Seconds).is_none());
        assert!(minute("", "s", at, 1, 0, Precision::Seconds).is_none());
    }

    #[test]
    fn names_are_escaped_and_bad_figures_left_out() {
        let g = SiteGauges {
            figures: vec![("PUE", 1.25, false), ("ERF", f64::NAN, true)],
            energy: vec![
                ("main, grid=A".into(), "grid-import", 3.6e6, true),
                (String::new(), "it", 1.0, false),
            ],
            coverage: vec![],
            ppue: vec![("hall 1".into(), 1.5, false)],
        };
        let (lines, invalid) = site("day", &g, -1_500, Precision::Seconds);
        let lines: Vec<String> = lines.into_iter().map(text).collect();
        assert_eq!(invalid, 2);
        assert_eq!(
            lines,
            vec![
                "vigie_site,indicator=PUE,period=day value=1.25,estimated=false -2\n",
                "vigie_site,indicator=pPUE,period=day,zone=hall\\ 1 value=1.5,estimated=false -2\n",
                "vigie_site_meter,meter=main\\,\\ grid\\=A,role=grid-import,period=day energy_j=3600000,estimated=true -2\n",
            ]
        );
    }
}
