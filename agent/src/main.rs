//! `vigie-agent`: thin binary over the library.

fn main() -> std::process::ExitCode {
    vigie_agent::cli::main()
}
