//! `vigie-collector`: thin binary over the library.

fn main() -> std::process::ExitCode {
    vigie_collector::cli::main()
}
