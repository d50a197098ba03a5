//! The walk from `/redfish/v1/`: chassis, power equipment (rack PDUs,
//! power shelves, electrical buses) and cooling units become the plan of
//! resources read at every poll, each with its point's place.

use super::*;

impl RedfishDevice {
    /// Walks the service and returns the plan with the first poll's values,
    /// and what it found and does not read.
    pub(super) async fn discover(&self) -> Result<Discovered, DeviceError> {
        let Some(root) = self.get("/redfish/v1/").await? else {
            return Err(DeviceError::Protocol(
                "no Redfish service at /redfish/v1/".into(),
            ));
        };
        let mut found: Vec<(Target, Json)> = Vec::new();
        let mut unread: Vec<String> = Vec::new();
        if let Some(chassis) = link(&root, "Chassis") {
            self.discover_chassis(&chassis, &mut found, &mut unread)
                .await?;
        }
        if let Some(equipment) = link(&root, "PowerEquipment")
            && let Some(equipment) = self.get(&equipment).await?
        {
            for (key, prefix, read) in DISTRIBUTION {
                let Some(collection) = link(&equipment, key) else {
                    continue;
                };
                if *read {
                    self.discover_distribution(&collection, prefix, &mut found, &mut unread)
                        .await?;
                } else {
                    for path in self.members(&collection).await? {
                        unread.push(format!("{path}: a {prefix}, not read by this driver"));
                    }
                }
            }
        }
        if let Some(thermal) = link(&root, "ThermalEquipment")
            && let Some(thermal) = self.get(&thermal).await?
        {
            for (key, prefix) in COOLING {
                if let Some(collection) = link(&thermal, key) {
                    self.discover_cooling(&collection, prefix, &mut found, &mut unread)
                        .await?;
                }
            }
            if let Some(loops) = link(&thermal, "CoolingLoops") {
                for path in self.members(&loops).await? {
                    unread.push(format!("{path}: a cooling loop, not read by this driver"));
                }
            }
        }

        // A sensor that a resource above reads through its DataSourceUri
        // would be the same figure twice.
        let mut sourced = HashSet::new();
        for (t, doc) in &found {
            if t.kind != Kind::Sensor {
                data_sources(doc, &mut sourced);
            }
        }
        let mut names = HashSet::new();
        let mut plan = Vec::new();
        let mut values = Vec::new();
        for (t, doc) in found {
            if t.kind == Kind::Sensor && sourced.contains(t.path.as_str()) {
                continue;
            }
            if !names.insert(t.point.clone()) {
                tracing::warn!(point = %t.point, path = %t.path, "two Redfish resources give the same point name; keeping the first");
                continue;
            }
            extract(&t, &doc, &mut values);
            plan.push(t);
        }
        if plan.is_empty() {
            // Kept as an error, not as an empty plan: a BMC still booting
            // lists nothing, and the next poll should look again.
            return Err(DeviceError::Protocol(if self.chassis.is_empty() {
                "no power or energy reading found".into()
            } else {
                format!(
                    "no power or energy reading found (chassis filter {:?})",
                    self.chassis
                )
            }));
        }
        tracing::info!(url = %self.origin, resources = plan.len(), values = values.len(), unread = unread.len(), "Redfish service discovered");
        Ok((plan, values, unread))
    }

    pub(super) async fn discover_chassis(
        &self,
        collection: &str,
        found: &mut Vec<(Target, Json)>,
        unread: &mut Vec<String>,
    ) -> Result<(), DeviceError> {
        let members = self.members(collection).await?;
        let docs = self.get_all(&members).await?;
        let read: Vec<(&String, Json)> = members
            .iter()
            .zip(docs)
            .filter_map(|(path, doc)| {
                let chassis = doc?;
                let id = chassis
                    .get("Id")
                    .and_then(Json::as_str)
                    .map_or_else(|| last_segment(path), str::to_owned);
                (self.chassis.is_empty() || self.chassis.contains(&id)).then_some((path, chassis))
            })
            .collect();
        let parents: Vec<(&str, Option<String>)> = read
            .iter()
            .map(|(path, doc)| {
                let parent = doc.get("Links").and_then(|l| link(l, "ContainedBy"));
                (path.as_str(), parent)
            })
            .collect();
        for (path, chassis) in &read {
            let (root, depth) = containment(&parents, path);
            // A PDU's chassis is the PDU: its sensors join the PDU's scope.
            let pdu = read
                .iter()
                .find(|(p, _)| p.as_str() == root)
                .and_then(|(_, doc)| doc.get("Links").and_then(|l| link(l, "PowerDistribution")))
                .and_then(|d| distribution_scope(&d));
            let scope = pdu.unwrap_or_else(|| format!("chassis-{}", clean(&last_segment(root))));
            let base = depth.saturating_mul(3);
            let place = |tier: u8, rank: u8| Some((scope.clone(), base.saturating_add(tier), rank));
            let c = clean(&last_segment(path));
            let mut targets = Vec::new();
            if let Some(power) = link(chassis, "Power") {
                targets.push(Target {
                    path: power,
                    point: format!("chassis-{c}"),
                    kind: Kind::LegacyPower,
                    supply_prefix: format!("psu-{c}"),
                    place: place(WHOLE, RANK_LEGACY),
                });
            }
            if let Some(env) = link(chassis, "EnvironmentMetrics") {
                let mut t = target(env, format!("chassis-{c}.env"), Kind::Environment);
                t.place = place(WHOLE, RANK_ENV);
                targets.push(t);
            }
            if let Some(subsystem) = link(chassis, "PowerSubsystem")
                && let Some(subsystem) = self.get(&subsystem).await?
                && let Some(supplies) = link(&subsystem, "PowerSupplies")
            {
                let supplies = self.members(&supplies).await?;
                let docs = self.get_all(&supplies).await?;
                for (path, supply) in supplies.iter().zip(docs) {
                    let Some(supply) = supply else { continue };
                    let Some(metrics) = link(&supply, "Metrics") else {
                        unread.push(format!("{path}: a power supply without Metrics"));
                        continue;
                    };
                    let p = clean(&last_segment(path));
                    let mut t = target(metrics, format!("psu-{c}.{p}"), Kind::SupplyMetrics);
                    t.place = place(SUPPLY, 0);
                    targets.push(t);
                }
            }
            if let Some(sensors) = link(chassis, "Sensors") {
                for path in self.members(&sensors).await? {
                    let s = clean(&last_segment(&path));
                    let mut t = target(path, format!("sensor-{c}.{s}"), Kind::Sensor);
                    // Its tier comes with its `PhysicalContext` once read.
                    t.place = place(INSIDE, RANK_SENSOR);
                    targets.push(t);
                }
            }
            self.fetch_targets(targets, found).await?;
        }
        Ok(())
    }

    /// `PowerDistribution` equipment of one collection (`RackPDUs`,
    /// `PowerShelves`, `ElectricalBuses`), each its own scope.
    pub(super) async fn discover_distribution(
        &self,
        collection: &str,
        kind: &str,
        found: &mut Vec<(Target, Json)>,
        unread: &mut Vec<String>,
    ) -> Result<(), DeviceError> {
        let members = self.members(collection).await?;
        let docs = self.get_all(&members).await?;
        for (path, doc) in members.iter().zip(docs) {
            let Some(equipment) = doc else { continue };
            let d = clean(&last_segment(path));
            let scope = format!("{kind}-{d}");
            // One PDU per address is the common case: its points go
            // unprefixed; further PDUs (a daisy chain) get `pdu-{D}.`, and
            // shelves and buses always carry theirs.
            let prefix = if kind == "pdu" && d == "1" {
                String::new()
            } else {
                format!("{scope}.")
            };
            let mut targets = Vec::new();
            if let Some(metrics) = link(&equipment, "Metrics") {
                let mut t = target(metrics, scope.clone(), Kind::PduMetrics);
                t.place = Some((scope.clone(), 0, 0));
                targets.push(t);
            }
            for (collection, name, tier) in CIRCUITS {
                if let Some(collection) = link(&equipment, collection) {
                    for path in self.members(&collection).await? {
                        let m = clean(&last_segment(&path));
                        let mut t = target(path, format!("{prefix}{name}-{m}"), Kind::Circuit);
                        t.place = Some((scope.clone(), *tier, 0));
                        targets.push(t);
                    }
                }
            }
            if let Some(supplies) = link(&equipment, "PowerSupplies") {
                let supplies = self.members(&supplies).await?;
                let docs = self.get_all(&supplies).await?;
                for (path, supply) in supplies.iter().zip(docs) {
                    let Some(supply) = supply else { continue };
                    let Some(metrics) = link(&supply, "Metrics") else {
                        unread.push(format!("{path}: a power supply without Metrics"));
                        continue;
                    };
                    let p = clean(&last_segment(path));
                    let mut t = target(metrics, format!("{prefix}psu-{p}"), Kind::ShelfSupply);
                    t.place = Some((scope.clone(), SHELF_SUPPLY_TIER, 0));
                    targets.push(t);
                }
            }
            self.fetch_targets(targets, found).await?;
        }
        Ok(())
    }

    /// `CoolingUnit`s of one collection (`CDUs`, ...): the unit's own
    /// electrical figures (`EnvironmentMetrics`) and its coolant
    /// connectors' heat, flow and temperatures.
    pub(super) async fn discover_cooling(
        &self,
        collection: &str,
        kind: &str,
        found: &mut Vec<(Target, Json)>,
        unread: &mut Vec<String>,
    ) -> Result<(), DeviceError> {
        let members = self.members(collection).await?;
        let docs = self.get_all(&members).await?;
        for (path, doc) in members.iter().zip(docs) {
            let Some(unit) = doc else { continue };
            let u = clean(&last_segment(path));
            let point = format!("{kind}-{u}");
            // The unit's chassis is the same physical device: one scope,
            // where the chassis's own readings rank first.
            let chassis = unit
                .get("Links")
                .and_then(|l| l.get("Chassis"))
                .and_then(Json::as_array)
                .and_then(|c| c.first())
                .and_then(odata_id);
            let place = match chassis {
                Some(c) => (
                    format!("chassis-{}", clean(&last_segment(&c))),
                    WHOLE,
                    RANK_UNIT,
                ),
                None => (point.clone(), WHOLE, 0),
            };
            let mut targets = Vec::new();
            if let Some(env) = link(&unit, "EnvironmentMetrics") {
                let mut t = target(env, point.clone(), Kind::Environment);
                t.place = Some(place);
                targets.push(t);
            }
            for (key, side) in [
                ("PrimaryCoolantConnectors", "primary"),
                ("SecondaryCoolantConnectors", "secondary"),
            ] {
                if let Some(connectors) = link(&unit, key) {
                    for path in self.members(&connectors).await? {
                        let k = clean(&last_segment(&path));
                        targets.push(target(path, format!("{point}.{side}-{k}"), Kind::Coolant));
                    }
                }
            }
            if targets.is_empty() {
                unread.push(format!(
                    "{path}: a cooling unit with no EnvironmentMetrics or coolant connectors"
                ));
            }
            self.fetch_targets(targets, found).await?;
        }
        Ok(())
    }

    /// Reads each target once; keeps those that exist and, for sensors,
    /// only those that measure power or energy.
    pub(super) async fn fetch_targets(
        &self,
        targets: Vec<Target>,
        found: &mut Vec<(Target, Json)>,
    ) -> Result<(), DeviceError> {
        let paths: Vec<String> = targets.iter().map(|t| t.path.clone()).collect();
        let docs = self.get_all(&paths).await?;
        for (t, doc) in targets.into_iter().zip(docs) {
            let Some(doc) = doc else {
                tracing::debug!(path = %t.path, "Redfish resource listed but absent; skipped");
                continue;
            };
            if t.kind == Kind::Sensor && sensor_kind(&doc).is_none() {
                continue;
            }
            let mut t = t;
            if t.kind == Kind::Sensor
                && let Some((_, tier, _)) = t.place.as_mut()
            {
                // Placed as the chassis's insides; a whole-chassis or a
                // power-supply sensor moves up.
                let base = *tier - INSIDE;
                match doc.get("PhysicalContext").and_then(Json::as_str) {
                    Some("Chassis" | "Rack" | "Enclosure" | "PowerSubsystem") => *tier = base,
                    Some("PowerSupply") => *tier = base + SUPPLY,
                    _ => {}
                }
            }
            found.push((t, doc));
        }
        Ok(())
    }

    /// The member paths of a collection; none when it does not exist.
    pub(super) async fn members(&self, collection: &str) -> Result<Vec<String>, DeviceError> {
        let Some(doc) = self.get(collection).await? else {
            return Ok(Vec::new());
        };
        Ok(doc
            .get("Members")
            .and_then(Json::as_array)
            .map(|m| m.iter().filter_map(odata_id).collect())
            .unwrap_or_default())
    }
}

/// What a discovery yields: the plan, the first values, what is not read.
pub(super) type Discovered = (Vec<Target>, Vec<PointValue>, Vec<String>);

/// The scope of the `PowerDistribution` equipment at `path` (a chassis's
/// `Links.PowerDistribution`), named as its points are.
pub(super) fn distribution_scope(path: &str) -> Option<String> {
    DISTRIBUTION
        .iter()
        .filter(|(_, _, read)| *read)
        .find_map(|(key, prefix, _)| {
            let (_, id) = path.split_once(&format!("/PowerEquipment/{key}/"))?;
            Some(format!("{prefix}-{}", clean(id.trim_end_matches('/'))))
        })
}

pub(super) fn target(path: String, point: String, kind: Kind) -> Target {
    Target {
        path,
        point,
        kind,
        supply_prefix: String::new(),
        place: None,
    }
}

/// The outermost chassis that holds `path` (through `Links.ContainedBy`,
/// among the chassis read), and how many levels down `path` sits.
pub(super) fn containment<'a>(
    parents: &[(&'a str, Option<String>)],
    path: &'a str,
) -> (&'a str, u8) {
    let mut at = path;
    let mut depth = 0u8;
    // Bounded: a service that loops its containment stops here.
    while depth < 8 {
        let parent = parents
            .iter()
            .find(|(p, _)| *p == at)
            .and_then(|(_, parent)| parent.as_deref())
            .and_then(|parent| parents.iter().find(|(p, _)| *p == parent));
        let Some((parent, _)) = parent else { break };
        at = parent;
        depth += 1;
    }
    (at, depth)
}
