//! `vigie-collector` built for the end-to-end tests: the same entry point.

fn main() -> std::process::ExitCode {
    vigie_collector::cli::main()
}
