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
    }
}
