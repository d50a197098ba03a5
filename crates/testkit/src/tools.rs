//! External programs some tests drive (Chromium, snmpsim, schemathesis,
//! TypeScript, poppler): finding them, and saying so loudly when one is
//! missing.
//!
//! Cargo's test harness has no "skipped" outcome, and it captures what a
//! test prints with `print!` and `eprint!` (shown only with
//! `--nocapture`). [`skip`] writes through `std::io::stderr()`, which the
//! harness does not capture, so its `SKIPPED` line shows in the normal
//! output of `cargo test` and in CI logs; and when `VIGIE_SKIP_LOG` names
//! a file (`.ci/test` sets it), it appends one line there, from which
//! `.ci/test` prints a summary at the end of the run.

use std::io::Write;
use std::path::PathBuf;

/// The program a test needs: `$env` when set, which must then be a file
/// (a configured path that does not exist is a configuration error, not
/// a missing tool: this panics), else the first `name` in `PATH` or in
/// `extra_dirs`. `None` when it is nowhere.
pub fn find_tool(env: &str, name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "${env} is {}, which is not a file: fix or unset it (unset, {name} is looked for in PATH)",
            p.display()
        );
        return Some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend_from_slice(extra_dirs);
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `$HOME/<rel>`, where the CI script installs the tools from PyPI and
/// npm (`~/.cache/vigie/...`); empty without `HOME`.
pub fn home_dir(rel: &str) -> Vec<PathBuf> {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(rel))
        .into_iter()
        .collect()
}

/// Whether the environment variable `require` (`VIGIE_REQUIRE_CHROMIUM`,
/// ...) is set to anything but empty or `0`: `.ci/run` sets them, so that
/// a missing tool fails there.
pub fn required(require: &str) -> bool {
    std::env::var_os(require).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `part` of the running test (`"all"`, `"the browser part"`) cannot run
/// because `missing` is not installed; `install` is the command that
/// installs it. Panics when `$require` is set ([`required`]); otherwise
/// writes `SKIPPED <test> (<part>): <missing>; install: <install>` to the
/// process's standard error, past the harness's capture, and appends it
/// to `$VIGIE_SKIP_LOG` (tab-separated) when that is set. The caller then
/// returns from the test.
pub fn skip(require: &str, part: &str, missing: &str, install: &str) {
    assert!(
        !required(require),
        "{missing}; install: {install} (${require} is set: here a missing tool is a failure)"
    );
    // The harness names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("SKIPPED {test} ({part}): {missing}; install: {install}");
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(log) = std::env::var_os("VIGIE_SKIP_LOG") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| {
                f.write_all(format!("{test}\t{part}\t{missing}\t{install}\n").as_bytes())
            });
        if let Err(e) = written {
            let _ = writeln!(
                std::io::stderr(),
                "(not recorded in $VIGIE_SKIP_LOG {}: {e})",
                PathBuf::from(log).display()
            );
        }
    }
}
