//! The `vigie-agent` command line. `main.rs` only calls [`main`], so the
//! end-to-end tests build the very same entry point.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::AgentConfig;

/// Per-host energy agent of vigie.
#[derive(Parser)]
#[command(name = "vigie-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read sensors and publish until SIGINT or SIGTERM.
    Run {
        /// Configuration file (TOML); defaults apply when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List every sensor with a live reading, and why each unused source is unused.
    Probe {
        /// Configuration file (TOML); defaults apply when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Time between the two reads that give power, e.g. `1s`.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a signing key: writes FILE (private, PKCS#8 PEM, mode 0600)
    /// and FILE.pub, and prints the public key for the collector's
    /// `[ingest.keys]`. Never overwrites.
    Keygen {
        /// The private key file to create, e.g. /etc/vigie/agent.key.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Parses the command line, runs, and prints the error chain on failure.
pub fn main() -> ExitCode {
    vigie_service::init_tracing("info");
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigie-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg: AgentConfig = vigie_service::load_config(config.as_deref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::run(cfg, vigie_service::shutdown_signal()))?;
            Ok(())
        }
        Command::Keygen { out } => {
            let key = vigie_service::keys::generate_key_file(&out)?;
            println!("{}", vigie_protocol::key_hex(&key.verifying_key()));
            eprintln!(
                "private key in {} (keep it there, mode 0600); public key above and in {}: add it to the collector's [ingest.keys] as <host> = \"<key>\"",
                out.display(),
                vigie_service::keys::pub_path(&out).display()
            );
            Ok(())
        }
        Command::Probe {
            config,
            window,
            json,
        } => {
            let cfg: AgentConfig = vigie_service::load_config(config.as_deref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(crate::probe::probe(
                &cfg,
                crate::Hardware::default(),
                window,
            ));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
    }
}
