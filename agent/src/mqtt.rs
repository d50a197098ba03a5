//! The agent's only MQTT module: connection, last will, publishing and
//! delivery tracking. Everything else hands it bytes and topics.
//!
//! With a key, every payload is signed here, as it is published
//! (`vigie_protocol::sign_payload`), not when it is spooled: the spool
//! keeps and merges plain JSON, a batch replayed after a key rotation
//! goes out under the key in use, and Ed25519 being deterministic, a
//! batch published twice under one key is the same bytes.

use crate::config::MqttConfig;
use ed25519_dalek::SigningKey;
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Packet, PublishOptions, QoS,
    TlsConfiguration, Transport,
};
use std::time::Duration;
use tokio::sync::mpsc;
use vigie_protocol::{Topic, TopicKind};

/// What the connection tells the run loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// (Re)connected: retained status and inventory must be published again.
    Connected,
    /// The connection dropped: batches stay spooled until the next [`LinkEvent::Connected`].
    Disconnected,
    /// A tracked telemetry publish finished: acknowledged by the broker, or failed.
    Delivered {
        /// Batch epoch.
        epoch: u64,
        /// Batch sequence number.
        seq: u64,
        /// Whether the broker acknowledged it.
        ok: bool,
    },
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Site or host unusable in a topic.
    #[error("bad site or host name: {0}")]
    Name(#[from] vigie_protocol::IdError),
    /// A TLS or password file could not be used.
    #[error("MQTT credentials: {0}")]
    Secret(#[from] vigie_service::secrets::SecretError),
}

/// Publisher bound to one host's topics.
pub struct Link {
    client: AsyncClient,
    telemetry: String,
    status: String,
    meta: String,
    events: mpsc::UnboundedSender<LinkEvent>,
    task: tokio::task::JoinHandle<()>,
    signer: Option<SigningKey>,
}

impl Link {
    /// Starts connecting (in the background; [`LinkEvent::Connected`] tells
    /// when it is up). The last will marks the host offline, retained.
    /// With `signer`, every payload (the last will too) is signed.
    pub fn start(
        cfg: &MqttConfig,
        client_id: &str,
        site: &str,
        host: &str,
        offline_payload: Vec<u8>,
        signer: Option<SigningKey>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<LinkEvent>), LinkError> {
        let offline_payload = sign(signer.as_ref(), offline_payload);
        let topic = |kind| Topic::new(site, host, kind).map(|t| t.to_string());
        let (telemetry, status, meta) = (
            topic(TopicKind::Telemetry)?,
            topic(TopicKind::Status)?,
            topic(TopicKind::Meta)?,
        );
        let mut opts = MqttOptions::new(client_id, (cfg.host.clone(), cfg.port));
        opts.set_keep_alive(
            u16::try_from(cfg.keep_alive.as_secs())
                .unwrap_or(u16::MAX)
                .max(5),
        );
        // rumqttc sizes its in-flight table by this limit (default 65535
        // slots, about 14 MB); 100 unacknowledged batches is plenty, and a
        // replay simply waits for slots.
        opts.set_outgoing_inflight_upper_limit(100);
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
        opts.set_last_will(LastWill::new(
            status.clone(),
            offline_payload,
            QoS::AtLeastOnce,
            true,
            None,
        ));
        let (client, mut eventloop) = AsyncClient::builder(opts).capacity(64).build();
        let (tx, rx) = mpsc::unbounded_channel();
        let events = tx.clone();
        let server = format!("{}:{}", cfg.host, cfg.port);
        let task = tokio::spawn(async move {
            let mut was_down = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(broker = %server, "connected");
                        was_down = false;
                        let _ = tx.send(LinkEvent::Connected);
                    }
                    Ok(_) => {}
                    Err(ConnectionError::RequestsDone) => break,
                    Err(e) => {
                        if !was_down {
                            tracing::warn!(broker = %server, error = %e, "broker connection lost; retrying every second");
                            was_down = true;
                            let _ = tx.send(LinkEvent::Disconnected);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok((
            Link {
                client,
                telemetry,
                status,
                meta,
                events,
                task,
                signer,
            },
            rx,
        ))
    }

    /// Publishes a telemetry batch (QoS 1) and reports its fate as a
    /// [`LinkEvent::Delivered`].
    pub async fn publish_batch(
        &self,
        epoch: u64,
        seq: u64,
        payload: Vec<u8>,
    ) -> Result<(), rumqttc::ClientError> {
        let notice = self
            .client
            .publish_tracked(
                self.telemetry.clone(),
                sign(self.signer.as_ref(), payload),
                PublishOptions::at_least_once(),
            )
            .await?;
        let events = self.events.clone();
        tokio::spawn(async move {
            let ok = notice.wait_async().await.is_ok();
            let _ = events.send(LinkEvent::Delivered { epoch, seq, ok });
        });
        Ok(())
    }

    /// Publishes the retained status.
    pub async fn publish_status(&self, payload: Vec<u8>) -> Result<(), rumqttc::ClientError> {
        self.client
            .publish(
                self.status.clone(),
                sign(self.signer.as_ref(), payload),
                PublishOptions::at_least_once().retained(),
            )
            .await
    }

    /// Publishes the retained inventory.
    pub async fn publish_meta(&self, payload: Vec<u8>) -> Result<(), rumqttc::ClientError> {
        self.client
            .publish(
                self.meta.clone(),
                sign(self.signer.as_ref(), payload),
                PublishOptions::at_least_once().retained(),
            )
            .await
    }

    /// Disconnects cleanly (the broker then does not send the last will)
    /// and waits for the connection task, at most `timeout`.
    pub async fn close(self, timeout: Duration) {
        let _ = self.client.disconnect_with_timeout(timeout).await;
        drop(self.client);
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

/// `payload` as published: with its signature trailer when there is a key.
fn sign(key: Option<&SigningKey>, payload: Vec<u8>) -> Vec<u8> {
    match key {
        Some(k) => vigie_protocol::sign_payload(k, &payload),
        None => payload,
    }
}
