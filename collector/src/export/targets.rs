//! The EnEfG targets (section 11), checked against a period's figures. A
//! target is checked when it is in force on the last day of the period;
//! the PUE and ERF targets depend on the commissioning date, and are
//! reported `unknown-commissioning-date` when it is not given.
//!
//! Checked against the text of EnEfG § 11 (1) to (3) (gesetze.legal copy
//! of the act as amended; see `collector/exports/enefg.toml`): sites
//! starting operation from 2026-07-01 meet PUE ≤ 1.2 and the ERF shares
//! "at the latest two years after commissioning" (§ 11(2) sentence 2),
//! their PUE leaving out plant used only to upgrade waste heat (sentence
//! 3); § 11(3) lifts the ERF requirement where the operator proves one of
//! its grounds.

use super::date::Date;
use serde::{Deserialize, Serialize};

/// One target and whether the period meets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    /// `pue_max`, `erf_min` or `renewable_share_min`.
    pub id: &'static str,
    /// What it is.
    pub label: &'static str,
    /// Unit of `limit` and `value`.
    pub unit: &'static str,
    /// The limit in force, if one is.
    pub limit: Option<f64>,
    /// Since when that limit applies, or from when `upcoming` will (a new
    /// site's targets apply two years after commissioning).
    pub applies_from: Option<String>,
    /// The limit not yet in force that will apply from `applies_from`: the
    /// value a site is built and run to meet (EnEfG § 11(1), (2) "so zu
    /// errichten und zu betreiben"), shown on the dashboards; the result
    /// stays `not-in-force` until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upcoming: Option<f64>,
    /// The period's value.
    pub value: Option<f64>,
    /// `met`, `not-met`, `no-value`, `not-in-force`, `not-applicable`,
    /// `exempt` or `unknown-commissioning-date`.
    pub result: &'static str,
    /// The rule, in words.
    pub basis: String,
    /// The provision, and whether its text was checked.
    pub legal_ref: &'static str,
    /// The evidence of an exemption, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// A ground of EnEfG § 11(3) lifting the ERF requirement of § 11(2)
/// sentence 1 no. 2, as configured evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErfExemptionGround {
    /// § 11(3) no. 1: after commissioning, the share no longer meets the
    /// requirement through later events the operator is not at fault for.
    LaterEvents,
    /// § 11(3) no. 2: a waste-heat agreement with a nearby municipality or
    /// a heat-network operator.
    Agreement,
    /// § 11(3), a further ground (heat offered to a nearby network at cost
    /// and not taken up): its number and wording were not read in the act,
    /// only in secondary sources.
    OfferDeclined,
}

impl ErfExemptionGround {
    /// The provision.
    pub fn legal_ref(self) -> &'static str {
        match self {
            ErfExemptionGround::LaterEvents => "EnEfG § 11 Abs. 3 Nr. 1",
            ErfExemptionGround::Agreement => "EnEfG § 11 Abs. 3 Nr. 2",
            ErfExemptionGround::OfferDeclined => {
                "EnEfG § 11 Abs. 3 (offer not taken up; number not verified)"
            }
        }
    }
}

/// A configured § 11(3) exemption: the ground and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErfExemption {
    /// The ground.
    pub ground: ErfExemptionGround,
    /// The document proving it (agreement, offer and refusal, report).
    pub evidence: String,
    /// Its date, `YYYY-MM-DD`.
    pub date: String,
}

fn date(y: i64, m: u32) -> Date {
    Date { y, m, d: 1 }
}

/// The day a requirement to be met "at the latest two years after
/// commissioning" applies from: the same calendar day two years later
/// (commissioned 2026-07-01: from 2028-07-01); a 29 February moves to
/// 1 March.
pub fn two_years_after(c: Date) -> Date {
    Date::new(c.y + 2, c.m, c.d).unwrap_or(Date {
        y: c.y + 2,
        m: 3,
        d: 1,
    })
}

fn verdict(limit: f64, value: Option<f64>, max: bool) -> &'static str {
    match value {
        None => "no-value",
        Some(v) if (max && v <= limit) || (!max && v >= limit) => "met",
        Some(_) => "not-met",
    }
}

/// Checks PUE (ratio), ERF (%) and the renewable electricity share (%)
/// for a period whose last day is `at`, without exemptions.
pub fn check(
    at: Date,
    commissioned: Option<Date>,
    pue: Option<f64>,
    erf_pct: Option<f64>,
    renewable_pct: Option<f64>,
) -> Vec<TargetCheck> {
    check_with(at, commissioned, pue, erf_pct, renewable_pct, None)
}

/// [`check`] with a configured § 11(3) ERF exemption. `pue` is the
/// § 11 PUE: for a site starting from 2026-07-01, without the electricity
/// of plant used only to upgrade waste heat.
pub fn check_with(
    at: Date,
    commissioned: Option<Date>,
    pue: Option<f64>,
    erf_pct: Option<f64>,
    renewable_pct: Option<f64>,
    exemption: Option<&ErfExemption>,
) -> Vec<TargetCheck> {
    let new_sites = date(2026, 7);
    // (limit, applies from) in force, or the one that will be.
    type Rule = Result<(Option<(f64, Date)>, Option<(f64, Date)>), &'static str>;
    let new_site = |limit: f64, c: Date| -> Rule {
        let due = two_years_after(c);
        Ok(if at >= due {
            (Some((limit, due)), None)
        } else {
            (None, Some((limit, due)))
        })
    };
    let pue_rule: Rule = match commissioned {
        Some(c) if c >= new_sites => new_site(1.2, c),
        Some(_) => Ok(if at >= date(2030, 7) {
            (Some((1.3, date(2030, 7))), None)
        } else if at >= date(2027, 7) {
            (Some((1.5, date(2027, 7))), Some((1.3, date(2030, 7))))
        } else {
            (None, Some((1.5, date(2027, 7))))
        }),
        None if at < new_sites => Ok((None, None)),
        None => Err("unknown-commissioning-date"),
    };
    let result = |rule: &Rule, value: Option<f64>, max: bool| match rule {
        Ok((Some((l, _)), _)) => verdict(*l, value, max),
        Ok((None, _)) => "not-in-force",
        Err(e) => e,
    };
    let limit = |rule: &Rule| rule.ok().and_then(|r| r.0).map(|x| x.0);
    // The date of the limit in force, else of the one to come.
    let from = |rule: &Rule| rule.ok().and_then(|r| r.0.or(r.1)).map(|x| x.1.to_string());
    // The limit to come, while none is in force.
    let upcoming = |rule: &Rule| {
        rule.ok()
            .filter(|r| r.0.is_none())
            .and_then(|r| r.1)
            .map(|x| x.0)
    };
    let pue_check = TargetCheck {
        id: "pue_max",
        label: "PUE, annual average, at most",
        unit: "1",
        limit: limit(&pue_rule),
        applies_from: from(&pue_rule),
        upcoming: upcoming(&pue_rule),
        value: pue,
        result: result(&pue_rule, pue, true),
        basis: "EnEfG § 11(1): sites operating before 2026-07-01: 1.5 from 2027-07-01, 1.3 from 2030-07-01 (annual average); § 11(2): sites starting from 2026-07-01: 1.2, met at the latest two years after commissioning, without the electricity of plant used only to upgrade waste heat".into(),
        legal_ref: "EnEfG § 11 Abs. 1 Nr. 1, 2; Abs. 2 Satz 1 Nr. 1, Satz 2, 3",
        evidence: None,
    };
    // ERF: by commissioning date; none for older sites.
    let erf_rule: Rule = match commissioned {
        Some(c) if c >= date(2028, 7) => new_site(20.0, c),
        Some(c) if c >= date(2027, 7) => new_site(15.0, c),
        Some(c) if c >= new_sites => new_site(10.0, c),
        Some(_) => Err("not-applicable"),
        None if at < new_sites => Ok((None, None)),
        None => Err("unknown-commissioning-date"),
    };
    let exempt = exemption.filter(|_| commissioned.is_some_and(|c| c >= new_sites));
    let erf_check = TargetCheck {
        id: "erf_min",
        label: "Energy reuse factor, at least",
        unit: "%",
        limit: limit(&erf_rule),
        applies_from: from(&erf_rule),
        upcoming: upcoming(&erf_rule),
        value: erf_pct,
        result: match exempt {
            Some(_) => "exempt",
            None => result(&erf_rule, erf_pct, false),
        },
        basis: "EnEfG § 11(2): sites starting operation from 2026-07-01: 10 %, from 2027-07-01: 15 % (planned), from 2028-07-01: 20 % (planned), to DIN EN 50600-4-6, met at the latest two years after commissioning; § 11(3): not applicable where the operator proves a ground".into(),
        legal_ref: "EnEfG § 11 Abs. 2 Satz 1 Nr. 2, Satz 2; Abs. 3",
        evidence: exempt.map(|e| {
            format!(
                "{} ({}): {}, {}",
                e.ground.legal_ref(),
                match e.ground {
                    ErfExemptionGround::LaterEvents => "later events, operator not at fault",
                    ErfExemptionGround::Agreement => "waste-heat agreement",
                    ErfExemptionGround::OfferDeclined => "offer not taken up",
                },
                e.evidence,
                e.date
            )
        }),
    };
    let ren = if at >= date(2027, 1) {
        Some((100.0, date(2027, 1)))
    } else if at >= date(2024, 1) {
        Some((50.0, date(2024, 1)))
    } else {
        None
    };
    let ren_check = TargetCheck {
        id: "renewable_share_min",
        label: "Renewable electricity share, at least",
        unit: "%",
        limit: ren.map(|x| x.0),
        applies_from: ren.map(|x| x.1.to_string()),
        upcoming: None,
        value: renewable_pct,
        result: match ren {
            Some((l, _)) => verdict(l, renewable_pct, false),
            None => "not-in-force",
        },
        basis: "EnEfG § 11: 50 % from 2024-01-01, 100 % from 2027-01-01 (balance over the year, GOs and PPAs count)".into(),
        legal_ref: "EnEfG § 11 Abs. 5 (not verified: the paragraph's text was not read)",
        evidence: None,
    };
    vec![pue_check, erf_check, ren_check]
}

/// One dated obligation (EnEfG § 12) and whether the configured
/// attestation meets it on the checked day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObligationCheck {
    /// `ems_in_place` or `ems_certified`.
    pub id: &'static str,
    /// What it is.
    pub label: &'static str,
    /// The day from which the obligation applies (`YYYY-MM-DD`).
    pub deadline: String,
    /// `met`, `not-met`, `not-yet-due`, `not-applicable` or
    /// `unknown-power` (the size the obligation depends on not declared).
    pub result: &'static str,
    /// The rule, in words.
    pub basis: String,
    /// The provision.
    pub legal_ref: &'static str,
    /// The attestation the result rests on, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// The attestation of an energy or environmental management system, as
/// configured (`[site.register] management_system`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmsAttestation<'a> {
    /// `iso-50001`, `emas`...
    pub kind: &'a str,
    /// In place since.
    pub since: Option<Date>,
    /// Certified or validated until (none: not certified).
    pub certified_until: Option<Date>,
    /// The certificate or registration reference.
    pub certificate: Option<&'a str>,
}

/// EnEfG § 12(1): every data centre operator has an energy or
/// environmental management system by 1 July 2025.
pub const EMS_DUE: Date = Date {
    y: 2025,
    m: 7,
    d: 1,
};
/// EnEfG § 12(3): validated or certified from 1 January 2026.
pub const EMS_CERTIFIED_DUE: Date = Date {
    y: 2026,
    m: 1,
    d: 1,
};

/// Checks EnEfG § 12 on day `at` (the period's last day) for a data
/// centre of `non_redundant_kw` (the whole site's non-redundant rated
/// connection power), publicly owned or operated for a public body or
/// not. Text read (buzer.de copy of § 12 as promulgated, BGBl. 2023 I
/// Nr. 309): (1) a system "bis zum 1. Juli 2025"; (3) validation or
/// certification "ab dem 1. Januar 2026" from 1 MW of non-redundant rated
/// connection power, from 300 kW for data centres owned by or operated for
/// public bodies. The § 12(4) exemption (at least 50 % of the reused
/// energy taken up by a heat network and at most 7.5 GWh a year over the
/// last three calendar years) is not evaluated: such a site reads
/// `not-met` with the basis saying so.
pub fn management_system(
    at: Date,
    non_redundant_kw: Option<f64>,
    public: bool,
    ems: Option<&EmsAttestation<'_>>,
) -> Vec<ObligationCheck> {
    let evidence = ems.map(|e| {
        format!(
            "{} in place since {}{}{}",
            e.kind,
            e.since
                .map_or("an undeclared date".into(), |d| d.to_string()),
            e.certified_until.map_or(String::new(), |d| format!(
                ", certified or validated until {d}"
            )),
            e.certificate
                .map_or(String::new(), |c| format!(", certificate {c}"))
        )
    });
    // In place on the checked day: a system whose start is declared and
    // not after that day.
    let in_place = ems.is_some_and(|e| e.since.is_some_and(|s| s <= at));
    let in_place_check = ObligationCheck {
        id: "ems_in_place",
        label: "Energy or environmental management system in place",
        deadline: EMS_DUE.to_string(),
        result: if at < EMS_DUE {
            "not-yet-due"
        } else if in_place {
            "met"
        } else {
            "not-met"
        },
        basis: "EnEfG § 12(1): data centre operators set up an energy or environmental management system by 1 July 2025 (checked on the period's last day: in place since that day or earlier); § 12(4) exemption for heat-network sites up to 7.5 GWh a year not evaluated".into(),
        legal_ref: "EnEfG § 12 Abs. 1, Abs. 4",
        evidence: evidence.clone(),
    };
    let threshold = if public { 300.0 } else { 1_000.0 };
    let certified = ems.is_some_and(|e| e.certified_until.is_some_and(|u| u >= at)) && in_place;
    let cert_check = ObligationCheck {
        id: "ems_certified",
        label: "Management system validated or certified",
        deadline: EMS_CERTIFIED_DUE.to_string(),
        result: match non_redundant_kw {
            None => "unknown-power",
            Some(kw) if kw < threshold => "not-applicable",
            Some(_) if at < EMS_CERTIFIED_DUE => "not-yet-due",
            Some(_) if certified => "met",
            Some(_) => "not-met",
        },
        basis: format!(
            "EnEfG § 12(3): from 1 January 2026, validated or certified for data centres from 1 MW of non-redundant rated connection power, from 300 kW where owned by or operated for public bodies (this site: {}, threshold {threshold} kW; a certificate counts while valid on the period's last day)",
            if public { "public" } else { "not public" }
        ),
        legal_ref: "EnEfG § 12 Abs. 3",
        evidence,
    };
    vec![in_place_check, cert_check]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn targets_by_period_and_commissioning_date() {
        // (last day, commissioned, pue, erf %, ren %) -> (pue limit, result), (erf limit, result), (ren limit, result)
        type Row = (
            &'static str,
            Option<&'static str>,
            (Option<f64>, &'static str),
            (Option<f64>, &'static str),
            (Option<f64>, &'static str),
        );
        let rows: [Row; 9] = [
            (
                "2023-12-31",
                Some("2010-01-01"),
                (None, "not-in-force"),
                (None, "not-applicable"),
                (None, "not-in-force"),
            ),
            (
                "2024-12-31",
                Some("2010-01-01"),
                (None, "not-in-force"),
                (None, "not-applicable"),
                (Some(50.0), "met"),
            ),
            (
                "2027-06-30",
                Some("2010-01-01"),
                (None, "not-in-force"),
                (None, "not-applicable"),
                (Some(100.0), "not-met"),
            ),
            (
                "2027-12-31",
                Some("2010-01-01"),
                (Some(1.5), "met"),
                (None, "not-applicable"),
                (Some(100.0), "not-met"),
            ),
            (
                "2030-12-31",
                Some("2026-06-30"),
                (Some(1.3), "not-met"),
                (None, "not-applicable"),
                (Some(100.0), "not-met"),
            ),
            // Six months in: the new-site targets are not due yet.
            (
                "2026-12-31",
                Some("2026-07-01"),
                (None, "not-in-force"),
                (None, "not-in-force"),
                (Some(50.0), "met"),
            ),
            (
                "2029-12-31",
                Some("2027-07-01"),
                (Some(1.2), "not-met"),
                (Some(15.0), "met"),
                (Some(100.0), "not-met"),
            ),
            (
                "2030-12-31",
                Some("2028-07-01"),
                (Some(1.2), "not-met"),
                (Some(20.0), "not-met"),
                (Some(100.0), "not-met"),
            ),
            (
                "2027-12-31",
                None,
                (None, "unknown-commissioning-date"),
                (None, "unknown-commissioning-date"),
                (Some(100.0), "not-met"),
            ),
        ];
        for (at, comm, p, e, r) in rows {
            // PUE 1.4, ERF 18 %, renewable 60 %.
            let c = check(d(at), comm.map(d), Some(1.4), Some(18.0), Some(60.0));
            let got = |i: usize| (c[i].limit, c[i].result);
            assert_eq!((got(0), got(1), got(2)), (p, e, r), "{at} {comm:?}");
        }
        // A commissioning date after the period: nothing in force yet.
        let c = check(
            d("2026-12-31"),
            Some(d("2028-09-01")),
            Some(2.0),
            None,
            None,
        );
        assert_eq!(c[0].result, "not-in-force");
        assert_eq!(c[1].result, "not-in-force");
        assert_eq!(c[2].result, "no-value");
    }

    #[test]
    fn new_site_targets_apply_two_years_after_commissioning() {
        let c = Some(d("2026-07-01"));
        // The day before: not due, and the export says from when.
        let before = check(d("2028-06-30"), c, Some(1.4), Some(5.0), None);
        assert_eq!((before[0].limit, before[0].result), (None, "not-in-force"));
        assert_eq!(before[0].applies_from.as_deref(), Some("2028-07-01"));
        assert_eq!(
            (before[0].upcoming, before[1].upcoming),
            (Some(1.2), Some(10.0))
        );
        assert_eq!((before[1].limit, before[1].result), (None, "not-in-force"));
        assert_eq!(before[1].applies_from.as_deref(), Some("2028-07-01"));
        // On the second anniversary: in force.
        let on = check(d("2028-07-01"), c, Some(1.4), Some(5.0), None);
        assert_eq!((on[0].limit, on[0].result), (Some(1.2), "not-met"));
        assert_eq!(on[0].upcoming, None);
        assert_eq!((on[1].limit, on[1].result), (Some(10.0), "not-met"));
        let on = check(d("2028-07-01"), c, Some(1.2), Some(10.0), None);
        assert_eq!((on[0].result, on[1].result), ("met", "met"));
        // A 29 February commissioning: due on 1 March.
        assert_eq!(two_years_after(d("2028-02-29")), d("2030-03-01"));
        // Older sites keep their fixed dates.
        let old = check(
            d("2027-06-30"),
            Some(d("2026-06-30")),
            Some(1.6),
            None,
            None,
        );
        assert_eq!(old[0].result, "not-in-force");
        let old = check(
            d("2027-07-01"),
            Some(d("2026-06-30")),
            Some(1.6),
            None,
            None,
        );
        assert_eq!((old[0].limit, old[0].result), (Some(1.5), "not-met"));
    }

    #[test]
    fn a_configured_erf_exemption_reads_exempt_with_its_evidence() {
        let e = ErfExemption {
            ground: ErfExemptionGround::Agreement,
            evidence: "agreement with Stadtwerke, ref. 42".into(),
            date: "2026-05-01".into(),
        };
        let c = check_with(
            d("2028-12-31"),
            Some(d("2026-07-01")),
            Some(1.1),
            Some(2.0),
            None,
            Some(&e),
        );
        assert_eq!(c[1].result, "exempt");
        let ev = c[1].evidence.as_deref().unwrap();
        assert!(
            ev.contains("§ 11 Abs. 3 Nr. 2") && ev.contains("ref. 42"),
            "{ev}"
        );
        // The PUE target is not lifted.
        assert_eq!(c[0].result, "met");
        // Without it: not met.
        let c = check(
            d("2028-12-31"),
            Some(d("2026-07-01")),
            Some(1.1),
            Some(2.0),
            None,
        );
        assert_eq!(c[1].result, "not-met");
        // An older site has no ERF target to be exempt from.
        let c = check_with(
            d("2028-12-31"),
            Some(d("2020-01-01")),
            None,
            None,
            None,
            Some(&e),
        );
        assert_eq!(c[1].result, "not-applicable");
    }
    #[test]
    fn management_system_deadlines_at_their_boundary_days() {
        let ems = |since: &str, until: Option<&str>| EmsAttestation {
            kind: "iso-50001",
            since: Some(d(since)),
            certified_until: until.map(d),
            certificate: Some("DE-50001-42"),
        };
        let e = ems("2025-06-30", Some("2028-12-31"));
        let r = |at: &str, kw: Option<f64>, public: bool, e: Option<&EmsAttestation<'_>>| {
            let c = management_system(d(at), kw, public, e);
            (c[0].result, c[1].result)
        };
        // § 12(1): due 2025-07-01; the day before, not yet due even
        // without a system.
        assert_eq!(r("2025-06-30", Some(2_000.0), false, None).0, "not-yet-due");
        assert_eq!(r("2025-07-01", Some(2_000.0), false, None).0, "not-met");
        assert_eq!(r("2025-07-01", Some(2_000.0), false, Some(&e)).0, "met");
        // A system set up after the checked day does not count.
        let late = ems("2025-09-01", Some("2028-12-31"));
        assert_eq!(
            r("2025-07-01", Some(2_000.0), false, Some(&late)).0,
            "not-met"
        );
        assert_eq!(r("2025-12-31", Some(2_000.0), false, Some(&late)).0, "met");
        // § 12(3): certification from 2026-01-01 at 1 MW and more.
        assert_eq!(r("2025-12-31", Some(2_000.0), false, None).1, "not-yet-due");
        assert_eq!(r("2026-01-01", Some(2_000.0), false, None).1, "not-met");
        assert_eq!(r("2026-01-01", Some(2_000.0), false, Some(&e)).1, "met");
        assert_eq!(r("2026-01-01", Some(1_000.0), false, Some(&e)).1, "met");
        assert_eq!(
            r("2026-01-01", Some(999.9), false, None).1,
            "not-applicable"
        );
        // Publicly owned: from 300 kW.
        assert_eq!(r("2026-01-01", Some(300.0), true, None).1, "not-met");
        assert_eq!(r("2026-01-01", Some(299.9), true, None).1, "not-applicable");
        assert_eq!(r("2026-01-01", None, false, None).1, "unknown-power");
        // An expired certificate: valid through its last day only.
        let expired = ems("2024-01-01", Some("2026-03-31"));
        assert_eq!(
            r("2026-03-31", Some(2_000.0), false, Some(&expired)).1,
            "met"
        );
        assert_eq!(
            r("2026-04-01", Some(2_000.0), false, Some(&expired)).1,
            "not-met"
        );
        // In place but never certified.
        let plain = ems("2024-01-01", None);
        assert_eq!(
            r("2026-06-30", Some(2_000.0), false, Some(&plain)),
            ("met", "not-met")
        );
        let c = management_system(d("2026-06-30"), Some(2_000.0), false, Some(&e));
        assert_eq!(c[0].deadline, "2025-07-01");
        assert_eq!(c[1].deadline, "2026-01-01");
        assert!(c[1].evidence.as_deref().unwrap().contains("DE-50001-42"));
    }
}
