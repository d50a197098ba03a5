//! The collector's only MQTT module. Subscribes with a persistent session
//! and manual acknowledgements: a message is acknowledged only after the
//! ledger transaction holding it has committed, so the broker redelivers
//! anything the collector had not stored when it stopped.

use crate::config::MqttConfig;
use crate::ingest::Message;
use crate::metrics::Metrics;
use rumqttc::{
    AckMode, AsyncClient, BrokerSessionResumePolicy, ConnectionError, Event,
    IncomingPacketSizeLimit, MqttOptions, Packet, QoS, SessionMode, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vigie_protocol::{Topic, TopicKind};

/// Acknowledges one message to the broker when called.
pub type Ack = Box<dyn FnOnce() + Send>;

/// A received message and its acknowledgement.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Call after commit.
    pub ack: Ack,
}

/// Handle on the subscription.
pub struct Subscription {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

/// Largest packet taken from the broker. Far above the payload limit on
/// purpose: an oversized payload must reach validation (and be rejected
/// with its reason) rather than break the connection.
const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// Connects and forwards every telemetry, status and meta message to `out`.
/// When `out` is full the event loop waits: the broker holds the backlog.
/// `metrics` learns when every subscription of the current connection is
/// acknowledged (readiness) and when the connection is lost.
pub fn subscribe(
    cfg: &MqttConfig,
    out: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
) -> Result<Subscription, vigie_service::secrets::SecretError> {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), (cfg.host.clone(), cfg.port));
    // The collector publishes nothing: keep rumqttc's in-flight table small
    // (its default of 65535 slots costs about 14 MB).
    opts.set_outgoing_inflight_upper_limit(16);
    let secrets = vigie_service::secrets::broker_secrets(
        cfg.tls.as_ref(),
        cfg.username.as_deref(),
        cfg.password_file.as_deref(),
    )?;
    if let Some(tls) = secrets.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: tls.ca,
            alpn: None,
            client_auth: tls.client,
        }));
    }
    if let Some((user, pass)) = secrets.login {
        opts.set_credentials(user, pass.0);
    }
    opts.set_keep_alive(30);
    opts.set_session_mode(SessionMode::Persistent);
    opts.set_session_expiry_interval(Some(
        u32::try_from(cfg.session_expiry.as_secs()).unwrap_or(u32::MAX),
    ));
    // We keep no local in-flight state for incoming messages, so resuming
    // the broker's session is exactly what we want.
    opts.set_broker_session_resume_policy(BrokerSessionResumePolicy::AllowBrokerOnly);
    opts.set_ack_mode(AckMode::Manual);
    opts.set_incoming_packet_size_limit(IncomingPacketSizeLimit::Bytes(MAX_PACKET));
    let (client, mut eventloop) = AsyncClient::builder(opts).capacity(1024).build();
    let filters: Vec<String> = [TopicKind::Telemetry, TopicKind::Status, TopicKind::Meta]
        .into_iter()
        .map(|k| Topic::filter(Some(&cfg.site), k))
        .collect();
    let server = format!("{}:{}", cfg.host, cfg.port);
    let sub_client = client.clone();
    let task = tokio::spawn(async move {
        let mut was_down = false;
        // Subscriptions of this connection not yet acknowledged.
        let mut awaiting = 0usize;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(broker = %server, "connected");
                    was_down = false;
                    metrics.set_subscribed(false);
                    awaiting = filters.len();
                    for f in &filters {
                        if let Err(e) = sub_client.subscribe(f.clone(), QoS::AtLeastOnce).await {
                            tracing::error!(filter = %f, error = %e, "subscribe failed");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let message = Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                    };
                    let acker = sub_client.clone();
                    let ack: Ack = Box::new(move || {
                        // A lost ack only means a redelivery, which dedupe absorbs.
                        if let Err(e) = acker.try_ack(&p) {
                            tracing::debug!(error = %e, "ack not queued");
                        }
                    });
                    if out.send(Delivery { message, ack }).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        .count();
                    if refused > 0 {
                        tracing::error!(broker = %server, codes = ?ack.return_codes, "the broker refused a subscription; check its ACL for this client");
                    } else if awaiting > 0 {
                        awaiting -= 1;
                        if awaiting == 0 {
                            tracing::info!(broker = %server, "subscribed");
                            metrics.set_subscribed(true);
                        }
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => break,
                Err(e) => {
                    metrics.set_subscribed(false);
                    if !was_down {
                        tracing::warn!(broker = %server, error = %e, "broker connection lost; retrying every second");
                        was_down = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(Subscription { client, task })
}

impl Subscription {
    /// Disconnects and waits for the event loop to end, at most `timeout`.
    pub async fn close(self, timeout: Duration) {
        let _ = self.client.disconnect_with_timeout(timeout).await;
        drop(self.client);
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!("MQTT event loop did not stop in time");
        }
    }
}
