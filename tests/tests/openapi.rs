//! The OpenAPI document served at /api/openapi.json, and schemathesis
//! (PyPI) fuzzing every documented route of a running demo collector: no
//! request may produce a server error. CI installs schemathesis and sets
//! VIGIE_REQUIRE_SCHEMATHESIS=1; elsewhere the fuzzing part is skipped,
//! with a message, when schemathesis is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vigie_e2e::start_demo;
use vigie_testkit::{http_get, wait_for};

fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VIGIE_SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/vigie/schemathesis-venv/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("schemathesis"))
        .find(|p| p.is_file())
}

#[test]
fn every_documented_route_survives_schemathesis() {
    let dir = tempfile::tempdir().unwrap();
    let (mut demo, http) = start_demo(dir.path(), &["--hosts", "2"]).unwrap();
    let doc = wait_for(
        "the demo's API",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let r = http_get(http, "/api/openapi.json").ok()?;
            (r.status == 200).then_some(r)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", demo.log_tail()));
    let v = doc.json().unwrap();
    assert_eq!(v["openapi"], "3.0.3");
    assert!(v["paths"].as_object().unwrap().len() >= 19);

    let Some(st) = schemathesis() else {
        let msg = "schemathesis not found ($VIGIE_SCHEMATHESIS, PATH, ~/.cache/vigie/schemathesis-venv/bin): \
                   python3 -m venv ~/.cache/vigie/schemathesis-venv && ~/.cache/vigie/schemathesis-venv/bin/pip install schemathesis";
        assert!(
            std::env::var_os("VIGIE_REQUIRE_SCHEMATHESIS").is_none(),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let out = Command::new(st)
        .current_dir(dir.path())
        .args([
            "run",
            &format!("http://{http}/api/openapi.json"),
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--generation-deterministic",
            "--workers",
            "1",
            // No --max-time: with it, fuzzing runs until the budget is spent.
            "--phases",
            "examples,fuzzing",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\ncollector:\n{}",
        demo.log_tail()
    );
    assert!(text.contains("passed"), "{text}");
    assert!(demo.interrupt(Duration::from_secs(15)).unwrap().success());
}
