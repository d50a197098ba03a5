//! The task that polls one device at its own period: stamps the time,
//! feeds the [`Tracker`], announces new sensors with their scope, and
//! hands what each poll yields to the agent's main loop.

use super::{CountsIn, Device, DeviceConfig, PointValue, Tracker, TrackerEvent, Value, scope};
use crate::checkpoint::Checkpoint;
use vigie_protocol::{Gauge, Reading};

/// The unread list to log, when it differs from the one logged last
/// (a rediscovery that finds the same is not news).
fn unread_news(logged: &mut Vec<String>, now: Vec<String>) -> Option<Vec<String>> {
    if *logged == now {
        return None;
    }
    *logged = now.clone();
    (!now.is_empty()).then_some(now)
}

/// What a device task hands to the agent's main loop.
#[derive(Debug, Default)]
pub struct DeviceOutput {
    /// Interval energy.
    pub readings: Vec<Reading>,
    /// Instantaneous values.
    pub gauges: Vec<Gauge>,
    /// Sensors seen for the first time (for the inventory).
    pub new_sensors: Vec<vigie_protocol::SensorMeta>,
    /// Where the device's registers stand once these readings are counted.
    pub checkpoints: Vec<Checkpoint>,
    /// Registers found reset in this poll (each a new baseline).
    pub resets: u64,
}

/// The points of a poll that yield energy, each with whether it has an
/// energy register, in poll order.
fn energy_points(values: &[PointValue]) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    for v in values {
        let register = match v.value {
            Value::EnergyCounter { .. } => true,
            Value::PowerW(_) => false,
            Value::Gauge(..) => continue,
        };
        match out.iter_mut().find(|(p, _)| *p == v.point) {
            Some(slot) => slot.1 |= register,
            None => out.push((&v.point, register)),
        }
    }
    out
}

/// Polls `device` every `cfg.period` until `out` closes, sending what each
/// poll yields. Failures are logged when the device's state changes (not at
/// every period) and retried.
pub fn spawn(
    cfg: &DeviceConfig,
    mut device: Box<dyn Device>,
    out: tokio::sync::mpsc::Sender<DeviceOutput>,
    clock: fn() -> i64,
    resume: &[Checkpoint],
) -> tokio::task::JoinHandle<()> {
    let period = cfg.period.max(std::time::Duration::from_millis(100));
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    let mut tracker = Tracker::new(&cfg.name, cfg.max_power_w, period_ms.saturating_mul(5));
    let resumed = tracker.resume(resume);
    if resumed > 0 {
        tracing::info!(device = %cfg.name, registers = resumed, "device registers resumed from the previous run");
    }
    let name = cfg.name.clone();
    let points = cfg.points.clone();
    let counts_in = cfg.counts_in;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced: Vec<String> = Vec::new();
        let mut unread_logged: Vec<String> = Vec::new();
        let mut failing = false;
        loop {
            tick.tick().await;
            let now = clock();
            let values = match tokio::time::timeout(period, device.poll()).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(device = %name, error = %e, "device read failed; retrying every period");
                    }
                    failing = true;
                    continue;
                }
                Err(_) => {
                    if !failing {
                        tracing::warn!(device = %name, period_ms, "device read timed out; retrying every period");
                    }
                    failing = true;
                    continue;
                }
            };
            if failing {
                tracing::info!(device = %name, "device answers again");
                failing = false;
            }
            if let Some(unread) = unread_news(&mut unread_logged, device.unread()) {
                tracing::warn!(device = %name, unread = ?unread, "device resources found but not read");
            }
            let mut o = DeviceOutput::default();
            for e in tracker.observe(now, &values, &mut o.readings, &mut o.gauges) {
                if matches!(e, TrackerEvent::CounterReset { .. }) {
                    o.resets += 1;
                }
                tracing::warn!(device = %name, event = ?e, "device counter");
            }
            let scopes = if values.iter().any(|v| !announced.contains(&v.point)) {
                let energy = energy_points(&values);
                let names: Vec<&str> = energy.iter().map(|(p, _)| *p).collect();
                let scopes = scope::assign(&name, &device.places(&names), &energy);
                match counts_in {
                    CountsIn::Host => scopes,
                    CountsIn::Site => scope::off_host(&name, &energy, scopes),
                }
            } else {
                Vec::new()
            };
            for v in &values {
                if announced.contains(&v.point) {
                    continue;
                }
                announced.push(v.point.clone());
                let counted = values
                    .iter()
                    .any(|x| x.point == v.point && matches!(x.value, Value::EnergyCounter { .. }));
                let powered = values
                    .iter()
                    .any(|x| x.point == v.point && matches!(x.value, Value::PowerW(_)));
                let topo = points.iter().find(|p| p.point == v.point);
                o.new_sensors.push(vigie_protocol::SensorMeta {
                    name: tracker.sensor(&v.point),
                    kind: device.kind().into(),
                    domain: v.point.split(['-', ':']).next().unwrap_or("point").into(),
                    source: device.source(),
                    max_range_uj: None,
                    method: if counted {
                        Some(vigie_protocol::Method::Counter)
                    } else if powered {
                        Some(vigie_protocol::Method::IntegratedPower)
                    } else {
                        None
                    },
                    topology: topo.map(|t| vigie_protocol::Topology {
                        room: t.room.clone(),
                        rack: t.rack.clone(),
                        pdu: t.pdu.clone(),
                        outlet: t.outlet.clone(),
                        feeds: t.feeds.clone(),
                    }),
                    scope: scopes
                        .iter()
                        .find(|(p, _)| *p == v.point)
                        .map(|(_, s)| s.clone()),
                });
            }
            o.checkpoints = tracker.checkpoints();
            if out.send(o).await.is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::DeviceError;
    use crate::device::testing::{Scripted, counter, power};

    static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    fn test_clock() -> i64 {
        CLOCK.fetch_add(1_000, std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn the_runner_survives_failures_and_announces_points_once() {
        let cfg: DeviceConfig = toml::from_str(
            "name = \"pdu-a1\"\nperiod = \"1s\"\n[[points]]\npoint = \"outlet-7\"\nrack = \"r12\"\nfeeds = \"node-01\"\n",
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let dev = Scripted(vec![
            Ok(vec![counter("outlet-7", 10), power("outlet-7", 50.0)]),
            Err(DeviceError::Unreachable("cable".into())),
            Ok(vec![counter("outlet-7", 11), power("outlet-7", 60.0)]),
        ]);
        let task = spawn(&cfg, Box::new(dev), tx, test_clock, &[]);
        let first = rx.recv().await.unwrap();
        assert_eq!(first.new_sensors.len(), 1);
        let meta = &first.new_sensors[0];
        assert_eq!(meta.name, "pdu-a1:outlet-7");
        assert_eq!(meta.method, Some(vigie_protocol::Method::Counter));
        let topo = meta.topology.as_ref().unwrap();
        assert_eq!(
            (topo.rack.as_deref(), topo.feeds.as_deref()),
            (Some("r12"), Some("node-01"))
        );
        let second = rx.recv().await.unwrap();
        assert!(second.new_sensors.is_empty(), "announced once");
        assert_eq!(
            second.readings.len(),
            1,
            "the failed poll lost nothing: one reading spans it"
        );
        assert_eq!(second.readings[0].energy_uj, 360_000_000_000);
        assert_eq!(second.resets, 0);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_runner_counts_a_register_reset() {
        let cfg: DeviceConfig = toml::from_str("name = \"pdu-a1\"\nperiod = \"1s\"\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        // 0.1 kWh units: 1000 back to 3 in a second would be a 360 MW wrap.
        let dev = Scripted(vec![
            Ok(vec![counter("device", 1_000)]),
            Ok(vec![counter("device", 3)]),
            Ok(vec![counter("device", 4)]),
        ]);
        let task = spawn(&cfg, Box::new(dev), tx, test_clock, &[]);
        let outs = [
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(outs.iter().map(|o| o.resets).collect::<Vec<_>>(), [0, 1, 0]);
        assert!(outs[1].readings.is_empty(), "no energy across the reset");
        assert_eq!(outs[2].readings[0].energy_uj, 360_000_000_000);
        task.abort();
    }

    #[test]
    fn what_is_not_read_is_logged_when_it_changes_not_at_every_poll() {
        let mut logged = Vec::new();
        let floor = vec!["FloorPDUs/1: not read".to_owned()];
        assert_eq!(unread_news(&mut logged, floor.clone()), Some(floor.clone()));
        assert_eq!(unread_news(&mut logged, floor.clone()), None, "same list");
        assert_eq!(unread_news(&mut logged, floor.clone()), None);
        let more = vec![
            "FloorPDUs/1: not read".to_owned(),
            "PSU3: no Metrics".to_owned(),
        ];
        assert_eq!(unread_news(&mut logged, more.clone()), Some(more));
        assert_eq!(unread_news(&mut logged, Vec::new()), None, "nothing to say");
        assert_eq!(unread_news(&mut logged, floor.clone()), Some(floor));
    }

    #[tokio::test(start_paused = true)]
    async fn a_site_devices_sensors_are_not_in_the_polling_hosts_totals() {
        // The demo's facility meters, polled by the first host's agent.
        let facility = crate::device::FakeFacility::new();
        facility.electricity("grid", 1000.0, 2);
        facility.electricity("cooling", 300.0, 1);
        facility.heat("heat", 0.5, 45.0, 30.0);
        let inventory = |toml_cfg: &str| {
            let cfg: DeviceConfig = toml::from_str(toml_cfg).unwrap();
            let facility = facility.clone();
            async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(4);
                let task = spawn(&cfg, Box::new(facility), tx, test_clock, &[]);
                let first = rx.recv().await.unwrap();
                task.abort();
                first.new_sensors
            }
        };
        let counted = |sensors: &[vigie_protocol::SensorMeta]| -> Vec<String> {
            sensors
                .iter()
                .filter(|m| m.method.is_some() && m.in_totals())
                .map(|m| m.name.clone())
                .collect()
        };
        let site = inventory("name = \"facility\"\nperiod = \"5s\"\ncounts_in = \"site\"\n").await;
        let energy: Vec<&str> = site
            .iter()
            .filter(|m| m.method.is_some())
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(energy, ["facility:grid", "facility:cooling"]);
        assert!(counted(&site).is_empty(), "{site:?}");
        assert!(site.iter().filter(|m| m.method.is_some()).all(|m| {
            m.scope.as_ref().map(|s| s.role) == Some(vigie_protocol::ScopeRole::Component)
        }));
        // The host's own device (the default) still counts.
        let own = inventory("name = \"facility\"\nperiod = \"5s\"\n").await;
        assert_eq!(counted(&own), ["facility:grid", "facility:cooling"]);
    }
}
