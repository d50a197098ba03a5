//! vigie-collector: MQTT -> exact energy ledger -> metrics and API.
//!
//! [`mqtt`] receives, [`ingest`] decodes, validates, dedupes and commits
//! groups of messages into the SQLite ledger ([`store`]) on a dedicated
//! writer thread, acknowledging each message only after its commit;
//! [`metrics`] and [`api`] serve what the ledger holds. [`run`] wires it
//! all and takes its listener and shutdown signal as arguments.

pub mod api;
pub mod auth;
pub mod backend;
pub mod carbon;
pub mod charts;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dossier;
pub mod export;
/// Grid carbon intensity (providers, files, the `grid_intensity` table):
/// the `vigie-grid` crate.
pub use vigie_grid as grid;
pub mod grid_live;
pub mod heat_api;
pub mod https;
pub mod influx;
/// Group ingest into the ledger: the `vigie-ledger` crate's.
pub use vigie_ledger::ingest;
pub mod losses_api;
pub mod metrics;
pub mod mqtt;
pub mod pdf;
pub mod public;
pub mod report;
pub mod signals;
pub mod signals_api;
pub mod site;
pub mod site_kpi;
/// The ledger's schema and every read and write of it: the
/// `vigie-ledger` crate's.
pub use vigie_ledger::store;

use config::CollectorConfig;
use ingest::{Ingestor, Message, Outcome, Prepared, Preparer};
use metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use vigie_energy::GramsPerKwh;
use vigie_ledger::LedgerRead;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// A configured grid intensity series could not be loaded.
    #[error("grid intensity: {0}")]
    Grid(#[from] grid::GridError),
    /// The `[site]` model breaks a rule its figures need (the message names
    /// the field).
    #[error("{0}")]
    Site(String),
    /// The ledger writer thread ended while the collector was running.
    #[error("the ledger writer stopped; nothing more could be committed")]
    WriterDied,
    /// `[ingest.keys]` or `ingest.keys_dir` cannot be used.
    #[error(transparent)]
    Keys(#[from] config::KeysError),
    /// The HTTP tokens file could not be used.
    #[error("HTTP tokens: {0}")]
    Tokens(#[from] auth::TokensError),
    /// The HTTPS certificate or key could not be used.
    #[error("HTTPS: {0}")]
    Https(#[from] https::HttpsError),
    /// A TLS or password file named in the configuration could not be used.
    #[error("MQTT credentials: {0}")]
    Secret(#[from] vigie_service::secrets::SecretError),
    /// The export signing key could not be used: the message names the
    /// setting and the file, and gives the cause once (no `source`, which
    /// `{:#}` would print again).
    #[error("[export] signing_key {0}")]
    SigningKey(export::sign::SignError),
    /// The `[influxdb]` sink could not be set up.
    #[error("InfluxDB sink: {0}")]
    Influx(#[from] influx::InfluxError),
    /// The ledger could not be opened.
    #[error("ledger {path}: {source}")]
    Store {
        /// File.
        path: String,
        /// Cause.
        source: backend::LedgerError,
    },
    /// I/O (ledger directory, HTTP server).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Wall-clock milliseconds since the Unix epoch (the binary's one clock).
pub use vigie_service::now_ms;

/// Runs the collector until `shutdown` completes, serving HTTP on `listener`.
pub async fn run(
    cfg: CollectorConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    // A bad site model stops start-up, rather than every figure later.
    cfg.site.validate().map_err(CollectorError::Site)?;
    // HTTP security first: a bad tokens or certificate file stops start-up
    // before anything else happens.
    let tokens = cfg
        .http
        .tokens_file
        .as_deref()
        .map(auth::Tokens::load)
        .transpose()?
        .map(Arc::new);
    let https = cfg
        .http
        .tls
        .as_ref()
        .map(https::server_config)
        .transpose()?;
    let local = listener.local_addr().ok();
    match &tokens {
        Some(t) => tracing::info!(
            tokens = t.len(),
            "HTTP API requires bearer tokens (public routes excepted)"
        ),
        None if local.is_some_and(|a| !a.ip().is_loopback()) => {
            tracing::warn!("HTTP API open to the network without tokens: set [http] tokens_file")
        }
        None => {}
    }
    let path = cfg.store.path.clone();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| CollectorError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let store_err = |source: backend::LedgerError| CollectorError::Store {
        path: path.display().to_string(),
        source,
    };
    let mut conn = store::open(&path).map_err(|e| store_err(e.into()))?;
    grid::store::init(&conn).map_err(|e| store_err(e.into()))?;
    carbon::check_basis(&cfg.carbon)?;
    carbon::load_series_files(&mut conn, &cfg.carbon, now_ms())?;
    carbon::load_yearly_files(&mut conn, &cfg.carbon, now_ms())?;
    let mut cfg = cfg;
    site::load_hourly_profiles(&mut cfg.carbon.market, vigie_energy::calendar::parse_time)
        .map_err(grid::GridError::Config)?;
    let mut live_tasks = Vec::new();
    for l in &cfg.carbon.live {
        let provider = l.build()?;
        let zone = l.zone.clone().unwrap_or_else(|| cfg.carbon.zone.clone());
        tracing::info!(source = provider.source(), %zone, every = ?l.every, "live grid provider");
        live_tasks.push(grid_live::spawn(
            l.clone(),
            provider,
            path.clone(),
            zone,
            now_ms,
        ));
    }
    let metrics = Arc::new(Metrics::new(
        &cfg.carbon.zone,
        GramsPerKwh(cfg.carbon.intensity_g_per_kwh),
    ));
    metrics.set_meter_sensors(site_kpi::meter_sensors(&cfg.site));
    // Its token and CA files are read now, so a bad one stops start-up.
    let influx_sink = cfg
        .influxdb
        .as_ref()
        .map(|c| influx::Sink::new(c, metrics.influx().clone()))
        .transpose()?;
    for (host, uncounted) in conn.uncounted_sensors().map_err(store_err)? {
        metrics.set_uncounted(&host, uncounted);
    }
    let totals = conn.totals().map_err(store_err)?;
    let registers = conn.register_sensors().map_err(store_err)?;
    for (host, sensor, a) in &totals {
        metrics.seed(host, sensor, a.measured, a.estimated);
    }
    let hosts = conn.hosts().map_err(store_err)?;
    for h in &hosts {
        if let Some(online) = h.online {
            metrics.online(&h.host, online);
        }
        // Liveness survives a restart: a host silent before it stays so.
        if let Some(at) = h.last_seen_ms {
            metrics.last_batch(&h.host, at);
        }
    }
    for host in conn.hosts_with_losses().map_err(store_err)? {
        let u = conn.uncounted_sensors_of(&host).map_err(store_err)?;
        let l = conn.host_losses(&host, Some(&u)).map_err(store_err)?;
        metrics.host_losses(&host, &l);
    }
    let keys = cfg.ingest.key_ring()?;
    if keys.is_empty() {
        tracing::warn!(
            "no [ingest.keys]: messages are not authenticated; any client the broker lets publish can write any host's figures"
        );
    } else {
        tracing::info!(
            hosts = keys.len(),
            "signed messages required: unsigned, badly signed and unknown hosts' messages are refused"
        );
    }
    let ingestor = Ingestor::new(conn, cfg.limits())
        .with_keys(keys)
        .with_max_sensors_per_host(cfg.ingest.max_sensors_per_host)
        .with_max_hosts(cfg.ingest.max_hosts)
        .with_known_hosts(hosts.iter().map(|h| h.host.as_str()))
        .with_max_group_buckets(cfg.ingest.max_group_minute_buckets)
        .with_known_sensors(totals.iter().map(|(h, s, _)| (h.as_str(), s.as_str())))
        .with_known_sensors(registers.iter().map(|(h, s)| (h.as_str(), s.as_str())));
    if ingestor.hosts_known() > cfg.ingest.max_hosts {
        tracing::warn!(
            hosts = ingestor.hosts_known(),
            max_hosts = cfg.ingest.max_hosts,
            "the ledger holds more hosts than ingest.max_hosts: they stay known, no new host is admitted"
        );
    }
    drop((totals, registers, hosts));

    let (tx, rx) = mpsc::channel::<mqtt::Delivery>(4 * cfg.ingest.max_group.max(1));
    let stopping = Arc::new(AtomicBool::new(false));
    // When the writer began its current commit (0: idle). The systemd
    // watchdog is fed only while commits finish, so a wedged disk or a
    // stuck transaction gets the collector restarted.
    let busy_since = Arc::new(AtomicI64::new(0));
    // Resolves if the writer thread ends while the collector runs (a bug):
    // the process then exits with an error rather than keep answering
    // HTTP while nothing reaches the ledger; unacknowledged messages stay
    // with the broker for the restarted collector.
    let (writer_alive_tx, mut writer_dead) = tokio::sync::oneshot::channel::<()>();
    // Decoding, validation and signatures on their own thread(s), a group
    // ahead of the writer; one prepared group waits between them.
    let (groups_tx, groups_rx) = std::sync::mpsc::sync_channel::<Group>(1);
    let preparing = {
        let preparer = ingestor.preparer();
        let max_group = cfg.ingest.max_group.max(1);
        let threads = cfg.ingest.prepare_threads();
        tracing::info!(threads, "ledger prepare threads");
        std::thread::Builder::new()
            .name("ledger-prepare".into())
            .spawn(move || prepare_loop(&preparer, rx, &groups_tx, max_group, threads))
            .map_err(|source| CollectorError::Io {
                context: "starting the ledger prepare thread".into(),
                source,
            })?
    };
    let writer = {
        let metrics = metrics.clone();
        let stopping = stopping.clone();
        let busy_since = busy_since.clone();
        let alive = writer_alive_tx;
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                // Dropped when the thread ends, by return or by panic
                // (the prepare thread ending ends it too).
                let _alive = alive;
                writer_loop(ingestor, groups_rx, &metrics, &stopping, &busy_since)
            })
            .map_err(|source| CollectorError::Io {
                context: "starting the ledger writer".into(),
                source,
            })?
    };
    let subscription = mqtt::subscribe(&cfg.mqtt, tx, metrics.clone())?;
    let signing_key = cfg
        .export
        .signing_key
        .as_deref()
        .map(export::sign::load_signing_key)
        .transpose()
        .map_err(CollectorError::SigningKey)?;

    let state = api::AppState::new(
        path.clone(),
        metrics.clone(),
        api::Factor {
            zone: cfg.carbon.zone.clone(),
            g_per_kwh: cfg.carbon.intensity_g_per_kwh,
            kind: "average",
            source: cfg.carbon.source.clone(),
            estimated: false,
        },
        cfg.carbon.clone(),
        cfg.site.clone(),
    )
    .with_signing_key(signing_key)
    .with_host_stale_after(cfg.ingest.host_stale_after)
    .with_public(cfg.public.clone())
    .with_dossier(cfg.dossier.clone(), &cfg.mqtt.site);
    tracing::info!(http = ?local, https = https.is_some(), ledger = %path.display(), broker = %format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port), "collector started");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = api::router(state, tokens);
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server = match https {
        Some(config) => {
            let tls =
                https::TlsListener::new(listener, config).map_err(|source| CollectorError::Io {
                    context: "HTTPS listener".into(),
                    source,
                })?;
            tokio::spawn(async move {
                axum::serve(tls, router)
                    .with_graceful_shutdown(stopped)
                    .await
            })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        }),
    };

    // Grid and scheduler gauges from the stored series, every minute.
    let signal_task = {
        let (metrics, db, zone, basis) = (
            metrics.clone(),
            path.clone(),
            cfg.carbon.zone.clone(),
            cfg.carbon.basis,
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let (metrics, db, zone) = (metrics.clone(), db.clone(), zone.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    refresh_signal_gauges(&metrics, &db, &zone, basis, now_ms())
                })
                .await;
            }
        })
    };
    // Minute buckets past the retention, once an hour (hour buckets stay).
    let prune_task = cfg.store.minute_retention.map(|keep| {
        let db = path.clone();
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3_600));
            loop {
                tick.tick().await;
                let db = db.clone();
                let pruned = tokio::task::spawn_blocking(move || {
                    backend::open(&db)?.prune_minutes(now_ms().saturating_sub(keep_ms))
                })
                .await;
                match pruned {
                    Ok(Ok(0)) => {}
                    Ok(Ok(rows)) => {
                        tracing::info!(rows, "pruned minute buckets past store.minute_retention")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "pruning minute buckets failed; retrying in an hour")
                    }
                    Err(e) => tracing::warn!(error = %e, "pruning task failed"),
                }
            }
        })
    });
    // Site figures and legal targets, over the day and the year to date.
    let site_task = site_kpi::spawn(
        metrics.clone(),
        path.clone(),
        cfg.site.clone(),
        cfg.carbon.clone(),
        now_ms,
    );
    // Per-host emission counters, as the API computes them, as hours close.
    let emissions_task =
        carbon::spawn_emission_counters(metrics.clone(), path.clone(), cfg.carbon.clone(), now_ms);
    // Minute energy and site figures to InfluxDB, when configured.
    let influx_task = cfg
        .influxdb
        .as_ref()
        .zip(influx_sink)
        .map(|(c, sink)| influx::spawn(c, sink, path.clone(), metrics.clone(), now_ms));
    vigie_service::notify_ready();
    let watchdog = vigie_service::watchdog_period().map(|period| {
        let busy_since = busy_since.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            let limit_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
            loop {
                tick.tick().await;
                let since = busy_since.load(Ordering::Relaxed);
                if since == 0 || now_ms() - since < limit_ms {
                    vigie_service::notify_watchdog();
                } else {
                    tracing::error!(
                        busy_ms = now_ms() - since,
                        "ledger commit stuck; withholding the watchdog keep-alive"
                    );
                }
            }
        })
    });

    let mut writer_died = false;
    tokio::select! {
        () = shutdown => {}
        _ = &mut writer_dead => writer_died = true,
    }
    if writer_died {
        tracing::error!(
            "the ledger writer stopped unexpectedly; exiting so the service manager restarts the collector"
        );
    }
    tracing::info!("stopping");
    vigie_service::notify_stopping();
    for t in &live_tasks {
        t.abort();
    }
    signal_task.abort();
    if let Some(t) = prune_task {
        t.abort();
    }
    site_task.abort();
    emissions_task.abort();
    if let Some(t) = influx_task {
        t.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    stopping.store(true, Ordering::SeqCst);
    subscription.close(Duration::from_secs(3)).await;
    let _ = stop_tx.send(());
    match server.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    // The channel is closed now; the prepare thread hands on what it
    // holds, and the writer commits it and exits.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = preparing.join();
        writer.join()
    })
    .await;
    if writer_died {
        return Err(CollectorError::WriterDied);
    }
    Ok(())
}

/// Sets the grid and signal gauges of `zone` from the stored series.
fn refresh_signal_gauges(
    metrics: &Metrics,
    db: &std::path::Path,
    zone: &str,
    basis: grid::Basis,
    now: i64,
) {
    let Ok(conn) = backend::open(db) else {
        return;
    };
    let average_now = conn
        .grid_latest(zone, now, &grid::store::Filter::inventory(basis))
        .ok()
        .flatten()
        .filter(|p| p.end_ms > now)
        .and_then(|p| p.inventory_factor().ok())
        .map(|g| g.0);
    let upcoming = signals::points(
        &*conn,
        zone,
        now,
        now + 24 * 3_600_000,
        signals::Want::Prefer,
    )
    .unwrap_or_default();
    let signal_now = upcoming
        .iter()
        .find(|p| p.start_ms <= now && p.end_ms > now)
        .map(|p| (p.signal().0, p.factor().as_str()));
    let best = upcoming
        .iter()
        .filter(|p| p.start_ms >= now - 3_600_000)
        .min_by(|a, b| a.signal().0.total_cmp(&b.signal().0))
        .map(|p| (p.start_ms, p.signal().0));
    metrics.set_signals(zone, average_now, signal_now, best);
}

/// Shows a committed group's outcomes in the metrics. Only what was
/// applied makes per-host series: a refused message (a new host past
/// `ingest.max_hosts` among them) only counts its reason. The accepted
/// batches are accounted together ([`Metrics::accepted_group`]), those
/// before an inventory change with the inventory they were committed under.
fn record(metrics: &Metrics, outcomes: &[Outcome], now: i64) {
    let mut accepted: Vec<&vigie_protocol::TelemetryBatch> = Vec::new();
    for o in outcomes {
        metrics.message();
        match o {
            Outcome::Accepted(batch) => accepted.push(batch),
            Outcome::Duplicate => metrics.duplicate(),
            Outcome::Rejected { reason, .. } => metrics.rejected(reason),
            Outcome::Status {
                host,
                online,
                spool,
            } => {
                metrics.online(host, *online);
                if let Some(spool) = spool {
                    metrics.agent_spool(host, spool, now);
                }
            }
            Outcome::Meta { host, uncounted } => {
                metrics.accepted_group(accepted.drain(..), now);
                metrics.set_uncounted(host, uncounted.clone());
            }
            Outcome::Cleared | Outcome::Deferred => {}
        }
    }
    metrics.accepted_group(accepted, now);
}

/// A group of deliveries and their prepared work, from the preparing
/// thread to the writer.
#[derive(Default)]
struct Group {
    messages: Vec<Message>,
    prepared: Vec<Prepared>,
    acks: Vec<mqtt::Ack>,
    received: Vec<i64>,
}

impl Group {
    fn len(&self) -> usize {
        self.messages.len()
    }

    fn push(&mut self, d: mqtt::Delivery) {
        self.messages.push(d.message);
        self.acks.push(d.ack);
        self.received.push(d.received_ms);
    }
}

/// Forms groups of at most `max_group` deliveries as they come, prepares
/// each ([`Preparer::prepare`]: decoding, validation, signatures, sums)
/// on `threads` threads (this one and `threads - 1` others), and hands
/// it to the writer. While the writer commits one group, the next is
/// being prepared; `out` holds one more, so at most three groups are
/// past the receive channel and the broker holds the rest.
fn prepare_loop(
    preparer: &Preparer,
    mut rx: mpsc::Receiver<mqtt::Delivery>,
    out: &std::sync::mpsc::SyncSender<Group>,
    max_group: usize,
    threads: usize,
) {
    loop {
        let mut group = Group::default();
        let Some(d) = rx.blocking_recv() else {
            break;
        };
        group.push(d);
        while group.len() < max_group {
            let Ok(d) = rx.try_recv() else {
                break;
            };
            group.push(d);
        }
        group.prepared = prepare_all(preparer, &group.messages, now_ms(), threads);
        if out.send(group).is_err() {
            // The writer is gone: nothing more can be committed.
            break;
        }
    }
}

/// [`Preparer::prepare`] of each message, in order, split over `threads`
/// threads.
fn prepare_all(
    preparer: &Preparer,
    messages: &[Message],
    now: i64,
    threads: usize,
) -> Vec<Prepared> {
    let one =
        |ms: &[Message]| -> Vec<Prepared> { ms.iter().map(|m| preparer.prepare(m, now)).collect() };
    if threads <= 1 || messages.len() < 2 {
        return one(messages);
    }
    let chunk = messages.len().div_ceil(threads);
    std::thread::scope(|s| {
        let others: Vec<_> = messages
            .chunks(chunk)
            .skip(1)
            .map(|c| s.spawn(move || one(c)))
            .collect();
        let mut all = one(&messages[..chunk.min(messages.len())]);
        for h in others {
            match h.join() {
                Ok(p) => all.extend(p),
                // A panic while preparing is a bug: let it end this
                // thread as it would have ended the writer.
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        all
    })
}

/// Commits groups of prepared deliveries and acknowledges them after each
/// commit. A failed commit is retried (nothing is acknowledged, nothing
/// dropped) until it succeeds or the collector stops, in which case the
/// broker redelivers the messages to the next run.
fn writer_loop(
    mut ingestor: Ingestor,
    groups: std::sync::mpsc::Receiver<Group>,
    metrics: &Metrics,
    stopping: &AtomicBool,
    busy_since: &AtomicI64,
) {
    // Deferred by the group's bucket bound, with their prepared work:
    // committed first, on their own, so each is committed (and only then
    // acknowledged) in its turn.
    let mut carried = Group::default();
    loop {
        let mut group = if carried.len() > 0 {
            std::mem::take(&mut carried)
        } else {
            let Ok(g) = groups.recv() else {
                break;
            };
            g
        };
        // Until this group commits, the lag gauges grow with its wait.
        metrics.set_pending_since(group.received.iter().copied().min());
        loop {
            let started = Instant::now();
            let now = now_ms();
            busy_since.store(now, Ordering::Relaxed);
            let result = ingestor.commit_group(&group.messages, &mut group.prepared, now);
            busy_since.store(0, Ordering::Relaxed);
            match result {
                Ok(outcomes) => {
                    metrics.commit(started.elapsed().as_secs_f64());
                    record(metrics, &outcomes, now);
                    refresh_losses(&mut ingestor, metrics);
                    let deferred = outcomes
                        .iter()
                        .filter(|o| matches!(o, Outcome::Deferred))
                        .count();
                    if deferred > 0 {
                        tracing::debug!(
                            deferred,
                            "group at its minute-bucket bound; the rest waits for the next commit"
                        );
                    }
                    let Group {
                        messages,
                        prepared,
                        acks,
                        received,
                    } = group;
                    for ((((ack, message), p), r), o) in acks
                        .into_iter()
                        .zip(messages)
                        .zip(prepared)
                        .zip(received)
                        .zip(&outcomes)
                    {
                        if matches!(o, Outcome::Deferred) {
                            carried.messages.push(message);
                            carried.prepared.push(p);
                            carried.acks.push(ack);
                            carried.received.push(r);
                        } else {
                            ack();
                        }
                    }
                    metrics.set_pending_since(carried.received.iter().copied().min());
                    break;
                }
                Err(e) => {
                    // The prepared work it used up is prepared again by
                    // the next try.
                    tracing::error!(error = %e, messages = group.len(), "ledger commit failed; retrying, nothing acknowledged");
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Sets the loss gauges of the hosts whose known losses the last group
/// changed (rare: only when a hole opens or closes, or energy goes
/// missing or arrives late).
fn refresh_losses(ingestor: &mut Ingestor, metrics: &Metrics) {
    for host in ingestor.take_losses_changed() {
        let read = store::uncounted_sensors_of(ingestor.conn(), &host)
            .and_then(|u| store::losses::host_losses(ingestor.conn(), &host, Some(&u)));
        match read {
            Ok(l) => metrics.host_losses(&host, &l),
            Err(e) => tracing::warn!(%host, error = %e, "known losses not read"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

    #[test]
    fn a_flood_of_new_host_names_makes_no_metric_series() {
        // 20,000 status messages with new names once made 20,000 hosts
        // and an 805 KB /metrics; 200 here, 3 admitted.
        let mut ing = Ingestor::new(
            store::open_in_memory().unwrap(),
            vigie_protocol::Limits::default(),
        )
        .with_max_hosts(3);
        let metrics = Metrics::new("FR", GramsPerKwh(50.0));
        let status = serde_json::to_vec(&samples::status_online()).unwrap();
        let msgs: Vec<Message> = (0..200)
            .map(|i| Message {
                topic: format!("vigie/v1/par1/flood-{i:03}/status"),
                payload: status.clone(),
            })
            .collect();
        let now = 1_795_000_000_000;
        for group in msgs.chunks(64) {
            let outcomes = ing.ingest_group(group, now).unwrap();
            record(&metrics, &outcomes, now);
        }
        let text = metrics.encode_at(now);
        let per_host = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(per_host("vigie_host_online{"), 3, "{text}");
        assert_eq!(per_host("vigie_agent_spool_batches{"), 3);
        assert!(
            text.contains(r#"vigie_ingest_rejected_total{reason="too_many_hosts"} 197"#),
            "{text}"
        );
        assert_eq!(store::hosts(ing.conn()).unwrap().len(), 3);
    }
    #[test]
    fn a_group_prepared_on_several_threads_commits_as_on_one() {
        let msgs: Vec<Message> = (0..37u64)
            .map(|seq| {
                let mut b = samples::telemetry();
                // Every third one a redelivery of the one before.
                b.seq = seq - seq / 3;
                Message {
                    topic: "vigie/v1/par1/node-01/telemetry".into(),
                    payload: serde_json::to_vec(&b).unwrap(),
                }
            })
            .collect();
        let now = 1_795_000_020_000;
        let outcomes = |threads: usize| {
            let mut ing = Ingestor::new(
                store::open_in_memory().unwrap(),
                vigie_protocol::Limits::default(),
            );
            let mut p = prepare_all(&ing.preparer(), &msgs, now, threads);
            assert_eq!(p.len(), msgs.len());
            let out = ing.commit_group(&msgs, &mut p, now).unwrap();
            (out, store::totals(ing.conn()).unwrap())
        };
        let one = outcomes(1);
        assert_eq!(
            one.0
                .iter()
                .filter(|o| matches!(o, Outcome::Duplicate))
                .count(),
            12
        );
        for threads in [2, 3, 8, 64] {
            assert_eq!(outcomes(threads), one, "{threads} threads");
        }
    }
}
