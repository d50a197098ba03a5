//! The collector's only MQTT module. Subscribes with a persistent session
//! and manual acknowledgements: a message is acknowledged only after the
//! ledger transaction holding it has committed, so the broker redelivers
//! anything the collector had not stored when it stopped.

use crate::config::MqttConfig;
use crate::ingest::Message;
use crate::metrics::Metrics;
use rumqttc::{
    AckMode, AsyncClient, BrokerSessionResumePolicy, ConnectionError, Event,
    IncomingPacketSizeLimit, MqttOptions, Packet, QoS, SessionMode, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
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
    /// When it was received (Unix ms): how long it waits for its commit
    /// shows in the lag gauges.
    pub received_ms: i64,
}

/// What a SUBACK says of the collector's subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubAckVerdict {
    /// Every filter granted at QoS 1 or 2: messages reach the collector
    /// at least once.
    Subscribed,
    /// A filter refused, or granted at QoS 0 (no redelivery after a
    /// crash): not ready.
    Refused,
    /// Not the acknowledgement of our one SUBSCRIBE of `filters` filters.
    Other,
}

fn suback_verdict(codes: &[SubscribeReasonCode], filters: usize) -> SubAckVerdict {
    let at_least_once = |c: &SubscribeReasonCode| {
        matches!(
            c,
            SubscribeReasonCode::Success(QoS::AtLeastOnce | QoS::ExactlyOnce)
        )
    };
    if !codes.iter().all(at_least_once) {
        SubAckVerdict::Refused
    } else if codes.len() == filters {
        SubAckVerdict::Subscribed
    } else {
        SubAckVerdict::Other
    }
}

/// Handle on the subscription.
pub struct Subscription {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

/// Largest packet taken from the broker. Far above the payload limit on
/// purpose: an oversized payload must reach validation (and be rejected
/// with its reason) rather than break the connection. A broker told this
/// limit drops a larger message on its way here, counted nowhere: its own
/// `max_packet_size` must be at most this (`deploy/mosquitto/vigie.conf`,
/// checked by a test), so that it refuses such a message at the publisher.
pub const MAX_PACKET: u32 = 16 * 1024 * 1024;

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
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.session_present => {
                    // A resumed persistent session: the broker kept the
                    // subscriptions it granted before (rumqttc refuses new
                    // SUBSCRIBEs right after a broker-only resume).
                    tracing::info!(broker = %server, "connected; session resumed with its subscriptions");
                    was_down = false;
                    metrics.set_subscribed(true);
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(broker = %server, "connected");
                    was_down = false;
                    metrics.set_subscribed(false);
                    // One SUBSCRIBE for every filter, queued from another
                    // task: this one must keep polling, since the request
                    // channel it would wait on is drained only by polling
                    // (and may be full of acknowledgements after an outage).
                    let client = sub_client.clone();
                    let wanted: Vec<SubscribeFilter> = filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                        .collect();
                    tokio::spawn(async move {
                        if let Err(e) = client.subscribe_many(wanted).await {
                            tracing::error!(error = %e, "subscribe not queued");
                        }
                    });
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
                    let received_ms = vigie_service::now_ms();
                    if out
                        .send(Delivery {
                            message,
                            ack,
                            received_ms,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    match suback_verdict(&ack.return_codes, filters.len()) {
                        SubAckVerdict::Subscribed => {
                            tracing::info!(broker = %server, "subscribed");
                            metrics.set_subscribed(true);
                        }
                        SubAckVerdict::Refused => {
                            tracing::error!(broker = %server, codes = ?ack.return_codes, "the broker refused a subscription or granted it below QoS 1; check its ACL for this client");
                            metrics.set_subscribed(false);
                        }
                        SubAckVerdict::Other => {}
                    }
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => break,
                Err(e) => {
                    metrics.set_subscribed(false);
                    if !was_down {
                        tracing::warn!(broker = %server, error = %e, "broker connection lost; retrying every second");
                        was_down = true;
                        metrics.broker_disconnect();
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        metrics.set_subscribed(false);
    });
    Ok(Subscription { client, task })
}

impl Subscription {
    /// Disconnects and waits for the event loop to end, at most `timeout`.
    /// Aborted then, so that it lets go of the ledger writer's channel
    /// (the writer ends when every sender is gone): a broker that cannot
    /// be reached must not keep the collector from stopping.
    pub async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.client.disconnect_with_timeout(timeout)).await;
        drop(self.client);
        let mut task = self.task;
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            tracing::warn!("MQTT event loop did not stop in time; aborted");
            task.abort();
            let _ = task.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A directive's value in a Mosquitto configuration.
    fn directive<'a>(conf: &'a str, name: &str) -> Option<&'a str> {
        conf.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(str::trim)
    }

    #[test]
    fn the_example_broker_refuses_at_the_publisher_what_the_collector_could_not_take() {
        let conf = include_str!("../../deploy/mosquitto/vigie.conf");
        let max: u32 = directive(conf, "max_packet_size")
            .expect("max_packet_size in deploy/mosquitto/vigie.conf")
            .parse()
            .unwrap();
        // Never more than the collector takes: the broker would drop the
        // message on its way here ("too large outgoing PUBLISH").
        assert!(max <= MAX_PACKET, "{max} > {MAX_PACKET}");
        // Room for a payload at the collector's default limit, its topic
        // and the PUBLISH header: such a payload is the collector's to
        // judge, and a little more is refused by it and counted.
        let payload = crate::config::CollectorConfig::default()
            .ingest
            .max_payload_bytes;
        assert!(max as usize >= payload + 1024, "{max} < {payload} + 1024");
        // message_size_limit acknowledges and drops: the agent would take
        // the PUBACK for delivery.
        assert_eq!(directive(conf, "message_size_limit"), None);
    }

    #[test]
    fn ready_only_when_every_filter_is_granted_at_least_once() {
        use SubscribeReasonCode::{NotAuthorized, Success};
        let ok = Success(QoS::AtLeastOnce);
        assert_eq!(
            suback_verdict(&[ok, ok, Success(QoS::ExactlyOnce)], 3),
            SubAckVerdict::Subscribed
        );
        // One filter refused by an ACL.
        assert_eq!(
            suback_verdict(&[ok, NotAuthorized, ok], 3),
            SubAckVerdict::Refused
        );
        // Granted at QoS 0: nothing would be redelivered after a crash.
        assert_eq!(
            suback_verdict(&[ok, Success(QoS::AtMostOnce), ok], 3),
            SubAckVerdict::Refused
        );
        // Not the acknowledgement of our SUBSCRIBE of three filters.
        assert_eq!(suback_verdict(&[ok], 3), SubAckVerdict::Other);
        assert_eq!(suback_verdict(&[], 3), SubAckVerdict::Other);
    }
}
