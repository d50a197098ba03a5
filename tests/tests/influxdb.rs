//! The InfluxDB sink against real servers on 127.0.0.1: minute energy
//! from a real ledger (batches through the real ingest path) written to
//! VictoriaMetrics over `/api/v2/write` and read back exactly, a late
//! batch rewriting its minute, and the site figures; the daemon itself
//! with `[influxdb]`; and, against a scripted server, a 500
//! retried until written and a 400 dropped and counted.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigie_collector::config::CollectorConfig;
use vigie_collector::influx::{InfluxConfig, Sink, SinkMetrics};
use vigie_collector::ingest::{Ingestor, Message, Outcome};
use vigie_collector::metrics::SiteGauges;
use vigie_collector::store;
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::{Exported, REQUIRE_VICTORIA, VictoriaMetrics, skip, wait_for};

const MIN: i64 = 60_000;
const EPOCH: u64 = 1_700_000_000_000;

/// A telemetry message of `host` with `readings` as
/// `(sensor, start, end, energy µJ, cumulative µJ, quality)`.
fn batch(seq: u64, readings: &[(&str, i64, i64, u64, u64, Quality)]) -> Message {
    let b = TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: "node-01".into(),
        boot_id: "2f1c7f0e-8c1e-4d55-9a57-0c6d3f6f2b11".into(),
        epoch: EPOCH,
        seq,
        readings: readings
            .iter()
            .map(|(sensor, start, end, e, cum, q)| Reading {
                sensor: (*sensor).into(),
                start_ms: *start,
                end_ms: *end,
                energy_uj: *e,
                cumulative_uj: *cum,
                power_w: None,
                quality: *q,
            })
            .collect(),
        gauges: vec![],
        workloads: vec![],
    };
    Message {
        topic: "vigie/v1/par1/node-01/telemetry".into(),
        payload: serde_json::to_vec(&b).unwrap(),
    }
}

fn ingest(ing: &mut Ingestor, m: Message, now: i64) {
    let out = ing.ingest_group(&[m], now).unwrap();
    assert!(matches!(out[0], Outcome::Accepted(_)), "{out:?}");
}

fn config(url: &str, token_file: &std::path::Path, extra: &str) -> InfluxConfig {
    CollectorConfig::from_toml(&format!(
        "[influxdb]\nurl = \"{url}\"\norg = \"dc\"\nbucket = \"vigie\"\ntoken_file = \"{}\"\nretry_initial = \"10ms\"\nretry_max = \"20ms\"\n{extra}",
        token_file.display()
    ))
    .unwrap()
    .influxdb
    .unwrap()
}

/// The wall clock's last whole minute: VictoriaMetrics refuses samples
/// far from its own clock, so the test's data is placed just before now
/// (the sink itself is given this time, not the clock).
fn recent_minute() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now / MIN * MIN
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minute_energy_reaches_victoria_metrics_exactly_and_late_energy_rewrites_its_minute() {
    let Some(bin) = VictoriaMetrics::binary() else {
        skip(
            REQUIRE_VICTORIA,
            "all",
            "victoria-metrics not found",
            "apt-get install -y victoria-metrics",
        );
        return;
    };
    let vm = VictoriaMetrics::start(&bin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("influx.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let now = recent_minute();
    let t0 = now - 10 * MIN;
    let (a, b) = ("rapl:package-0", "bmc:psu-1");
    let mut ing = Ingestor::new(
        store::open(&ledger).unwrap(),
        vigie_protocol::Limits::default(),
    );
    // Minute t0 gets its first half now and its second half late (seq 2).
    ingest(
        &mut ing,
        batch(
            1,
            &[
                (a, t0, t0 + 30_000, 3_000_000, 3_000_000, Quality::Measured),
                (b, t0, t0 + MIN, 1_234_567, 1_234_567, Quality::Estimated),
            ],
        ),
        now,
    );
    ingest(
        &mut ing,
        batch(
            3,
            &[(
                a,
                t0 + MIN,
                t0 + 2 * MIN,
                7_500_000,
                13_500_123,
                Quality::Measured,
            )],
        ),
        now,
    );

    let metrics = SinkMetrics::default();
    let mut sink = Sink::new(&config(&vm.url(), &token, ""), metrics.clone()).unwrap();
    let conn = store::open(&ledger).unwrap();
    assert_eq!(sink.collect(&conn, now + 5_000).unwrap(), 3);
    let f = sink.flush().await;
    assert_eq!((f.written, f.dropped, f.pending), (3, 0, 0));

    // Every field of every minute, exactly.
    let series = |vm: &VictoriaMetrics, done: &dyn Fn(&Exported) -> bool| {
        wait_for(
            "the points in VictoriaMetrics",
            Duration::from_secs(20),
            Duration::from_millis(200),
            || vm.export("vigie_energy_.*").ok().filter(|s| done(s)),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.log()))
    };
    let samples = |s: &Exported, name: &str, sensor: &str, at: i64| {
        let mut v: Vec<f64> = s
            .iter()
            .filter(|(l, _)| l["__name__"] == name && l["sensor"] == sensor)
            .inspect(|(l, _)| assert_eq!(l["host"], "node-01"))
            .flat_map(|(_, v)| v.iter().filter(|(t, _)| *t == at).map(|(_, x)| *x))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    // 3 points of 5 fields each.
    let s = series(&vm, &|s| {
        s.iter().map(|(_, v)| v.len()).sum::<usize>() >= 15
    });
    assert_eq!(
        samples(&s, "vigie_energy_energy_uj", a, t0),
        vec![3_000_000.0]
    );
    assert_eq!(
        samples(&s, "vigie_energy_measured_uj", a, t0),
        vec![3_000_000.0]
    );
    assert_eq!(samples(&s, "vigie_energy_estimated_uj", a, t0), vec![0.0]);
    assert_eq!(samples(&s, "vigie_energy_estimated", a, t0), vec![0.0]);
    assert_eq!(samples(&s, "vigie_energy_power_w", a, t0), vec![0.05]);
    assert_eq!(
        samples(&s, "vigie_energy_energy_uj", a, t0 + MIN),
        vec![7_500_000.0]
    );
    assert_eq!(
        samples(&s, "vigie_energy_power_w", a, t0 + MIN),
        vec![0.125]
    );
    assert_eq!(
        samples(&s, "vigie_energy_energy_uj", b, t0),
        vec![1_234_567.0]
    );
    assert_eq!(samples(&s, "vigie_energy_measured_uj", b, t0), vec![0.0]);
    assert_eq!(
        samples(&s, "vigie_energy_estimated_uj", b, t0),
        vec![1_234_567.0]
    );
    assert_eq!(samples(&s, "vigie_energy_estimated", b, t0), vec![1.0]);

    // The site figures the metrics show, once a minute, at its start.
    let g = SiteGauges {
        figures: vec![("PUE", 1.25, false)],
        energy: vec![("main grid".into(), "grid-import", 3.6e6, true)],
        coverage: vec![],
        ppue: vec![],
    };
    assert_eq!(sink.collect_site(&[("day", g.clone())], now + 5_000), 2);
    assert_eq!(sink.collect_site(&[("day", g)], now + 9_000), 0);
    assert_eq!(sink.flush().await.written, 2);
    let site = wait_for(
        "the site figures in VictoriaMetrics",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || vm.export("vigie_site.*").ok().filter(|s| s.len() >= 4),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", vm.log()));
    let value = |name: &str, label: (&str, &str)| {
        site.iter()
            .find(|(l, _)| l["__name__"] == name && l[label.0] == label.1 && l["period"] == "day")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        value("vigie_site_value", ("indicator", "PUE")),
        Some(vec![(now, 1.25)])
    );
    assert_eq!(
        value("vigie_site_estimated", ("indicator", "PUE")),
        Some(vec![(now, 0.0)])
    );
    let meter = value("vigie_site_meter_energy_j", ("meter", "main grid"));
    assert_eq!(meter, Some(vec![(now, 3.6e6)]));
    assert_eq!(
        value("vigie_site_meter_estimated", ("role", "grid-import")),
        Some(vec![(now, 1.0)])
    );

    // Nothing changed: nothing written again.
    assert_eq!(sink.collect(&conn, now + 15_000).unwrap(), 0);
    // The late half of minute t0 arrives: only that minute is written
    // again, with the whole minute's energy.
    ingest(
        &mut ing,
        batch(
            2,
            &[(
                a,
                t0 + 30_000,
                t0 + MIN,
                3_000_123,
                6_000_123,
                Quality::Measured,
            )],
        ),
        now + 20_000,
    );
    assert_eq!(sink.collect(&conn, now + 25_000).unwrap(), 1);
    assert_eq!(sink.flush().await.written, 1);
    let s = series(&vm, &|s| {
        samples(s, "vigie_energy_energy_uj", a, t0).len() >= 2
    });
    // VictoriaMetrics keeps both samples of the rewritten minute (InfluxDB
    // replaces the point); the larger is the minute's energy.
    assert_eq!(
        samples(&s, "vigie_energy_energy_uj", a, t0),
        vec![3_000_000.0, 6_000_123.0]
    );
    assert_eq!(
        samples(&s, "vigie_energy_energy_uj", a, t0 + MIN),
        vec![7_500_000.0]
    );
    assert_eq!(metrics.written(), 6);
    assert_eq!(metrics.write_errors(), 0);
    // The ledger agrees: the sum of the minutes written is its total.
    let total: u128 = store::totals(&conn)
        .unwrap()
        .iter()
        .map(|(_, _, t)| t.measured + t.estimated)
        .sum();
    assert_eq!(total, 6_000_123 + 7_500_000 + 1_234_567);
}

/// A server on 127.0.0.1 answering each request with the next status of
/// its script (204 once the script is done), keeping each request's head
/// and body.
#[allow(clippy::type_complexity)]
async fn scripted_server(
    script: Arc<Mutex<VecDeque<u16>>>,
) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (script, kept) = (script.clone(), kept.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Head, then Content-Length bytes of body (bounded).
                let (head, body) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 || buf.len() > 16 << 20 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let body =
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                        break (head, body);
                    }
                };
                let status = script.lock().unwrap().pop_front().unwrap_or(204);
                kept.lock().unwrap().push((head, body));
                let text = if status == 400 {
                    r#"{"code":"invalid","message":"unable to parse"}"#
                } else {
                    ""
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_refusals_dropped_and_counted() {
    let script = Arc::new(Mutex::new(VecDeque::from([500, 204])));
    let (url, seen) = scripted_server(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("influx.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let t0 = 1_795_000_020_000 / MIN * MIN;
    let now = t0 + 10 * MIN;
    let mut ing = Ingestor::new(
        store::open_in_memory().unwrap(),
        vigie_protocol::Limits::default(),
    );
    ingest(
        &mut ing,
        batch(
            1,
            &[(
                "rapl:package-0",
                t0,
                t0 + MIN,
                6_000_000,
                6_000_000,
                Quality::Measured,
            )],
        ),
        now,
    );
    let metrics = SinkMetrics::default();
    let cfg = config(&url, &token, "retries = 2\nprecision = \"ms\"\n");
    let mut sink = Sink::new(&cfg, metrics.clone()).unwrap();
    assert_eq!(sink.collect(ing.conn(), now).unwrap(), 1);

    // 500, then 204 on the retry: written, one error counted.
    let f = sink.flush().await;
    assert_eq!((f.written, f.dropped, f.pending), (1, 0, 0));
    assert_eq!((metrics.written(), metrics.write_errors()), (1, 1));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].1, seen[1].1, "the same lines are sent again");
        assert_eq!(
            seen[1].1,
            format!(
                "vigie_energy,host=node-01,sensor=rapl:package-0 energy_uj=6000000i,measured_uj=6000000i,estimated_uj=0i,power_w=0.1,estimated=false {t0}\n"
            )
        );
        let head = &seen[1].0;
        assert!(
            head.starts_with("POST /api/v2/write?org=dc&bucket=vigie&precision=ms HTTP/1.1"),
            "{head}"
        );
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: Token s3cret")),
            "{head}"
        );
    }

    // The server down past the retries: the point stays buffered, then
    // goes at the next flush.
    ingest(
        &mut ing,
        batch(
            2,
            &[(
                "rapl:package-0",
                t0 + MIN,
                t0 + 2 * MIN,
                60_000_000,
                66_000_000,
                Quality::Measured,
            )],
        ),
        now,
    );
    assert_eq!(sink.collect(ing.conn(), now + 1_000).unwrap(), 1);
    script.lock().unwrap().extend([503, 503, 503]);
    let f = sink.flush().await;
    assert_eq!((f.written, f.dropped, f.pending), (0, 0, 1));
    assert_eq!(metrics.write_errors(), 4);
    let f = sink.flush().await;
    assert_eq!((f.written, f.pending), (1, 0));
    assert_eq!(metrics.written(), 2);

    // A 400: not retried, the points dropped and counted as refused.
    ingest(
        &mut ing,
        batch(
            3,
            &[(
                "rapl:package-0",
                t0 + 2 * MIN,
                t0 + 3 * MIN,
                1,
                66_000_001,
                Quality::Estimated,
            )],
        ),
        now,
    );
    assert_eq!(sink.collect(ing.conn(), now + 2_000).unwrap(), 1);
    script.lock().unwrap().push_back(400);
    let before = seen.lock().unwrap().len();
    let f = sink.flush().await;
    assert_eq!((f.written, f.dropped, f.pending), (0, 1, 0));
    assert_eq!(
        seen.lock().unwrap().len(),
        before + 1,
        "no retry after a 400"
    );
    assert_eq!(metrics.dropped("refused"), 1);
    assert_eq!(metrics.written(), 2);
    assert_eq!(metrics.write_errors(), 5);
}

/// The daemon itself: `[influxdb]` in its configuration, batches through
/// Mosquitto, and the minute energy in VictoriaMetrics, with the sink's
/// counters on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_writes_its_minutes_when_configured() {
    let Some(bin) = VictoriaMetrics::binary() else {
        skip(
            REQUIRE_VICTORIA,
            "all",
            "victoria-metrics not found",
            "apt-get install -y victoria-metrics",
        );
        return;
    };
    let vm = VictoriaMetrics::start(&bin).unwrap();
    let broker = vigie_testkit::Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = vigie_testkit::free_addr().unwrap();
    std::fs::write(d.join("influx.token"), "s3cret\n").unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[mqtt]\nport = {}\nclient_id = \"influx-collector\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n[influxdb]\nurl = \"{}\"\norg = \"dc\"\nbucket = \"vigie\"\ntoken_file = \"{}\"\ninterval = \"1s\"\n",
            broker.port(),
            d.join("ledger.sqlite").display(),
            vm.url(),
            d.join("influx.token").display()
        ),
    )
    .unwrap();
    let collector = vigie_e2e::start_collector(d, http).unwrap();
    let client = vigie_e2e::client::TestClient::connect(broker.port(), "influx-agent", None)
        .await
        .unwrap();
    let t0 = recent_minute() - 5 * MIN;
    let m = batch(
        1,
        &[
            (
                "rapl:package-0",
                t0,
                t0 + MIN,
                4_200_042,
                4_200_042,
                Quality::Measured,
            ),
            (
                "rapl:package-0",
                t0 + MIN,
                t0 + 2 * MIN,
                5,
                4_200_047,
                Quality::Measured,
            ),
        ],
    );
    client.publish(&m.topic, m.payload).await.unwrap();
    let (s, vm) = tokio::task::spawn_blocking(move || {
        let s = wait_for(
            "the collector's minutes in VictoriaMetrics",
            Duration::from_secs(30),
            Duration::from_millis(250),
            || {
                let s = vm.export("vigie_energy_energy_uj").ok()?;
                let n: usize = s.iter().map(|(_, v)| v.len()).sum();
                (n >= 2).then_some(s)
            },
        );
        (s, vm)
    })
    .await
    .unwrap();
    let s = s.unwrap_or_else(|e| panic!("{e}\n{}\n{}", collector.log_tail(), vm.log()));
    let mut got: Vec<(i64, f64)> = s.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    got.sort_by_key(|p| p.0);
    got.dedup();
    assert_eq!(
        got,
        vec![(t0, 4_200_042.0), (t0 + MIN, 5.0)],
        "{}",
        vm.log()
    );
    let metrics = vigie_testkit::http_get(http, "/metrics").unwrap().body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vigie_influxdb_points_written_total ")
                && l != "vigie_influxdb_points_written_total 0"),
        "{metrics}"
    );
    assert!(metrics.contains("vigie_influxdb_points_dropped_total{reason=\"refused\"} 0"));
}
