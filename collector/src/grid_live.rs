//! Keeps the grid table fresh from the configured live providers: one
//! task per `[[carbon.live]]` entry calls [`refresh`] every period with
//! the binary's clock. Failures are logged; the next period retries.
//! The providers, their configuration and the refresh itself are
//! `vigie_grid::live`'s.

use crate::grid::Provider;
use std::time::Duration;
pub use vigie_grid::live::{LiveConfig, refresh};

/// Spawns the refresh loop of one provider.
pub fn spawn(
    cfg: LiveConfig,
    provider: Box<dyn Provider>,
    db: std::path::PathBuf,
    zone: String,
    clock: fn() -> i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let conn = match crate::backend::open(&db) {
            Ok(c) => std::sync::Mutex::new(c),
            Err(e) => {
                tracing::error!(error = %e, "grid refresh: cannot open the store; live provider off");
                return;
            }
        };
        let mut tick = tokio::time::interval(cfg.every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match refresh(
                provider.as_ref(),
                &conn,
                &zone,
                cfg.backfill,
                cfg.horizon,
                clock(),
            )
            .await
            {
                Ok(n) => {
                    if failing {
                        tracing::info!(source = provider.source(), "grid provider answers again");
                    }
                    failing = false;
                    tracing::debug!(
                        source = provider.source(),
                        zone,
                        points = n,
                        "grid intensity refreshed"
                    );
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(source = provider.source(), zone, error = %e, retryable = e.is_retryable(), "grid intensity refresh failed; retrying every period, stored values stay in use");
                    }
                    failing = true;
                }
            }
        }
    })
}
