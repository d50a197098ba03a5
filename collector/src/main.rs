//! `vigie-collector`: thin binary over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use vigie_collector::config::CollectorConfig;

/// Collector of vigie: MQTT in, exact energy ledger, metrics and API out.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run against a broker until SIGINT or SIGTERM.
    Run {
        /// Configuration file (TOML); defaults apply when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run everything on this machine: embedded broker, simulated hosts, collector.
    Demo {
        /// HTTP listen address for the API and /metrics.
        #[arg(long, default_value = "127.0.0.1:9464")]
        http: SocketAddr,
        /// Port of the embedded MQTT broker on 127.0.0.1.
        #[arg(long, default_value_t = 11883)]
        mqtt_port: u16,
        /// Number of simulated hosts.
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Keep the ledger and fake trees here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,rumqttd=warn,rumqttd::server::broker=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigie-collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run { config } => {
            let cfg = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    CollectorConfig::from_toml(&text)
                        .with_context(|| format!("parsing {}", path.display()))?
                }
                None => CollectorConfig::default(),
            };
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.http.listen)
                    .await
                    .with_context(|| format!("binding {}", cfg.http.listen))?;
                vigie_collector::run(cfg, listener, shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        Command::Demo {
            http,
            mqtt_port,
            hosts,
            dir,
        } => rt.block_on(vigie_collector::demo::run(
            vigie_collector::demo::DemoOptions {
                http,
                mqtt_port,
                hosts,
                dir,
            },
            shutdown_signal(),
        )),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
