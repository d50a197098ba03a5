//! Counting one physical energy once. A device often shows the same
//! energy several ways (a server's legacy `PowerControl`, its
//! `EnvironmentMetrics` and a chassis power sensor) and in parts (its
//! power supplies, a card inside it; a PDU's inlets, phases and outlets).
//! Each energy point gets a [`Place`]: the device scope it measures and how
//! deep inside that scope it sits. [`assign`] then picks one boundary
//! sensor per scope (an energy register first, then a power reading) and
//! marks the others as alternatives (the same whole) or components (parts
//! of it), so the collector's totals add each energy once.
//!
//! A host's totals add the host's own energy only. The boundary of a
//! device configured `counts_in = "site"` (a facility meter, a PDU
//! feeding other hosts) is the site's, not the polling host's:
//! [`off_host`] makes every one of its energy points a part of the site,
//! so none of them is in the host's totals while each still reaches the
//! ledger and the site figures.

use vigie_protocol::{EnergyScope, ScopeRole};

/// Where an energy point sits in its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// Point name, as the driver reports it.
    pub point: String,
    /// The physical device it measures within the configured device
    /// (`chassis-1U`, `pdu-2`); empty for the device itself.
    pub scope: String,
    /// 0: the whole scope. Higher: parts nested deeper (inputs, then
    /// distribution, then outlets; a nested chassis below its container's
    /// supplies). Points of one tier are either the same whole seen several
    /// ways (tier 0) or disjoint parts (above 0).
    pub tier: u8,
    /// Preference among the sources of one tier, lowest first, when none or
    /// several of them have an energy register.
    pub rank: u8,
}

/// Places read from PDU point names: `device`/`pdu`/`total` is the whole;
/// `inlet`/`input`/`mains`/`feed` its inputs; `phase`/`line`/`bank`/
/// `branch`/`circuit` its distribution; `outlet`/`socket` its outlets. A
/// dotted prefix (`pdu-2.outlet-3`) is the scope. Other names get no place:
/// they are counted as they are.
pub fn by_name(points: &[&str]) -> Vec<Place> {
    points
        .iter()
        .filter_map(|p| {
            let (scope, last) = p.rsplit_once('.').unwrap_or(("", p));
            let stem = last.split(['-', '_']).next().unwrap_or(last);
            let tier = match stem {
                "device" | "pdu" | "total" | "unit" => 0,
                "inlet" | "input" | "mains" | "feed" => 1,
                "phase" | "line" | "bank" | "branch" | "circuit" | "breaker" => 2,
                "outlet" | "socket" => 3,
                _ => return None,
            };
            Some(Place {
                point: (*p).to_owned(),
                scope: scope.to_owned(),
                tier,
                rank: 0,
            })
        })
        .collect()
}

/// The scope of each energy point of device `device`. `energy` lists the
/// points that yield energy, each with whether it has an energy register.
/// Points without a place are left out (they count on their own).
///
/// In each scope the lowest tier present decides: at tier 0, or when it
/// holds one point, the best of it (a register first, then by rank) is the
/// boundary and the rest of that tier are alternatives; above 0 with
/// several points, each is the boundary of its own part. Every deeper
/// point is a component.
pub fn assign(
    device: &str,
    places: &[Place],
    energy: &[(&str, bool)],
) -> Vec<(String, EnergyScope)> {
    let register = |p: &str| energy.iter().any(|(e, r)| *e == p && *r);
    let present: Vec<&Place> = places
        .iter()
        .filter(|pl| energy.iter().any(|(e, _)| *e == pl.point))
        .collect();
    let mut scopes: Vec<&str> = Vec::new();
    for pl in &present {
        if !scopes.contains(&pl.scope.as_str()) {
            scopes.push(&pl.scope);
        }
    }
    let sensor = |p: &str| format!("{device}:{p}");
    let mut out = Vec::new();
    for scope in scopes {
        let name = if scope.is_empty() {
            device.to_owned()
        } else {
            format!("{device}:{scope}")
        };
        let members: Vec<&Place> = present
            .iter()
            .copied()
            .filter(|pl| pl.scope == scope)
            .collect();
        let Some(top) = members.iter().map(|pl| pl.tier).min() else {
            continue;
        };
        let tops: Vec<&Place> = members
            .iter()
            .copied()
            .filter(|pl| pl.tier == top)
            .collect();
        let mut of = None;
        if top == 0 || tops.len() == 1 {
            let best = tops
                .iter()
                .min_by_key(|pl| (!register(&pl.point), pl.rank))
                .map(|pl| pl.point.as_str());
            for pl in &tops {
                let role = if Some(pl.point.as_str()) == best {
                    ScopeRole::Boundary
                } else {
                    ScopeRole::Alternative
                };
                out.push((
                    pl.point.clone(),
                    EnergyScope {
                        scope: name.clone(),
                        role,
                        of: (role == ScopeRole::Alternative)
                            .then(|| best.map(sensor))
                            .flatten(),
                    },
                ));
            }
            of = best.map(sensor);
        } else {
            for pl in &tops {
                out.push((
                    pl.point.clone(),
                    EnergyScope {
                        scope: format!("{name}/{}", pl.point),
                        role: ScopeRole::Boundary,
                        of: None,
                    },
                ));
            }
        }
        for pl in members.iter().filter(|pl| pl.tier > top) {
            out.push((
                pl.point.clone(),
                EnergyScope {
                    scope: name.clone(),
                    role: ScopeRole::Component,
                    of: of.clone(),
                },
            ));
        }
    }
    out
}

/// The scopes of a device whose energy is not the polling host's: each
/// energy point of `energy` becomes a [`ScopeRole::Component`], a part of
/// the site, whatever [`assign`] made it. A boundary keeps its scope name
/// and loses its role (no `of`: the whole it is part of is the site);
/// components and alternatives stay as they are; a point without a place
/// gets a scope of its own (`{device}:{point}`).
pub fn off_host(
    device: &str,
    energy: &[(&str, bool)],
    mut scopes: Vec<(String, EnergyScope)>,
) -> Vec<(String, EnergyScope)> {
    for (_, s) in &mut scopes {
        if s.role == ScopeRole::Boundary {
            s.role = ScopeRole::Component;
            s.of = None;
        }
    }
    for (point, _) in energy {
        if !scopes.iter().any(|(p, _)| p == point) {
            scopes.push((
                (*point).to_owned(),
                EnergyScope {
                    scope: format!("{device}:{point}"),
                    role: ScopeRole::Component,
                    of: None,
                },
            ));
        }
    }
    scopes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn role(scopes: &[(String, EnergyScope)], point: &str) -> Option<ScopeRole> {
        scopes.iter().find(|(p, _)| p == point).map(|(_, s)| s.role)
    }

    #[test]
    fn a_pdu_register_is_the_boundary_and_its_phases_and_outlets_are_parts() {
        // APC rPDU2: the device register and power, phase power, outlets.
        let names = [
            "device", "phase-1", "phase-2", "phase-3", "outlet-1", "outlet-2",
        ];
        let energy: Vec<(&str, bool)> = names.iter().map(|n| (*n, *n == "device")).collect();
        let s = assign("pdu-a1", &by_name(&names), &energy);
        assert_eq!(role(&s, "device"), Some(ScopeRole::Boundary));
        for p in ["phase-1", "phase-2", "phase-3", "outlet-1", "outlet-2"] {
            assert_eq!(role(&s, p), Some(ScopeRole::Component), "{p}");
            let of = s.iter().find(|(x, _)| x == p).unwrap().1.of.clone();
            assert_eq!(of.as_deref(), Some("pdu-a1:device"));
        }
        assert_eq!(
            s.iter()
                .filter(|(_, e)| e.role == ScopeRole::Boundary)
                .count(),
            1
        );
    }

    #[test]
    fn without_a_whole_the_shallowest_parts_each_count_and_deeper_ones_do_not() {
        // A dual-inlet PDU with outlet metering but no device total.
        let names = ["inlet-1", "inlet-2", "outlet-1", "outlet-2", "outlet-3"];
        let energy: Vec<(&str, bool)> = names.iter().map(|n| (*n, true)).collect();
        let s = assign("pdu", &by_name(&names), &energy);
        assert_eq!(role(&s, "inlet-1"), Some(ScopeRole::Boundary));
        assert_eq!(role(&s, "inlet-2"), Some(ScopeRole::Boundary));
        assert_eq!(role(&s, "outlet-3"), Some(ScopeRole::Component));
        // Outlets alone (a metered-outlet PDU, the demo's): each counts.
        let outlets = ["outlet-1", "outlet-2"];
        let energy: Vec<(&str, bool)> = outlets.iter().map(|n| (*n, true)).collect();
        let s = assign("pdu", &by_name(&outlets), &energy);
        assert!(s.iter().all(|(_, e)| e.role == ScopeRole::Boundary));
        assert_ne!(s[0].1.scope, s[1].1.scope);
    }

    #[test]
    fn an_energy_register_beats_a_better_ranked_power_reading_of_the_same_whole() {
        let place = |point: &str, rank| Place {
            point: point.into(),
            scope: "chassis-1U".into(),
            tier: 0,
            rank,
        };
        let places = [place("env", 0), place("legacy", 2), place("total", 1)];
        let s = assign(
            "bmc",
            &places,
            &[("env", false), ("legacy", false), ("total", true)],
        );
        assert_eq!(role(&s, "total"), Some(ScopeRole::Boundary));
        assert_eq!(role(&s, "env"), Some(ScopeRole::Alternative));
        assert_eq!(role(&s, "legacy"), Some(ScopeRole::Alternative));
        // Without the register, rank decides.
        let s = assign("bmc", &places, &[("env", false), ("legacy", false)]);
        assert_eq!(role(&s, "env"), Some(ScopeRole::Boundary));
        assert_eq!(role(&s, "legacy"), Some(ScopeRole::Alternative));
    }

    #[test]
    fn unknown_names_and_silent_points_get_no_scope() {
        let names = ["device", "meter", "outlet-1"];
        let s = assign(
            "x",
            &by_name(&names),
            &[("meter", true), ("outlet-1", true)],
        );
        assert_eq!(role(&s, "meter"), None);
        assert_eq!(role(&s, "device"), None);
        // The only energy point of its scope is its boundary.
        assert_eq!(role(&s, "outlet-1"), Some(ScopeRole::Boundary));
        let dotted = by_name(&["pdu-2.outlet-3"]);
        assert_eq!(dotted[0].scope, "pdu-2");
        assert_eq!(dotted[0].tier, 3);
    }

    #[test]
    fn a_site_device_has_no_boundary_for_the_host_and_every_energy_point_a_scope() {
        let names = ["device", "outlet-1", "outlet-2", "grid"];
        let energy: Vec<(&str, bool)> = names.iter().map(|n| (*n, true)).collect();
        let host = assign("pdu", &by_name(&names), &energy);
        assert_eq!(role(&host, "device"), Some(ScopeRole::Boundary));
        assert_eq!(role(&host, "grid"), None, "counted as it is");
        let site = off_host("pdu", &energy, host.clone());
        for p in names {
            assert_eq!(role(&site, p), Some(ScopeRole::Component), "{p}");
        }
        let device = &site.iter().find(|(p, _)| p == "device").unwrap().1;
        assert_eq!((device.scope.as_str(), device.of.as_deref()), ("pdu", None));
        let outlet = &site.iter().find(|(p, _)| p == "outlet-1").unwrap().1;
        assert_eq!(
            outlet.of.as_deref(),
            Some("pdu:device"),
            "still a part of it"
        );
        let grid = &site.iter().find(|(p, _)| p == "grid").unwrap().1;
        assert_eq!(grid.scope, "pdu:grid");
    }
}
