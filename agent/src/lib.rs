//! vigie-agent: reads host energy counters and publishes interval energy
//! to MQTT.
//!
//! Pipeline: sensors ([`rapl`]) -> [`sampler::Sampler`] (wrap-corrected
//! interval readings) -> [`batcher::Batcher`] (numbered batches) ->
//! [`spool::Spool`] (on disk before publishing) -> [`mqtt::Link`] (QoS 1,
//! delivery tracked; a batch leaves the spool only when acknowledged).
//! [`run`] wires them together and takes its shutdown signal as an argument.

pub mod batcher;
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
    /// The `[signing] key_file` could not be used.
    #[error("signing key: {0}")]
    Key(#[from] vigie_service::keys::KeyError),
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
        .transpose()?;
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

    let epoch = host::next_epoch(&cfg.state_dir, now_ms()).map_err(|source| AgentError::State {
        path: cfg.state_dir.display().to_string(),
        source,
    })?;
    let spool = spool::Spool::open(&cfg.state_dir.join("spool.sqlite"))?;
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
    if !checkpoints.is_empty() {
        let refused = sources.resume(&checkpoints, started_ms);
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
    // Baseline before announcing ourselves online.
    for e in sources.poll(started_ms, &mut batcher.sink()) {
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
        },
    };
    keeper.enforce(started_ms)?;
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
    let mut device_checkpoints: std::collections::BTreeMap<String, sampler::Checkpoint> =
        std::collections::BTreeMap::new();
    let watchdog = vigie_service::watchdog_period();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |p| p / 2));
    vigie_service::notify_ready();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = sample_tick.tick() => {
                for e in sources.poll(now_ms(), &mut batcher.sink()) {
                    keeper.health.counter_resets_total += u64::from(e.reset);
                    tracing::warn!(error = %e, "sample failed");
                }
            }
            _ = publish_tick.tick() => {
                let batches = batcher.cut_all();
                send(&link, &mut keeper, connected, &batches, &sources.checkpoints(), &device_checkpoints).await?;
            }
            _ = status_tick.tick() => {
                keeper.enforce(now_ms())?;
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
                    keeper.enforce(now_ms())?;
                    let _ = link.publish_status(online(keeper.health)).await;
                    let _ = link.publish_meta(meta.clone()).await;
                    // Everything not yet acknowledged, oldest first; the
                    // collector drops any copy it already has.
                    for (epoch, seq, payload) in spool.pending()? {
                        spool.mark_published(epoch, seq)?;
                        if let Err(e) = link.publish_batch(epoch, seq, payload).await {
                            tracing::warn!(epoch, seq, error = %e, "replay failed; kept in the spool");
                        }
                    }
                }
                mqtt::LinkEvent::Disconnected => connected = false,
                mqtt::LinkEvent::Delivered { epoch, seq, ok: true } => spool.ack(epoch, seq)?,
                // Stays spooled; the next connection publishes it again.
                mqtt::LinkEvent::Delivered { ok: false, .. } => {}
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
    for e in sources.poll(now_ms(), &mut batcher.sink()) {
        tracing::warn!(error = %e, "sample failed");
    }
    let batches = batcher.cut_all();
    send(
        &link,
        &mut keeper,
        connected,
        &batches,
        &sources.checkpoints(),
        &device_checkpoints,
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while connected && spool.depth()? > 0 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(mqtt::LinkEvent::Delivered {
                epoch,
                seq,
                ok: true,
            })) => spool.ack(epoch, seq)?,
            Ok(Some(mqtt::LinkEvent::Disconnected)) => connected = false,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let left = spool.depth()?;
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

/// The spool with its bounds and the figures the agent reports about it.
struct SpoolKeeper<'a> {
    spool: &'a spool::Spool,
    bounds: spool::Bounds,
    health: SpoolHealth,
}

impl SpoolKeeper<'_> {
    /// Applies the bounds and refreshes the health figures.
    fn enforce(&mut self, now_ms: i64) -> Result<(), AgentError> {
        let done = self.spool.enforce(&self.bounds, now_ms)?;
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
        self.health.batches = self.spool.depth()? as u64;
        self.health.oldest_ms = self.spool.oldest_ms()?;
        Ok(())
    }
}

/// Spools a batch, then publishes it if the broker is reachable.
async fn send(
    link: &mqtt::Link,
    keeper: &mut SpoolKeeper<'_>,
    connected: bool,
    batches: &[TelemetryBatch],
    checkpoints: &[sampler::Checkpoint],
    device_checkpoints: &std::collections::BTreeMap<String, sampler::Checkpoint>,
) -> Result<(), AgentError> {
    if batches.is_empty() {
        return Ok(());
    }
    let payloads: Vec<Vec<u8>> = batches.iter().map(json).collect();
    let devices: Vec<sampler::Checkpoint> = device_checkpoints.values().cloned().collect();
    let spooled: Vec<(&TelemetryBatch, &[u8])> = batches
        .iter()
        .zip(&payloads)
        .map(|(b, p)| (b, p.as_slice()))
        .collect();
    keeper.spool.push_all(&spooled, checkpoints, &devices)?;
    keeper.health.batches += batches.len() as u64;
    if keeper.health.batches > keeper.bounds.max_batches as u64 {
        // The wall clock, as at the other bounds checks: the first reading's
        // end was 0 for a batch of gauges alone.
        keeper.enforce(now_ms())?;
    }
    if connected {
        for (batch, payload) in batches.iter().zip(payloads) {
            // Marked first: a batch that may have reached the broker is never merged.
            keeper.spool.mark_published(batch.epoch, batch.seq)?;
            if let Err(e) = link.publish_batch(batch.epoch, batch.seq, payload).await {
                tracing::warn!(seq = batch.seq, error = %e, "publish failed; kept in the spool");
            }
        }
    }
    Ok(())
}
