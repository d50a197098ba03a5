//! The SQLite backend of [`LedgerRead`] and [`LedgerWrite`]: a
//! `rusqlite::Connection` opened by [`open`] (or [`open_in_memory`]) is
//! the ledger. The SQL is in [`crate::store`]; this module only maps its
//! rows and errors onto the traits.

use crate::api::{HistorySink, LedgerError, LedgerRead, LedgerWrite};
use crate::store::history::{self, HistoryWriter};
use crate::store::losses::{self, Gap, Losses};
use crate::store::manual::{self, ManualError, ManualReading};
use crate::store::{self, Amount, EnergyRow, HostRow, Pending, Resolution, Total};
use rusqlite::Connection;
use std::collections::{HashMap, HashSet};
use vigie_energy::Microjoules;
use vigie_protocol::GaugeQuantity;

pub use crate::store::{open, open_in_memory};

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Backend(Box::new(e))
    }
}

impl From<ManualError> for LedgerError {
    fn from(e: ManualError) -> Self {
        match e {
            ManualError::Store(e) => e.into(),
            ManualError::Refused(why) => LedgerError::Refused(why),
        }
    }
}

impl LedgerRead for Connection {
    fn energy(
        &self,
        res: Resolution,
        from_ms: i64,
        to_ms: i64,
        by_sensor: bool,
        by_bucket: bool,
    ) -> Result<Vec<EnergyRow>, LedgerError> {
        Ok(store::energy(
            self, res, from_ms, to_ms, by_sensor, by_bucket,
        )?)
    }

    fn energy_span(
        &self,
        from_ms: i64,
        to_ms: i64,
        by_sensor: bool,
    ) -> Result<Vec<EnergyRow>, LedgerError> {
        Ok(store::energy_span(self, from_ms, to_ms, by_sensor)?)
    }

    fn sensor_buckets(
        &self,
        res: Resolution,
        host: &str,
        sensor: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Amount)>, LedgerError> {
        Ok(store::sensor_buckets(
            self, res, host, sensor, from_ms, to_ms,
        )?)
    }

    fn totals(&self) -> Result<Vec<(String, String, Total)>, LedgerError> {
        Ok(store::totals(self)?)
    }

    fn hosts(&self) -> Result<Vec<HostRow>, LedgerError> {
        Ok(store::hosts(self)?)
    }

    fn uncounted_sensors(&self) -> Result<HashMap<String, HashSet<String>>, LedgerError> {
        Ok(store::uncounted_sensors(self)?)
    }

    fn uncounted_sensors_of(&self, host: &str) -> Result<HashSet<String>, LedgerError> {
        Ok(store::uncounted_sensors_of(self, host)?)
    }

    fn register_sensors(&self) -> Result<Vec<(String, String)>, LedgerError> {
        Ok(store::register_sensors(self)?)
    }

    fn registers(
        &self,
        host: &str,
        sensor: &str,
        quantity: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, f64)>, LedgerError> {
        Ok(store::registers(
            self, host, sensor, quantity, from_ms, to_ms,
        )?)
    }

    fn manual_samples(
        &self,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, i64, u64, bool)>, LedgerError> {
        Ok(manual::samples(self, meter, from_ms, to_ms)?)
    }

    fn quarantine_count(&self) -> Result<i64, LedgerError> {
        Ok(store::quarantine_count(self)?)
    }

    fn first_data_ms(&self) -> Result<Option<i64>, LedgerError> {
        Ok(store::first_data_ms(self)?)
    }

    fn host_losses(
        &self,
        host: &str,
        uncounted: Option<&HashSet<String>>,
    ) -> Result<Losses, LedgerError> {
        Ok(losses::host_losses(self, host, uncounted)?)
    }

    fn hosts_with_losses(&self) -> Result<Vec<String>, LedgerError> {
        Ok(losses::hosts_with_losses(self)?)
    }

    fn missing_by_sensor(&self, host: &str) -> Result<Vec<(u64, String, u64)>, LedgerError> {
        Ok(losses::missing_by_sensor(self, host)?)
    }

    fn gap_report(
        &self,
        host: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Gap>, bool), LedgerError> {
        Ok(losses::gap_report(self, host, from_ms, to_ms, limit)?)
    }
}

impl HistorySink for HistoryWriter<'_> {
    fn hour(
        &mut self,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: Microjoules,
    ) -> Result<(), LedgerError> {
        Ok(HistoryWriter::hour(
            self, host, sensor, bucket_ms, measured,
        )?)
    }

    fn minute(
        &mut self,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: Microjoules,
    ) -> Result<(), LedgerError> {
        Ok(HistoryWriter::minute(
            self, host, sensor, bucket_ms, measured,
        )?)
    }

    fn register(
        &mut self,
        host: &str,
        sensor: &str,
        quantity: GaugeQuantity,
        at_ms: i64,
        value: f64,
    ) -> Result<(), LedgerError> {
        Ok(HistoryWriter::register(
            self, host, sensor, quantity, at_ms, value,
        )?)
    }

    fn hour_rows(&self) -> usize {
        HistoryWriter::hour_rows(self)
    }
}

impl LedgerWrite for Connection {
    fn add_manual(
        &mut self,
        meter: &str,
        readings: &[ManualReading],
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        Ok(manual::add(self, meter, readings, now_ms)?)
    }

    fn write_history(
        &mut self,
        f: &mut dyn FnMut(&mut dyn HistorySink) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        history::write(self, |w| f(w))
    }

    fn add_energy(&mut self, pending: &Pending) -> Result<(), LedgerError> {
        let tx = self.transaction()?;
        store::add_energy(&tx, pending)?;
        tx.commit()?;
        Ok(())
    }

    fn prune_minutes(&mut self, before_ms: i64) -> Result<u64, LedgerError> {
        Ok(store::prune_minutes(self, before_ms)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::write_history;
    use crate::store::record_registers;
    use vigie_energy::{HOUR_MS, MINUTE_MS};

    /// A ledger with host `h`: sensor `cpu` 1 J measured per minute over
    /// the first 90 minutes, and sensor `gpu` 2 J estimated in minute 0.
    fn ledger() -> Connection {
        let mut conn = open_in_memory().unwrap();
        let mut p = Pending::default();
        for m in 0..90 {
            let t = m * MINUTE_MS;
            let a = Amount {
                measured: 1_000_000,
                estimated: 0,
            };
            p.minute.insert(("h".into(), "cpu".into(), t), a);
            let h = p
                .hour
                .entry(("h".into(), "cpu".into(), t / HOUR_MS * HOUR_MS))
                .or_default();
            h.measured += a.measured;
        }
        let g = Amount {
            measured: 0,
            estimated: 2_000_000,
        };
        p.minute.insert(("h".into(), "gpu".into(), 0), g);
        p.hour.insert(("h".into(), "gpu".into(), 0), g);
        let tx = conn.transaction().unwrap();
        store::add_energy(&tx, &p).unwrap();
        store::touch_host(&tx, "par1", "h", "boot", 1, 7, 5_000).unwrap();
        tx.commit().unwrap();
        conn
    }

    fn dyn_read(c: &Connection) -> &dyn LedgerRead {
        c
    }

    #[test]
    fn energy_sums_per_host_sensor_and_bucket() {
        let conn = ledger();
        let l = dyn_read(&conn);
        let rows = l
            .energy(Resolution::Hour, 0, 2 * HOUR_MS, true, true)
            .unwrap();
        let got: Vec<(Option<&str>, Option<i64>, u128, u128)> = rows
            .iter()
            .map(|r| {
                (
                    r.sensor.as_deref(),
                    r.bucket_ms,
                    r.amount.measured,
                    r.amount.estimated,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("cpu"), Some(0), 60_000_000, 0),
                (Some("cpu"), Some(HOUR_MS), 30_000_000, 0),
                (Some("gpu"), Some(0), 0, 2_000_000),
            ]
        );
        let per_host = l
            .energy(Resolution::Minute, 0, 10 * MINUTE_MS, false, false)
            .unwrap();
        assert_eq!(per_host.len(), 1);
        assert_eq!(per_host[0].amount.measured, 10_000_000);
        assert_eq!(per_host[0].amount.estimated, 2_000_000);
    }

    #[test]
    fn energy_span_joins_hours_and_minute_edges() {
        let conn = ledger();
        // 00:30 to 01:15: 30 minutes of hour 0 and 15 of hour 1.
        let rows = dyn_read(&conn)
            .energy_span(30 * MINUTE_MS, 75 * MINUTE_MS, true)
            .unwrap();
        assert_eq!(rows.len(), 1, "gpu has nothing after minute 0");
        assert_eq!(rows[0].sensor.as_deref(), Some("cpu"));
        assert_eq!(rows[0].amount.measured, 45_000_000);
    }

    #[test]
    fn sensor_buckets_of_one_sensor_in_time_order() {
        let conn = ledger();
        let b = dyn_read(&conn)
            .sensor_buckets(Resolution::Minute, "h", "cpu", 88 * MINUTE_MS, HOUR_MS * 3)
            .unwrap();
        assert_eq!(
            b.iter().map(|(t, a)| (*t, a.measured)).collect::<Vec<_>>(),
            vec![(88 * MINUTE_MS, 1_000_000), (89 * MINUTE_MS, 1_000_000)]
        );
    }

    #[test]
    fn totals_hosts_quarantine_and_first_data() {
        let mut conn = ledger();
        let l = dyn_read(&conn);
        let t = l.totals().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].2.measured, 90_000_000);
        assert_eq!(t[1].2.estimated, 2_000_000);
        let hosts = l.hosts().unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            (hosts[0].site.as_str(), hosts[0].last_seq),
            ("par1", Some(7))
        );
        assert_eq!(l.quarantine_count().unwrap(), 0);
        // Buckets before 2000 do not start the ledger's data.
        assert_eq!(l.first_data_ms().unwrap(), None);
        let tx = conn.transaction().unwrap();
        store::quarantine(&tx, 1, "t", "bad_json", "x", b"{").unwrap();
        tx.commit().unwrap();
        assert_eq!(dyn_read(&conn).quarantine_count().unwrap(), 1);
        let y2k = 946_684_800_000;
        let w: &mut dyn LedgerWrite = &mut conn;
        write_history(w, |w| w.hour("h", "cpu", y2k + HOUR_MS, Microjoules(5))).unwrap();
        assert_eq!(
            dyn_read(&conn).first_data_ms().unwrap(),
            Some(y2k + HOUR_MS)
        );
    }

    #[test]
    fn uncounted_sensors_come_from_the_inventory() {
        let mut conn = ledger();
        let sensor =
            |name: &str, scope: Option<vigie_protocol::ScopeRole>| vigie_protocol::SensorMeta {
                name: name.into(),
                kind: "redfish".into(),
                domain: "chassis".into(),
                source: "http://127.0.0.1".into(),
                max_range_uj: None,
                method: None,
                topology: None,
                scope: scope.map(|role| vigie_protocol::EnergyScope {
                    scope: "1U".into(),
                    role,
                    of: (role != vigie_protocol::ScopeRole::Boundary).then(|| "total".into()),
                }),
            };
        let mut meta = vigie_protocol::samples::meta();
        meta.host = "h".into();
        meta.sensors = vec![
            sensor("total", Some(vigie_protocol::ScopeRole::Boundary)),
            sensor("psu", Some(vigie_protocol::ScopeRole::Component)),
            sensor("rapl", None),
        ];
        let tx = conn.transaction().unwrap();
        store::set_meta(&tx, "par1", "h", &serde_json::to_string(&meta).unwrap()).unwrap();
        tx.commit().unwrap();
        let l = dyn_read(&conn);
        let want: HashSet<String> = ["psu".to_owned()].into();
        assert_eq!(l.uncounted_sensors_of("h").unwrap(), want);
        assert_eq!(l.uncounted_sensors_of("nobody").unwrap(), HashSet::new());
        let all = l.uncounted_sensors().unwrap();
        assert_eq!(all.get("h").cloned().unwrap_or_default(), want);
    }

    #[test]
    fn registers_and_their_sensors() {
        let mut conn = ledger();
        let g = |at_ms, value| vigie_protocol::Gauge {
            sensor: "heat".into(),
            quantity: GaugeQuantity::HeatEnergyKwh,
            at_ms,
            value,
        };
        let tx = conn.transaction().unwrap();
        record_registers(
            &tx,
            "f",
            &[g(100, 1.0), g(200, 2.0), g(300, 3.0), g(400, 4.0)],
        )
        .unwrap();
        tx.commit().unwrap();
        let l = dyn_read(&conn);
        assert_eq!(
            l.register_sensors().unwrap(),
            vec![("f".to_owned(), "heat".to_owned())]
        );
        // The one before 250 and the one after 300 come with those in it.
        assert_eq!(
            l.registers("f", "heat", "heat_energy_kwh", 250, 300)
                .unwrap(),
            vec![(200, 2.0), (300, 3.0), (400, 4.0)]
        );
    }

    #[test]
    fn manual_readings_stored_read_and_refused() {
        let mut conn = ledger();
        let r = |start_ms, end_ms, amount| ManualReading {
            start_ms,
            end_ms,
            amount,
            estimated: false,
            note: None,
        };
        let w: &mut dyn LedgerWrite = &mut conn;
        w.add_manual("water", &[r(0, 100, 7), r(100, 200, 9)], 1)
            .unwrap();
        let refused = w.add_manual("water", &[r(50, 150, 1)], 2).unwrap_err();
        assert!(matches!(refused, LedgerError::Refused(ref m) if m.contains("overlaps")));
        assert_eq!(
            dyn_read(&conn).manual_samples("water", 150, 1000).unwrap(),
            vec![(100, 200, 9, false)]
        );
    }

    #[test]
    fn history_keeps_what_is_there_and_prune_drops_old_minutes() {
        let mut conn = ledger();
        let w: &mut dyn LedgerWrite = &mut conn;
        let rows = write_history(w, |w| {
            w.hour("h", "cpu", 0, Microjoules(1))?; // already there: kept
            w.hour("h", "cpu", 5 * HOUR_MS, Microjoules(3))?;
            w.minute("h", "cpu", 5 * HOUR_MS, Microjoules(3))?;
            w.register("f", "heat", GaugeQuantity::HeatEnergyKwh, 9, 1.5)?;
            Ok(w.hour_rows())
        })
        .unwrap();
        assert_eq!(rows, 1);
        let l = dyn_read(&conn);
        assert_eq!(
            l.sensor_buckets(Resolution::Hour, "h", "cpu", 0, 6 * HOUR_MS)
                .unwrap()
                .iter()
                .map(|(t, a)| (*t, a.measured))
                .collect::<Vec<_>>(),
            vec![(0, 60_000_000), (HOUR_MS, 30_000_000), (5 * HOUR_MS, 3)]
        );
        assert_eq!(
            l.registers("f", "heat", "heat_energy_kwh", 0, 10).unwrap(),
            vec![(9, 1.5)]
        );
        // A failing history writes nothing.
        let w: &mut dyn LedgerWrite = &mut conn;
        let failed = write_history(w, |w| -> Result<(), LedgerError> {
            w.hour("h", "cpu", 7 * HOUR_MS, Microjoules(3))?;
            Err(LedgerError::Refused("no".into()))
        });
        assert!(failed.is_err());
        assert!(
            dyn_read(&conn)
                .sensor_buckets(Resolution::Hour, "h", "cpu", 7 * HOUR_MS, 8 * HOUR_MS)
                .unwrap()
                .is_empty()
        );
        // Hour 0's 60 minutes go, hour 1's 30 and hour 5's one stay.
        let w: &mut dyn LedgerWrite = &mut conn;
        assert_eq!(w.prune_minutes(HOUR_MS + 10 * MINUTE_MS).unwrap(), 61);
        let left = dyn_read(&conn)
            .energy(Resolution::Minute, 0, 6 * HOUR_MS, false, false)
            .unwrap();
        assert_eq!(left[0].amount.measured, 30_000_000 + 3);
    }

    #[test]
    fn add_energy_sums_into_the_buckets() {
        let mut conn = ledger();
        let mut p = Pending::default();
        let a = Amount {
            measured: 5,
            estimated: 7,
        };
        p.minute.insert(("h".into(), "cpu".into(), 0), a);
        p.hour.insert(("h".into(), "cpu".into(), 0), a);
        p.hour.insert(("h".into(), "fan".into(), 0), a);
        let w: &mut dyn LedgerWrite = &mut conn;
        w.add_energy(&p).unwrap();
        let l = dyn_read(&conn);
        let minute = l
            .sensor_buckets(Resolution::Minute, "h", "cpu", 0, MINUTE_MS)
            .unwrap();
        assert_eq!(
            minute,
            vec![(
                0,
                Amount {
                    measured: 1_000_005,
                    estimated: 7
                }
            )]
        );
        let t = l.totals().unwrap();
        let got: Vec<(&str, u128, u128)> = t
            .iter()
            .map(|(_, s, a)| (s.as_str(), a.measured, a.estimated))
            .collect();
        assert_eq!(
            got,
            vec![("cpu", 90_000_005, 7), ("fan", 5, 7), ("gpu", 0, 2_000_000)]
        );
    }

    #[test]
    fn losses_read_through_the_trait() {
        let conn = ledger();
        conn.execute_batch(
            "INSERT INTO host_gaps (host, gaps, gap_ms) VALUES ('h', 2, 1500);
             INSERT INTO epoch_sensors (host, epoch, sensor, received_uj, last_end_ms, last_cum_uj)
               VALUES ('h', 1, 'cpu', 100, 10, 130), ('h', 1, 'gpu', 5, 10, 5);
             INSERT INTO batches (host, epoch, seq, boot_id, received_ms, readings, start_ms, end_ms)
               VALUES ('h', 1, 1, 'b', 0, 1, 0, 100), ('h', 1, 3, 'b', 0, 1, 400, 500);",
        )
        .unwrap();
        let l = dyn_read(&conn);
        assert_eq!(l.hosts_with_losses().unwrap(), vec!["h".to_owned()]);
        assert_eq!(
            l.missing_by_sensor("h").unwrap(),
            vec![(1, "cpu".to_owned(), 30)]
        );
        let all = l.host_losses("h", None).unwrap();
        assert_eq!((all.gaps, all.gap_ms, all.missing_uj), (2, 1500, 30));
        let skip: HashSet<String> = ["cpu".to_owned()].into();
        assert_eq!(l.host_losses("h", Some(&skip)).unwrap().missing_uj, 0);
        let (gaps, more) = l.gap_report("h", 0, 1000, 10).unwrap();
        assert!(!more);
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].from_ms, gaps[0].to_ms), (100, 400));
        assert_eq!((gaps[0].seq_before, gaps[0].seq_after), (1, 3));
    }
}
