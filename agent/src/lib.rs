//! vigie-agent: reads host energy counters and publishes interval energy
//! to MQTT.
//!
//! Pipeline: sensors ([`rapl`]) -> [`sampler::Sampler`] (wrap-corrected
//! interval readings) -> [`batcher::Batcher`] (numbered batches) ->
//! [`spool::Spool`] (on disk before publishing) -> [`mqtt::Link`] (QoS 1,
//! delivery tracked; a batch leaves the spool only when acknowledged).
//! [`run`] wires them together and takes its shutdown signal as an argument.

pub mod batcher;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod device;
pub mod gpu;
pub mod host;
pub mod model;
pub mod mqtt;
pub mod probe;
pub mod rapl;
pub mod sampler;
pub mod source;
pub mod spool;
pub mod workload;

use batcher::{Batcher, Identity};
use config::AgentConfig;
use std::future::Future;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use vigie_protocol::{
    SCHEMA_VERSION, SensorMeta, SpoolHealth, Status, StatusMessage, TelemetryBatch,
};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// RAPL discovery failed; the message says how to fix it.
    #[error(transparent)]
    Rapl(#[from] rapl::RaplError),
    /// No sensor is enabled.
    #[error(
        "no energy source: no RAPL zone or GPU found, [model] mode = \"off\", and no [[devices]] configured (run `vigie-agent probe` to see why each source is unused)"
    )]
    NoSensors,
    /// A counter declared an unusable range.
    #[error("bad counter: {0}")]
    Counter(#[from] vigie_energy::CounterError),
    /// Site or host name unusable in a topic.
    #[error("bad site or host name: {0}")]
    Name(#[from] vigie_protocol::IdError),
    /// The MQTT link could not be set up (names, credentials).
    #[error(transparent)]
    Link(#[from] mqtt::LinkError),
    /// The `[signing] key_file` could not be used (the setting, the file
    /// and the cause, once: no `source` for `{:#}` to print again).
    #[error("[signing] key_file {0}")]
    Key(vigie_service::keys::KeyError),
    /// A remote device's configuration cannot work.
    #[error("device {name}: {source}")]
    Device {
        /// Device name.
        name: String,
        /// Cause.
        source: device::DeviceError,
    },
    /// The spool failed: a batch could not be kept safe.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The state directory could not be written.
    #[error("state directory {path}: {source}")]
    State {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Wall-clock milliseconds since the Unix epoch (the binary's one clock).
pub use vigie_service::now_ms;

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Runs the agent until `shutdown` completes, then takes a last sample,
/// publishes it, marks the host offline and disconnects.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    run_with(cfg, Hardware::default(), shutdown).await
}

/// [`run`] with the hardware given.
pub async fn run_with(
    cfg: AgentConfig,
    mut hw: Hardware,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let host = cfg.host.clone().unwrap_or_else(host::host_name);
    vigie_protocol::is_valid_host_or_site(&host)?;
    vigie_protocol::is_valid_host_or_site(&cfg.site)?;
    // First: a key that cannot be read stops the agent before it spools
    // anything a collector with keys would refuse.
    let signer = cfg
        .signing
        .key_file
        .as_deref()
        .map(vigie_service::keys::load_signing_key)
        .transpose()
        .map_err(AgentError::Key)?;
    if let Some(k) = &signer {
        tracing::info!(
            public_key = %vigie_protocol::key_hex(&k.verifying_key()),
            "messages are signed"
        );
    }

    let extra_devices = std::mem::take(&mut hw.devices);
    let Built {
        mut sources,
        sockets,
        gpus,
        notes,
    } = build_sources(&cfg, hw)?;
    for n in &notes {
        if let Some(why) = &n.unused {
            tracing::info!(source = n.source, "not in use: {why}");
        }
    }
    if sources.is_empty() && cfg.devices.is_empty() && extra_devices.is_empty() {
        return Err(AgentError::NoSensors);
    }
    let sensors: Vec<SensorMeta> = sources.sensors();
    let period_ms = cfg.sampling.interval.as_millis() as u64;
    for (sensor, safe_ms) in sources.too_slow_for(period_ms) {
        tracing::warn!(%sensor, period_ms, safe_ms, "sampling period too long for this counter's range: a double wrap could go unseen");
    }

    let (epoch, epoch_error) = host::next_epoch_or_memory(&cfg.state_dir, now_ms());
    if let Some(e) = &epoch_error {
        tracing::error!(dir = %cfg.state_dir.display(), error = %e, epoch, "the epoch could not be recorded in the state directory (full disk?); using it from memory");
    }
    let spool = spool::Spool::open(&cfg.state_dir.join("spool.sqlite"))?;
    spool.set_max_bytes(cfg.spool.max_bytes)?;
    let backlog = spool.depth()?;
    if backlog > 0 {
        tracing::info!(
            batches = backlog,
            "spooled batches from an earlier run will be sent first"
        );
    }
    let started_ms = now_ms();
    let boot_id = host::boot_id();
    // Same boot: the counters kept running while we were down; start from
    // where the last spooled batch left them, so the downtime is counted.
    let checkpoints = spool.checkpoints(&boot_id)?;
    let mut unbridged = (0u64, 0u64);
    if !checkpoints.is_empty() {
        let refused = sources.resume(&checkpoints, started_ms);
        unbridged = unbridged_downtime(&refused, &checkpoints, started_ms);
        for r in &refused {
            tracing::warn!(
                ?r,
                "counter checkpoint not used: the downtime is a gap in the data"
            );
        }
        tracing::info!(
            resumed = checkpoints.len() - refused.len(),
            "counters resumed from the previous run in this boot"
        );
    }
    let mut batcher = Batcher::new(Identity {
        site: cfg.site.clone(),
        host: host.clone(),
        boot_id,
        epoch,
    });
    let mut attributor = cfg
        .workloads
        .enabled
        .then(|| workload::Attributor::new(&cfg.workloads));
    // Baseline before announcing ourselves online.
    for e in sample(&mut sources, &mut batcher, attributor.as_mut(), started_ms) {
        tracing::warn!(error = %e, "sample failed");
    }
    let mut inventory = host::inventory(&cfg.site, &host, sockets, gpus, sensors, cfg.rack.clone());
    let mut meta = json(&inventory);
    let online = |spool| {
        json(&StatusMessage {
            schema: SCHEMA_VERSION,
            state: Status::Online,
            epoch: Some(epoch),
            agent_version: Some(env!("CARGO_PKG_VERSION").into()),
            since_ms: Some(started_ms),
            spool: Some(spool),
        })
    };
    let offline = |since| StatusMessage {
        schema: SCHEMA_VERSION,
        state: Status::Offline,
        epoch: None,
        agent_version: None,
        since_ms: since,
        spool: None,
    };
    let bounds = spool::Bounds {
        max_batches: cfg.spool.max_batches.max(2),
        max_span_ms: i64::try_from(cfg.spool.merge_max_span.as_millis()).unwrap_or(i64::MAX),
        max_age_ms: i64::try_from(cfg.spool.max_age.as_millis()).unwrap_or(i64::MAX),
        max_readings: vigie_protocol::Limits::default().max_readings,
        max_minute_buckets: vigie_protocol::DEFAULT_MAX_MINUTE_BUCKETS,
    };
    let mut keeper = SpoolKeeper {
        spool: &spool,
        bounds,
        health: SpoolHealth {
            batches: 0,
            oldest_ms: None,
            merged_total: 0,
            dropped_total: 0,
            dropped_uj_total: 0,
            counter_resets_total: 0,
            spool_errors_total: u64::from(epoch_error.is_some()),
            in_memory: 0,
            unbridged_total: unbridged.0,
            unbridged_ms: unbridged.1,
            broker_disconnects_total: 0,
            publish_failures_total: 0,
        },
        held: Vec::new(),
    };
    keeper.enforce(started_ms);
    let client_id = cfg
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("vigie-agent-{host}"));
    let (link, mut events) = mqtt::Link::start(
        &cfg.mqtt,
        &client_id,
        &cfg.site,
        &host,
        json(&offline(None)),
        signer,
    )?;
    tracing::info!(%host, site = %cfg.site, epoch, sources = ?sources.kinds(), "agent started");

    let mut connected = false;
    let mut sample_tick = tokio::time::interval(cfg.sampling.interval);
    sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    sample_tick.tick().await;
    let mut publish_tick = tokio::time::interval(cfg.sampling.publish_interval);
    publish_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    publish_tick.tick().await;
    let mut status_tick = tokio::time::interval(cfg.spool.status_interval);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    status_tick.tick().await;
    // Remote devices, each in its own task; what they read joins the next batch.
    let (device_tx, mut device_rx) = tokio::sync::mpsc::channel::<device::DeviceOutput>(64);
    let mut device_tasks = Vec::new();
    for d in &cfg.devices {
        let driver = device::build(d).map_err(|source| AgentError::Device {
            name: d.name.clone(),
            source,
        })?;
        device_tasks.push(device::spawn(
            d,
            driver,
            device_tx.clone(),
            now_ms,
            &checkpoints,
        ));
    }
    for (d, driver) in extra_devices {
        device_tasks.push(device::spawn(
            &d,
            driver,
            device_tx.clone(),
            now_ms,
            &checkpoints,
        ));
    }
    // Latest register checkpoints of the devices, spooled with each batch.
    let mut device_checkpoints: std::collections::BTreeMap<String, checkpoint::Checkpoint> =
        std::collections::BTreeMap::new();
    let watchdog = vigie_service::watchdog_period();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |p| p / 2));
    vigie_service::notify_ready();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = sample_tick.tick() => {
                for e in sample(&mut sources, &mut batcher, attributor.as_mut(), now_ms()) {
                    keeper.health.counter_resets_total += u64::from(e.reset);
                    tracing::warn!(error = %e, "sample failed");
                }
            }
            _ = publish_tick.tick() => {
                let batches = batcher.cut_all();
                send(&link, &mut keeper, connected, batches, &sources.checkpoints(), &device_checkpoints).await;
            }
            _ = status_tick.tick() => {
                keeper.enforce(now_ms());
                if connected {
                    let _ = link.publish_status(online(keeper.health)).await;
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => vigie_service::notify_watchdog(),
            Some(out) = device_rx.recv() => {
                keeper.health.counter_resets_total += out.resets;
                for cp in out.checkpoints {
                    device_checkpoints.insert(cp.sensor.clone(), cp);
                }
                let sink = batcher.sink();
                sink.readings.extend(out.readings);
                sink.gauges.extend(out.gauges);
                if !out.new_sensors.is_empty() {
                    inventory.sensors.extend(out.new_sensors);
                    meta = json(&inventory);
                    if connected {
                        let _ = link.publish_meta(meta.clone()).await;
                    }
                }
            }
            Some(ev) = events.recv() => match ev {
                mqtt::LinkEvent::Connected => {
                    connected = true;
                    keeper.enforce(now_ms());
                    let _ = link.publish_status(online(keeper.health)).await;
                    let _ = link.publish_meta(meta.clone()).await;
                    replay(&link, &mut keeper).await;
                }
                mqtt::LinkEvent::Disconnected => {
                    connected = false;
                    keeper.health.broker_disconnects_total += 1;
                }
                mqtt::LinkEvent::Delivered { epoch, seq, ok: true } => keeper.ack(epoch, seq),
                // Stays spooled; the next connection publishes it again.
                // Counted, so a batch the broker keeps refusing shows.
                mqtt::LinkEvent::Delivered { ok: false, .. } => {
                    keeper.health.publish_failures_total += 1;
                }
            },
            _ = &mut shutdown => break,
        }
    }

    for t in &device_tasks {
        t.abort();
    }
    drop(device_tx);
    // What the devices read before the stop goes into the last batch.
    while let Ok(out) = device_rx.try_recv() {
        for cp in out.checkpoints {
            device_checkpoints.insert(cp.sensor.clone(), cp);
        }
        let sink = batcher.sink();
        sink.readings.extend(out.readings);
        sink.gauges.extend(out.gauges);
    }
    tracing::info!("stopping: last sample and publish");
    vigie_service::notify_stopping();
    for e in sample(&mut sources, &mut batcher, attributor.as_mut(), now_ms()) {
        tracing::warn!(error = %e, "sample failed");
    }
    if let Some(a) = &attributor {
        let s = a.stats();
        tracing::info!(
            vanished = s.vanished,
            resets = s.resets,
            unreadable = s.unreadable,
            truncated = s.truncated,
            "energy per workload: cgroups or processes gone between reads (their last interval unattributed), counters reset, unreadable, reads cut at the bound"
        );
    }
    let batches = batcher.cut_all();
    send(
        &link,
        &mut keeper,
        connected,
        batches,
        &sources.checkpoints(),
        &device_checkpoints,
    )
    .await;
    if !keeper.held.is_empty() {
        tracing::error!(
            batches = keeper.held.len(),
            "stopping with batches the spool could not take: their energy is lost"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while connected && spool.depth().unwrap_or(0) > 0 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(mqtt::LinkEvent::Delivered {
                epoch,
                seq,
                ok: true,
            })) => keeper.ack(epoch, seq),
            Ok(Some(mqtt::LinkEvent::Disconnected)) => connected = false,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let left = spool.depth().unwrap_or(0);
    if left > 0 {
        tracing::warn!(
            batches = left,
            "stopping with unacknowledged batches: they stay spooled and are sent at the next start"
        );
    }
    let _ = link.publish_status(json(&offline(Some(now_ms())))).await;
    link.close(Duration::from_secs(2)).await;
    Ok(())
}

/// Polls every local source at `now_ms` into the batcher and, when energy
/// per workload is on, splits what they read among the workloads (the
/// splits join the same batch as their readings).
pub(crate) fn sample(
    sources: &mut source::Sources,
    batcher: &mut Batcher,
    attributor: Option<&mut workload::Attributor>,
    now_ms: i64,
) -> Vec<source::PollError> {
    let from = batcher.pending_len();
    let errors = sources.poll(now_ms, &mut batcher.sink());
    if let Some(a) = attributor {
        let gpu = sources.process_activity();
        let splits = a.attribute(batcher.pending_since(from), &gpu);
        batcher.push_workloads(splits);
    }
    errors
}

/// The hardware the agent reads, passed in: the binary uses the host's,
/// tests and the demo pass fakes.
#[derive(Default)]
pub struct Hardware {
    /// GPU access; `None` tries NVML.
    pub gpus: Option<Box<dyn gpu::GpuBackend>>,
    /// CPU utilisation for the host model; `None` uses sysinfo.
    pub cpu_load: Option<Box<dyn model::CpuLoad>>,
    /// Devices with their drivers already made (simulations), polled
    /// besides those of the configuration.
    pub devices: Vec<(device::DeviceConfig, Box<dyn device::Device>)>,
}

/// Whether a source is in use, and why not when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceNote {
    /// `rapl`, `nvml`, `model`.
    pub source: &'static str,
    /// `None` when in use; otherwise why not and what to do.
    pub unused: Option<String>,
}

/// What [`build_sources`] found.
pub struct Built {
    /// The local sources in use.
    pub sources: source::Sources,
    /// RAPL packages (at least 1), for the inventory.
    pub sockets: u32,
    /// GPUs, for the inventory.
    pub gpus: Vec<vigie_protocol::GpuMeta>,
    /// Every local source, used or not, with the reason.
    pub notes: Vec<SourceNote>,
}

/// Sets up the local sources the configuration asks for. A source that is
/// absent here (no RAPL zone, no NVIDIA library) is noted, not an error;
/// one that is present but unusable (RAPL without permission) is an error.
pub fn build_sources(cfg: &AgentConfig, hw: Hardware) -> Result<Built, AgentError> {
    let mut sources = source::Sources::default();
    let mut notes = Vec::new();
    let mut sockets = 1;
    let mut rapl_found = false;
    if cfg.rapl.enabled {
        match rapl::discover(&cfg.rapl.root) {
            Ok(zones) => {
                sockets = zones
                    .iter()
                    .filter(|z| z.domain == rapl::Domain::Package)
                    .count()
                    .max(1) as u32;
                sources.push(Box::new(sampler::Sampler::new(zones)?));
                rapl_found = true;
                notes.push(SourceNote {
                    source: "rapl",
                    unused: None,
                });
            }
            Err(e @ rapl::RaplError::NoZones { .. }) => notes.push(SourceNote {
                source: "rapl",
                unused: Some(e.to_string()),
            }),
            Err(e) => return Err(e.into()),
        }
    } else {
        notes.push(SourceNote {
            source: "rapl",
            unused: Some("disabled in the configuration ([rapl] enabled = false)".into()),
        });
    }

    let mut gpus = Vec::new();
    if cfg.gpu.enabled {
        let backend = match hw.gpus {
            Some(b) => Ok(b),
            None => gpu::NvmlBackend::init().map(|b| Box::new(b) as Box<dyn gpu::GpuBackend>),
        };
        let max_gap_ms = i64::try_from(cfg.sampling.interval.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_mul(5);
        match backend.and_then(|b| gpu::GpuSource::new(b, max_gap_ms)) {
            Ok(g) if g.is_empty() => notes.push(SourceNote {
                source: "nvml",
                unused: Some("the NVIDIA library is present but reports no GPU".into()),
            }),
            Ok(g) => {
                gpus = g.inventory();
                sources.push(Box::new(g));
                notes.push(SourceNote {
                    source: "nvml",
                    unused: None,
                });
            }
            Err(e) => notes.push(SourceNote {
                source: "nvml",
                unused: Some(e.to_string()),
            }),
        }
    } else {
        notes.push(SourceNote {
            source: "nvml",
            unused: Some("disabled in the configuration ([gpu] enabled = false)".into()),
        });
    }

    let use_model = match cfg.model.mode {
        config::ModelMode::On => true,
        config::ModelMode::Off => false,
        config::ModelMode::Auto => !rapl_found,
    };
    if use_model {
        let load = hw
            .cpu_load
            .unwrap_or_else(|| Box::new(model::SysinfoLoad::new()));
        sources.push(Box::new(model::ModelSource::new(
            load,
            model::PowerCurve {
                idle_w: cfg.model.idle_w,
                max_w: cfg.model.max_w,
            },
        )));
        notes.push(SourceNote {
            source: "model",
            unused: None,
        });
    } else {
        notes.push(SourceNote {
            source: "model",
            unused: Some(match cfg.model.mode {
                config::ModelMode::Off => {
                    "disabled in the configuration ([model] mode = \"off\")".into()
                }
                _ => "not needed: RAPL measures this host ([model] mode = \"on\" adds it anyway)"
                    .into(),
            }),
        });
    }
    Ok(Built {
        sources,
        sockets,
        gpus,
        notes,
    })
}

/// Most batches held in memory while the spool cannot take them (a full
/// disk). Past it they are merged pairwise (exact) and, when nothing
/// merges, the oldest are dropped and counted as lost.
pub const MAX_HELD_BATCHES: usize = 4096;

/// The spool with its bounds, the batches it could not take yet, and the
/// figures the agent reports about it. A spool error never stops the
/// agent: it is logged, counted, and what could not be written waits in
/// memory for the next try.
struct SpoolKeeper<'a> {
    spool: &'a spool::Spool,
    bounds: spool::Bounds,
    health: SpoolHealth,
    /// Cut batches the spool refused, oldest first.
    held: Vec<TelemetryBatch>,
}

impl SpoolKeeper<'_> {
    /// Counts and logs a spool failure.
    fn failed(&mut self, what: &str, e: &spool::SpoolError) {
        self.health.spool_errors_total += 1;
        tracing::error!(error = %e, "spool {what} failed (full disk?); the agent goes on and retries");
    }

    /// Applies the bounds and refreshes the health figures.
    fn enforce(&mut self, now_ms: i64) {
        let done = match self.spool.enforce(&self.bounds, now_ms) {
            Ok(d) => d,
            Err(e) => {
                self.failed("bounds", &e);
                return;
            }
        };
        if done.dropped > 0 {
            tracing::error!(
                batches = done.dropped,
                energy_uj = done.dropped_uj,
                max_age_ms = self.bounds.max_age_ms,
                "spooled batches older than the age bound dropped: this energy is lost"
            );
        }
        if done.merged > 0 {
            tracing::warn!(
                merges = done.merged,
                "spool over its bound: oldest batches merged (energy exact, resolution coarser)"
            );
        }
        if done.over_bound {
            tracing::warn!(
                max_batches = self.bounds.max_batches,
                "spool over its bound with nothing left to merge; keeping everything"
            );
        }
        self.health.merged_total += done.merged;
        self.health.dropped_total += done.dropped;
        self.health.dropped_uj_total = self.health.dropped_uj_total.saturating_add(done.dropped_uj);
        match (self.spool.depth(), self.spool.oldest_ms()) {
            (Ok(depth), Ok(oldest)) => {
                self.health.batches = depth as u64;
                self.health.oldest_ms = oldest;
            }
            (Err(e), _) | (_, Err(e)) => self.failed("read", &e),
        }
    }

    /// Forgets an acknowledged batch; on failure it stays and is sent
    /// again later (the collector drops the copy).
    fn ack(&mut self, epoch: u64, seq: u64) {
        if let Err(e) = self.spool.ack(epoch, seq) {
            self.failed("acknowledgement", &e);
        }
    }

    /// Spools what is held and `batches` after it, with the checkpoints
    /// that follow the last, in one transaction. Returns what was spooled
    /// (to publish). When the spool refuses, the oldest batches it still
    /// takes are spooled one by one and the rest stays held, bounded by
    /// [`MAX_HELD_BATCHES`].
    fn spool_or_hold(
        &mut self,
        batches: Vec<TelemetryBatch>,
        checkpoints: &[checkpoint::Checkpoint],
        devices: &[checkpoint::Checkpoint],
    ) -> Vec<(TelemetryBatch, Vec<u8>)> {
        self.held.extend(batches);
        if self.held.is_empty() {
            return Vec::new();
        }
        let payloads: Vec<Vec<u8>> = self.held.iter().map(json).collect();
        let spooled: Vec<(&TelemetryBatch, &[u8])> = self
            .held
            .iter()
            .zip(&payloads)
            .map(|(b, p)| (b, p.as_slice()))
            .collect();
        match self.spool.push_all(&spooled, checkpoints, devices) {
            Ok(()) => {
                if self.health.in_memory > 0 {
                    tracing::info!(
                        batches = self.held.len(),
                        "the spool takes batches again: those held in memory are spooled"
                    );
                }
                self.health.in_memory = 0;
                self.health.batches += self.held.len() as u64;
                std::mem::take(&mut self.held)
                    .into_iter()
                    .zip(payloads)
                    .collect()
            }
            Err(e) => {
                // As many of the oldest as the spool still takes, one at a
                // time, each with the current checkpoints: a crash then
                // loses what is held in memory (counted missing by the
                // collector), never counts a spooled batch twice.
                let mut n = 0;
                for pair in &spooled {
                    if self.spool.push_all(&[*pair], checkpoints, devices).is_err() {
                        break;
                    }
                    n += 1;
                }
                drop(spooled);
                self.failed("write", &e);
                self.health.batches += n as u64;
                let out: Vec<(TelemetryBatch, Vec<u8>)> =
                    self.held.drain(..n).zip(payloads).collect();
                self.bound_held();
                self.health.in_memory = self.held.len() as u64;
                out
            }
        }
    }

    /// Keeps at most [`MAX_HELD_BATCHES`] held: merges neighbours first
    /// (exact), then drops the oldest, counted as lost.
    fn bound_held(&mut self) {
        let mut i = 0;
        while self.held.len() > MAX_HELD_BATCHES && i + 1 < self.held.len() {
            match spool::merge(
                &self.held[i],
                &self.held[i + 1],
                self.bounds.max_span_ms,
                self.bounds.max_readings,
                self.bounds.max_minute_buckets,
            ) {
                Some(m) => {
                    self.held[i] = m;
                    self.held.remove(i + 1);
                    self.health.merged_total += 1;
                }
                None => i += 1,
            }
        }
        let over = self.held.len().saturating_sub(MAX_HELD_BATCHES);
        if over > 0 {
            let energy: u64 = self
                .held
                .drain(..over)
                .flat_map(|b| b.readings)
                .map(|r| r.energy_uj)
                .fold(0u64, u64::saturating_add);
            tracing::error!(
                batches = over,
                energy_uj = energy,
                "more batches than memory may hold while the spool is failing: the oldest dropped, this energy is lost"
            );
            self.health.dropped_total += over as u64;
            self.health.dropped_uj_total = self.health.dropped_uj_total.saturating_add(energy);
        }
    }
}

/// How many local counters were not resumed from their checkpoints, and
/// the longest downtime among them, ms.
fn unbridged_downtime(
    refused: &[checkpoint::Unresumed],
    checkpoints: &[checkpoint::Checkpoint],
    started_ms: i64,
) -> (u64, u64) {
    let mut longest = 0i64;
    for r in refused {
        let down = match r {
            checkpoint::Unresumed::TooLong { down_ms, .. } => *down_ms,
            checkpoint::Unresumed::Invalid { sensor } => checkpoints
                .iter()
                .find(|c| &c.sensor == sensor)
                .map_or(0, |c| started_ms - c.at_ms),
        };
        longest = longest.max(down);
    }
    (refused.len() as u64, longest.max(0) as u64)
}

/// Publishes everything spooled and not yet acknowledged, oldest first;
/// the collector drops any copy it already has.
async fn replay(link: &mqtt::Link, keeper: &mut SpoolKeeper<'_>) {
    let pending = match keeper.spool.pending() {
        Ok(p) => p,
        Err(e) => {
            keeper.failed("read", &e);
            return;
        }
    };
    for (epoch, seq, payload) in pending {
        // Marked first: a batch that may have reached the broker is never merged.
        if let Err(e) = keeper.spool.mark_published(epoch, seq) {
            keeper.failed("write", &e);
            continue;
        }
        if let Err(e) = link.publish_batch(epoch, seq, payload).await {
            keeper.health.publish_failures_total += 1;
            tracing::warn!(epoch, seq, error = %e, "replay failed; kept in the spool");
        }
    }
}

/// Spools batches, then publishes them if the broker is reachable. What
/// the spool cannot take waits in memory (never published before it is
/// spooled).
async fn send(
    link: &mqtt::Link,
    keeper: &mut SpoolKeeper<'_>,
    connected: bool,
    batches: Vec<TelemetryBatch>,
    checkpoints: &[checkpoint::Checkpoint],
    device_checkpoints: &std::collections::BTreeMap<String, checkpoint::Checkpoint>,
) {
    let devices: Vec<checkpoint::Checkpoint> = device_checkpoints.values().cloned().collect();
    let spooled = keeper.spool_or_hold(batches, checkpoints, &devices);
    if spooled.is_empty() {
        return;
    }
    if keeper.health.batches > keeper.bounds.max_batches as u64 {
        // The wall clock, as at the other bounds checks: the first reading's
        // end was 0 for a batch of gauges alone.
        keeper.enforce(now_ms());
    }
    if connected {
        for (batch, payload) in spooled {
            // Marked first: a batch that may have reached the broker is never merged.
            if let Err(e) = keeper.spool.mark_published(batch.epoch, batch.seq) {
                keeper.failed("write", &e);
                continue;
            }
            if let Err(e) = link.publish_batch(batch.epoch, batch.seq, payload).await {
                keeper.health.publish_failures_total += 1;
                tracing::warn!(seq = batch.seq, error = %e, "publish failed; kept in the spool");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::{Reading, samples};

    /// A batch heavy enough to need new pages in the spool file.
    fn heavy(seq: u64) -> TelemetryBatch {
        let mut b = samples::telemetry();
        b.seq = seq;
        let template = b.readings[0].clone();
        b.readings = (0..120)
            .map(|i| Reading {
                sensor: format!("pdu:outlet-{i}"),
                energy_uj: 1_000 + seq,
                cumulative_uj: 1_000_000,
                ..template.clone()
            })
            .collect();
        b.gauges.clear();
        b
    }

    fn keeper(spool: &spool::Spool) -> SpoolKeeper<'_> {
        SpoolKeeper {
            spool,
            bounds: spool::Bounds {
                max_batches: 100,
                max_span_ms: 3_600_000,
                max_age_ms: 0,
                max_readings: 5_000,
                max_minute_buckets: vigie_protocol::DEFAULT_MAX_MINUTE_BUCKETS,
            },
            health: samples::status_online().spool.unwrap(),
            held: Vec::new(),
        }
    }

    #[test]
    fn a_full_spool_holds_batches_in_memory_and_spools_them_when_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool::Spool::open(&dir.path().join("spool.sqlite")).unwrap();
        let mut k = keeper(&spool);
        k.health = SpoolHealth {
            batches: 0,
            ..k.health
        };
        // As full as a full disk: the file may not grow.
        spool.set_max_bytes(1).unwrap();
        for seq in 0..3 {
            assert!(k.spool_or_hold(vec![heavy(seq)], &[], &[]).is_empty());
        }
        assert_eq!(k.held.len(), 3);
        assert_eq!(k.health.in_memory, 3);
        assert_eq!(k.health.spool_errors_total, 3);
        assert_eq!(spool.depth().unwrap(), 0);
        // Space again: everything held is spooled first, in order, with
        // the new batch, and handed back to be published.
        spool.set_max_bytes(0).unwrap();
        let spooled = k.spool_or_hold(vec![heavy(3)], &[], &[]);
        let seqs: Vec<u64> = spooled.iter().map(|(b, _)| b.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert_eq!(spool.depth().unwrap(), 4);
        assert_eq!(k.health.in_memory, 0);
        assert!(k.held.is_empty());
        let energy: u64 = spool
            .pending()
            .unwrap()
            .iter()
            .map(|(e, s, p)| spool::Spool::decode(*e, *s, p).unwrap())
            .flat_map(|b| b.readings)
            .map(|r| r.energy_uj)
            .sum();
        assert_eq!(energy, (0..4).map(|s| 120 * (1_000 + s)).sum::<u64>());
    }

    #[test]
    fn memory_is_bounded_while_the_spool_fails_merging_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool::Spool::open(&dir.path().join("spool.sqlite")).unwrap();
        let mut k = keeper(&spool);
        spool.set_max_bytes(1).unwrap();
        let n = MAX_HELD_BATCHES as u64 + 100;
        let mut b = samples::telemetry();
        b.gauges.clear();
        b.readings.truncate(1);
        let batches: Vec<TelemetryBatch> = (0..n)
            .map(|seq| {
                let mut x = b.clone();
                x.seq = seq;
                let start = 1_795_000_000_000 + seq as i64 * 1_000;
                x.readings[0].start_ms = start;
                x.readings[0].end_ms = start + 1_000;
                x.readings[0].energy_uj = 7;
                x
            })
            .collect();
        // What still fits in the spool's pages is spooled, oldest first.
        let spooled = k.spool_or_hold(batches, &[], &[]);
        assert!(
            spooled
                .iter()
                .map(|(b, _)| b.seq)
                .eq(0..spooled.len() as u64)
        );
        assert!(k.held.len() <= MAX_HELD_BATCHES);
        assert!(k.held.len() > 1_000, "the spool took only what fitted");
        // Merged, not dropped: all the energy is spooled or still held.
        let energy: u64 = k
            .held
            .iter()
            .chain(spooled.iter().map(|(b, _)| b))
            .flat_map(|b| &b.readings)
            .map(|r| r.energy_uj)
            .sum();
        assert_eq!(energy, 7 * n);
        assert_eq!(k.health.dropped_total, 0);
        assert!(k.health.merged_total >= 50, "{}", k.health.merged_total);
    }

    #[test]
    fn an_epoch_that_cannot_be_recorded_is_kept_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // The state directory's place is taken by a file: nothing can be
        // written there (as on a full disk).
        let state = dir.path().join("state");
        std::fs::write(&state, "not a directory").unwrap();
        assert!(host::next_epoch(&state, 5_000).is_err());
        let (epoch, err) = host::next_epoch_or_memory(&state, 5_000);
        assert_eq!(epoch, 5_000);
        assert!(err.is_some());
    }

    #[test]
    fn counters_not_resumed_count_with_their_downtime() {
        let cps = [checkpoint::Checkpoint {
            sensor: "rapl:package-0".into(),
            raw_uj: 1,
            at_ms: 1_000,
        }];
        let refused = [
            checkpoint::Unresumed::TooLong {
                sensor: "rapl:dram-0".into(),
                down_ms: 7_200_000,
                safe_ms: 60_000,
            },
            checkpoint::Unresumed::Invalid {
                sensor: "rapl:package-0".into(),
            },
        ];
        assert_eq!(
            unbridged_downtime(&refused, &cps, 10_801_000),
            (2, 10_800_000)
        );
        assert_eq!(unbridged_downtime(&[], &cps, 5), (0, 0));
    }
}
