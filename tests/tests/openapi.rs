//! The OpenAPI document served at /api/openapi.json, and schemathesis
//! (PyPI) fuzzing every documented route of a running demo collector: no
//! request may produce a server error. CI installs schemathesis and sets
//! VIGIE_REQUIRE_SCHEMATHESIS=1; elsewhere the fuzzing part is skipped,
//! with a `SKIPPED` line in the normal output (`vigie_testkit::skip`),
//! when schemathesis is not installed. `$VIGIE_SCHEMATHESIS`, when set,
//! must exist.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vigie_e2e::start_demo;
use vigie_testkit::{http_get, wait_for};

fn schemathesis() -> Option<PathBuf> {
    vigie_testkit::find_tool(
        "VIGIE_SCHEMATHESIS",
        "schemathesis",
        &vigie_testkit::home_dir(".cache/vigie/schemathesis-venv/bin"),
    )
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
        vigie_testkit::skip(
            "VIGIE_REQUIRE_SCHEMATHESIS",
            "the fuzzing part",
            "schemathesis not found ($VIGIE_SCHEMATHESIS, PATH, ~/.cache/vigie/schemathesis-venv/bin)",
            "python3 -m venv ~/.cache/vigie/schemathesis-venv && ~/.cache/vigie/schemathesis-venv/bin/pip install schemathesis",
        );
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
