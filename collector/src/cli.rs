//! The `vigie-collector` command line. `main.rs` only calls [`main`], so
//! the end-to-end tests build the very same entry point.

use anyhow::Context;
use clap::{Parser, Subcommand};
#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::CollectorConfig;

/// Collector of vigie: MQTT in, exact energy ledger, metrics and API out.
#[derive(Parser)]
#[command(name = "vigie-collector", version, about)]
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
    /// Mint an API bearer token: prints the token once, and the line for
    /// the tokens file (which holds only its SHA-256).
    Token {
        /// operator, regulator or scheduler.
        #[arg(long)]
        role: String,
        /// Who holds it (shown in logs, e.g. `grafana`, `slurm`).
        #[arg(long)]
        name: String,
        /// Append the line to this tokens file (created 0600 if absent).
        #[arg(long)]
        append: Option<PathBuf>,
    },
    /// Import hand readings of a manual meter from a CSV file
    /// (`from,to,amount[,estimated[,note]]`, amount in kWh or, for water
    /// meters, litres); all lines or none.
    ImportReadings {
        /// Configuration file (names the meters and the ledger).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Meter name from `[[site.meters]]`.
        #[arg(long)]
        meter: String,
        /// The CSV file.
        file: PathBuf,
    },
    /// Regulators' data sets (eed, enefg, fr) for a period, in JSON or CSV,
    /// hashed and optionally signed; `export keygen --out DIR` makes a key pair.
    Export(crate::export::cli::ExportArgs),
    /// The permit dossier for a period (energy, PUE, ERF, heat profile,
    /// heat-reuse potential study) as HTML or PDF, hashed and optionally signed.
    Dossier(crate::dossier::cli::DossierArgs),
    /// Check an export against FILE.sha256 and FILE.sig; non-zero exit on mismatch.
    Verify(crate::export::cli::VerifyArgs),
    /// Run everything on this machine: embedded broker, simulated hosts, collector.
    #[cfg(feature = "demo")]
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
        /// Start with an empty ledger: no simulated history of the
        /// facility meters (by default, a new ledger gets one from
        /// 1 January of last year).
        #[arg(long)]
        no_history: bool,
    },
}

/// Parses the command line, runs, and prints the error chain on failure.
pub fn main() -> ExitCode {
    // rumqttd (demo only) logs every probe and disconnect as an error.
    vigie_service::init_tracing(
        "info,rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off",
    );
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
            let cfg: CollectorConfig = vigie_service::load_config(config.as_deref())?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.http.listen)
                    .await
                    .with_context(|| format!("binding {}", cfg.http.listen))?;
                crate::run(cfg, listener, vigie_service::shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        Command::Token { role, name, append } => {
            let role = crate::auth::Role::parse(&role)
                .context("--role must be operator, regulator or scheduler")?;
            anyhow::ensure!(
                !name.is_empty() && !name.contains(char::is_whitespace),
                "--name must be one word"
            );
            let (token, line) = crate::auth::mint(role, &name)?;
            match append {
                Some(path) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    writeln!(f, "{line}")?;
                    eprintln!("added to {}: {line}", path.display());
                }
                None => eprintln!("line for the tokens file:\n{line}"),
            }
            eprintln!("token for {name} ({}), shown once:", role.as_str());
            println!("{token}");
            Ok(())
        }
        Command::ImportReadings {
            config,
            meter,
            file,
        } => {
            let cfg: CollectorConfig = vigie_service::load_config(config.as_deref())?;
            let m = cfg
                .site
                .meters
                .iter()
                .find(|m| m.name == meter)
                .with_context(|| format!("no meter {meter:?} in [site]"))?;
            anyhow::ensure!(
                m.is_manual(),
                "meter {meter:?} reads the ledger; hand readings go to meters without sensors or register"
            );
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let readings =
                crate::site::parse_readings_csv(&text, m.role == crate::site::Role::Water, |t| {
                    crate::api::parse_time_str(t)
                })
                .map_err(anyhow::Error::msg)?;
            let mut conn = crate::backend::open(&cfg.store.path)
                .with_context(|| format!("opening {}", cfg.store.path.display()))?;
            crate::site::add_manual(&mut *conn, &meter, &readings, crate::now_ms())?;
            eprintln!("{} readings stored for {meter}", readings.len());
            Ok(())
        }
        Command::Export(a) => crate::export::cli::export(a),
        Command::Dossier(a) => crate::dossier::cli::dossier(a),
        Command::Verify(a) => crate::export::cli::verify(a),
        #[cfg(feature = "demo")]
        Command::Demo {
            http,
            mqtt_port,
            hosts,
            dir,
            no_history,
        } => rt.block_on(crate::demo::run(
            crate::demo::DemoOptions {
                http,
                mqtt_port,
                hosts,
                dir,
                history: !no_history,
            },
            vigie_service::shutdown_signal(),
        )),
    }
}
