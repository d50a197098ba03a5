//! The permit dossier end to end: a year of monthly hand readings for the
//! grid, IT, delivered-heat and rejected-heat meters goes in through
//! `import-readings`, `vigie-collector dossier` writes HTML and a signed
//! PDF, and the figures computed here by hand must appear in both. The PDF
//! is checked with poppler: `pdfinfo` (valid, page count), `pdftotext`
//! (figures and headings), and `pdftoppm` rendering every page to an
//! image that must not be blank (the chart pages well inked). The HTTP
//! route serves the same dossier.
//!
//! poppler-utils (`pdfinfo`, `pdftotext`, `pdftoppm` in /usr/bin or on
//! PATH) is installed by `.ci/run`; without it the poppler checks are
//! skipped with a `SKIPPED` line in the normal output
//! (`vigie_testkit::skip`), unless `VIGIE_REQUIRE_POPPLER` is set (CI),
//! which makes that a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use vigie_e2e::{Proc, binary};
use vigie_testkit::{Mosquitto, free_addr, http_get, wait_for};

/// kWh per month (January first).
const GRID: [f64; 12] = [
    13_500.0, 14_000.0, 14_500.0, 15_000.0, 15_500.0, 16_000.0, 16_500.0, 17_000.0, 17_500.0,
    18_000.0, 18_500.0, 19_000.0,
];
const IT: [f64; 12] = [
    10_100.0, 10_200.0, 10_300.0, 10_400.0, 10_500.0, 10_600.0, 10_700.0, 10_800.0, 10_900.0,
    11_000.0, 11_100.0, 11_200.0,
];
const HEAT: [f64; 12] = [
    3000.0, 2800.0, 2400.0, 1800.0, 1200.0, 800.0, 600.0, 600.0, 1000.0, 1600.0, 2400.0, 2900.0,
];
const REJECTED: f64 = 8000.0;

fn month_start(m: usize) -> String {
    // m: 0..=12 (12 is January of the next year).
    if m == 12 {
        "2026-01-01T00:00:00Z".into()
    } else {
        format!("2025-{:02}-01T00:00:00Z", m + 1)
    }
}

fn csv(values: &[f64]) -> String {
    // import-readings takes the first line as the header.
    let mut s = String::from("from,to,kwh\n");
    for (m, v) in values.iter().enumerate() {
        s.push_str(&format!("{},{},{v}\n", month_start(m), month_start(m + 1)));
    }
    s
}

fn tool(name: &str) -> Option<PathBuf> {
    let p = Path::new("/usr/bin").join(name);
    if p.is_file() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn run(bin: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{o}\n{e}",
        bin.display()
    );
    (o, e)
}

/// Width, height and RGB pixels of a binary PPM (P6, 8-bit).
fn ppm(bytes: &[u8]) -> (usize, usize, &[u8]) {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes[i] == b'#' {
            while bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P6", "binary pixmap");
    assert_eq!(fields[3], "255", "8-bit");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let data = &bytes[i + 1..];
    assert_eq!(data.len(), w * h * 3, "whole image");
    (w, h, data)
}

#[test]
fn a_year_of_readings_gives_the_dossier_in_html_and_pdf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let collector = binary("vigie-collector").unwrap();
    let broker = Mosquitto::start().unwrap();
    let http = free_addr().unwrap();
    let config = d.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"[mqtt]
port = {}
client_id = "dossier-collector"
site = "lyon-1"
[store]
path = "{}"
[http]
listen = "{http}"
[carbon]
zone = "DE"
intensity_g_per_kwh = 400.0
[site]
it_category = 2
[[site.meters]]
name = "grid"
role = "grid-import"
[[site.meters]]
name = "it"
role = "it"
[[site.meters]]
name = "heat-out"
role = "heat-delivered"
[[site.meters]]
name = "dry-coolers"
role = "heat-rejected"
[dossier]
site_name = "Lyon One"
operator = "Example Compute SAS"
commissioned = "2020-03-01"
[dossier.heat_study]
it_load_kw_constant = 15.0
cooling = "warm-water"
heat_pump = {{ cop = 3.5 }}
offtaker = {{ supply_c = 70.0 }}
assumed_pue = 1.5
[dossier.economics]
offtaker = "Reseau de chaleur Lyon Sud"
capex_eur = 60000.0
distance_m = 150.0
connection_eur_per_m = 400.0
opex_eur_per_year = 2000.0
heat_price_eur_per_mwh = 45.0
electricity_price_eur_per_mwh = 100.0
discount_rate = 0.05
horizon_years = 20
reference_heat_source = "gas boiler"
reference_kg_per_mwh_heat = 227.0
electricity_kg_per_mwh = 52.0
basis = {{ heat_price_eur_per_mwh = "offer of the network operator" }}
"#,
            broker.port(),
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    for (meter, values) in [
        ("grid", GRID.to_vec()),
        ("it", IT.to_vec()),
        ("heat-out", HEAT.to_vec()),
        ("dry-coolers", vec![REJECTED; 12]),
    ] {
        let f = d.join(format!("{meter}.csv"));
        std::fs::write(&f, csv(&values)).unwrap();
        run(
            &collector,
            &[
                "import-readings",
                "--config",
                cfg,
                "--meter",
                meter,
                f.to_str().unwrap(),
            ],
        );
    }
    // By hand.
    let (grid, it, heat): (f64, f64, f64) = (GRID.iter().sum(), IT.iter().sum(), HEAT.iter().sum());
    assert_eq!((grid, it, heat), (195_000.0, 127_800.0, 21_100.0));
    let pue = format!("{:.3}", grid / it); // 1.526
    let erf = format!("{:.1} %", heat / grid * 100.0); // 10.8 %
    let january_pue = format!("{:.3}", GRID[0] / IT[0]); // 1.337
    let e_dc = format!("{:.3}", grid / 1000.0); // 195.000 MWh

    // HTML.
    let html_path = d.join("dossier.html");
    let (_, progress) = run(
        &collector,
        &[
            "dossier",
            "--config",
            cfg,
            "--from",
            "2025-01-01",
            "--to",
            "2026-01-01",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
        ],
    );
    assert!(
        progress.contains("dossier: period 2025-01-01T00:00:00Z"),
        "{progress}"
    );
    assert!(progress.contains("dossier: done"), "{progress}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    for want in [
        "Lyon One",
        "Example Compute SAS",
        pue.as_str(),
        erf.as_str(),
        january_pue.as_str(),
        e_dc.as_str(),
        "Facility and IT energy by month",
        "PUE, monthly",
        "Heat by month",
        "Heat rejected (measured)",
        "Assumptions of the study",
        "heat pump COP",
        "configured",
        "DOMAIN.md §6",
        // 2025 is before any EnEfG PUE limit: the chart draws none, as
        // the targets table says, and the note says what comes when.
        "no EnEfG PUE limit is in force for this period",
        "1.5 applies from 2027-07-01",
        "Meters used",
        "hand readings",
        "Cost-benefit analysis",
        "Net present value",
        "offer of the network operator",
        "Reseau de chaleur Lyon Sud",
        "Water use over the period",
        "Deliverable heat, hourly (study)",
    ] {
        assert!(html.contains(want), "HTML lacks {want:?}");
    }
    assert!(!html.contains("(reference)"), "a PUE line not in force");
    // Energy, PUE, heat by month, and the study's hourly profile.
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(!html.contains("<script") && !html.contains("src="));
    assert!(d.join("dossier.html.sha256").is_file());

    // PDF, signed.
    run(
        &collector,
        &["export", "keygen", "--out", d.to_str().unwrap()],
    );
    let pdf_path = d.join("dossier.pdf");
    let (_, progress) = run(
        &collector,
        &[
            "dossier",
            "--config",
            cfg,
            "--from",
            "2025-01-01",
            "--to",
            "2026-01-01",
            "--format",
            "pdf",
            "--out",
            pdf_path.to_str().unwrap(),
            "--key",
            d.join("export-signing.key").to_str().unwrap(),
        ],
    );
    assert!(progress.contains("dossier: signing"), "{progress}");
    run(
        &collector,
        &[
            "verify",
            "--public-key",
            d.join("export-signing.pub").to_str().unwrap(),
            pdf_path.to_str().unwrap(),
        ],
    );
    let pdf = std::fs::read(&pdf_path).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));

    // The HTTP route serves the same dossier.
    let mut daemon = Proc::start("collector", &collector, &["run", "--config", cfg], d).unwrap();
    let got = wait_for(
        "the dossier over HTTP",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(200),
        || {
            http_get(
                http,
                "/api/v1/dossier?from=2025-01-01&to=2026-01-01&format=html",
            )
            .ok()
            .filter(|r| r.status == 200)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_tail()));
    assert!(got.body.contains(&pue) && got.body.contains("Lyon One"));
    let got = http_get(
        http,
        "/api/v1/dossier?from=2025-01-01&to=2026-01-01&format=pdf",
    )
    .unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body.starts_with("%PDF-"));
    let bad = http_get(http, "/api/v1/dossier?format=docx").unwrap();
    assert_eq!(bad.status, 400);
    daemon.kill();

    // Poppler.
    let (Some(pdfinfo), Some(pdftotext), Some(pdftoppm)) =
        (tool("pdfinfo"), tool("pdftotext"), tool("pdftoppm"))
    else {
        vigie_testkit::skip(
            "VIGIE_REQUIRE_POPPLER",
            "the PDF rendering checks",
            "poppler-utils (pdfinfo, pdftotext, pdftoppm) not found",
            "apt-get install poppler-utils",
        );
        return;
    };
    let p = pdf_path.to_str().unwrap();
    let (info, _) = run(&pdfinfo, &[p]);
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{info}"));
    assert!(pages >= 4, "{pages} pages:\n{info}");
    assert!(
        info.contains("Page size:") && info.contains("(A4)"),
        "{info}"
    );
    assert!(
        info.contains("Title:") && info.contains("Lyon One"),
        "{info}"
    );
    let (text, _) = run(&pdftotext, &["-layout", p, "-"]);
    for want in [
        "Permit dossier",
        "1 Summary",
        "2 EnEfG targets",
        "3 Monthly energy",
        "4 PUE over time",
        "5 Heat profile over the year",
        "6 Heat-reuse potential study",
        "Assumptions of the study",
        "7 Methodology and data coverage",
        "8 Provenance",
        pue.as_str(),
        erf.as_str(),
        january_pue.as_str(),
        e_dc.as_str(),
        "Lyon One",
        "t CO2e",
        "°C",
        &format!("Page {pages} of {pages}"),
    ] {
        assert!(text.contains(want), "PDF text lacks {want:?}:\n{text}");
    }
    // Every page rendered, none blank; the charts (the only colour in
    // the document) drawn on the pages that carry their titles.
    let prefix = d.join("page");
    run(&pdftoppm, &["-r", "50", p, prefix.to_str().unwrap()]);
    let mut images: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("page-") && n.ends_with(".ppm"))
        })
        .collect();
    images.sort();
    assert_eq!(images.len(), pages, "one image per page: {images:?}");
    let titles = [
        "Facility and IT energy by month",
        "PUE, monthly",
        "Heat by month",
        "Deliverable heat, hourly (study)",
    ];
    let mut charts_seen = 0;
    for (i, img) in images.iter().enumerate() {
        let bytes = std::fs::read(img).unwrap();
        let (w, h, px) = ppm(&bytes);
        // A4 at 50 dpi.
        assert!(
            (410..=416).contains(&w) && (582..=588).contains(&h),
            "{w}x{h}"
        );
        let (mut inked, mut coloured) = (0usize, 0usize);
        for rgb in px.chunks_exact(3) {
            let (lo, hi) = (rgb.iter().min().unwrap(), rgb.iter().max().unwrap());
            if *lo < 200 {
                inked += 1;
            }
            if hi - lo > 60 {
                coloured += 1;
            }
        }
        let n = (i + 1).to_string();
        let (page_text, _) = run(&pdftotext, &["-f", &n, "-l", &n, p, "-"]);
        let charts = titles.iter().filter(|t| page_text.contains(*t)).count();
        charts_seen += charts;
        eprintln!("page {n}: {inked} inked pixels, {coloured} coloured, {charts} chart(s)");
        assert!(inked > 1000, "page {n} is blank ({inked} inked pixels)");
        if charts > 0 {
            // A one-line chart (the PUE of a year with no EnEfG limit in
            // force, so no limit line) inks ~450 coloured pixels at 50 dpi.
            assert!(
                coloured > 300 * charts,
                "chart page {n}: {coloured} coloured pixels"
            );
        } else {
            assert!(
                coloured < 50,
                "page {n} has no chart but {coloured} coloured pixels"
            );
        }
    }
    assert_eq!(charts_seen, titles.len(), "each chart on one page");
}
