//! `vigie-agent` built for the end-to-end tests: the same entry point.

fn main() -> std::process::ExitCode {
    vigie_agent::cli::main()
}
