//! `vigie-collector` built for the end-to-end tests: the same entry point.
//! One addition the shipped binary lacks: `VIGIE_E2E_NOW_MS` pins the
//! collector's clock (`vigie_service::pin_clock`), so that a test of
//! time-dependent answers runs at an instant it chose.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Ok(v) = std::env::var("VIGIE_E2E_NOW_MS") {
        let Ok(ms) = v.parse::<i64>() else {
            eprintln!("VIGIE_E2E_NOW_MS={v}: not a number of milliseconds");
            return ExitCode::FAILURE;
        };
        vigie_service::pin_clock(ms);
    }
    vigie_collector::cli::main()
}
