//! A plain clone tests itself: no test reads a fixture from outside the
//! repository, and the fixtures copied in from the DMTF, snmpsim-data and
//! the grid operators travel with their licences.
//!
//! The check is static: every `.join("…")` literal in a test, resolved from
//! its crate's directory (what `CARGO_MANIFEST_DIR` is), must stay inside
//! the workspace, and no source names the old location under `../shared`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Component, Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file of the workspace, outside build output and VCS data.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The directory of the nearest `Cargo.toml` above `file`.
fn crate_dir(file: &Path) -> PathBuf {
    let mut dir = file.parent().unwrap();
    while !dir.join("Cargo.toml").is_file() {
        dir = dir.parent().unwrap();
    }
    dir.to_path_buf()
}

/// `base/rel` with `.` and `..` resolved lexically (the path need not exist).
fn normalise(base: &Path, rel: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The string literals passed to `.join(` in `text`.
fn joined_literals(text: &str) -> Vec<String> {
    let needle = ".join(\"";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(needle) {
        rest = &rest[i + needle.len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn no_test_reads_a_fixture_outside_the_repository() {
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} .rs files", files.len());
    // Spelled in two halves so that this file does not match itself.
    let old = ["shared", "/testdata"].concat();
    let mut bad = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        if text.contains(&old) {
            bad.push(format!("{shown}: names {old}"));
        }
        let base = crate_dir(file);
        for lit in joined_literals(&text) {
            if lit.starts_with("..") && !normalise(&base, &lit).starts_with(&root) {
                bad.push(format!("{shown}: .join(\"{lit}\") leaves the repository"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "tests reading outside the repository:\n{}",
        bad.join("\n")
    );
}

#[test]
fn copied_fixtures_keep_their_licences() {
    let data = workspace().join("testdata");
    for (file, says) in [
        ("redfish/LICENSE-DMTF.md", "Distributed Management Task"),
        ("snmp/LICENSE-snmpsim-data.txt", "Redistribution"),
        ("grid/README.md", "Licence Ouverte"),
    ] {
        let text = std::fs::read_to_string(data.join(file))
            .unwrap_or_else(|e| panic!("testdata/{file}: {e}"));
        assert!(text.contains(says), "testdata/{file} does not say {says:?}");
    }
    // Each real grid series the tests read is described, with its licence,
    // in the grid README.
    let readme = std::fs::read_to_string(data.join("grid/README.md")).unwrap();
    let mut series = 0;
    for entry in std::fs::read_dir(data.join("grid")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "README.md" {
            series += 1;
            let row = readme
                .lines()
                .find(|l| l.contains(&format!("`{name}`")))
                .unwrap_or_else(|| panic!("testdata/grid/README.md does not describe {name}"));
            assert!(
                ["Licence", "CC BY", "ODbL"].iter().any(|l| row.contains(l)),
                "no licence for {name}: {row}"
            );
        }
    }
    assert_eq!(series, 3, "the grid series the tests read");
}
