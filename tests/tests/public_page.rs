//! The public disclosure page end to end: a collector with a tokens file
//! and hand-read site meters for last year serves `/public`,
//! `/public/data.json` and `/public/data.csv` without a token (and still
//! refuses the API without one); headless Chromium renders the page and
//! shows the PUE, ERF, WUE and emissions computed here by hand, the
//! estimated flag and every month; the open data agree with the page; and
//! the name of the host in the ledger appears in none of them.
//!
//! Chromium is Debian's `chromium` (or `$VIGIE_CHROMIUM`, which must then
//! exist: a configured path that does not is an error). Without it the
//! browser part is skipped with a `SKIPPED` line in the normal output
//! (`vigie_testkit::skip`), unless `VIGIE_REQUIRE_CHROMIUM` is set (CI),
//! where the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigie_e2e::client::TestClient;
use vigie_e2e::{binary, start_collector};
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::{Mosquitto, free_addr, http_get_with, http_post_json, wait_for};

/// A host whose name must not leak into the public responses.
const HOST: &str = "secret-node-7f3a";

fn mint(d: &Path, role: &str, name: &str) -> String {
    let out = Command::new(binary("vigie-collector").unwrap())
        .args(["token", "--role", role, "--name", name, "--append"])
        .arg(d.join("tokens"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A GET keeping the headers (lower-cased names).
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Chromium, killed with its whole process group when dropped.
struct Browser {
    child: Option<Child>,
}

impl Browser {
    fn run(bin: &Path, profile: &Path, args: &[&str], stdout: &Path) -> Self {
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Browser { child: Some(child) }
    }

    /// Waits at most `limit` for Chromium to finish.
    fn wait(mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The group: the browser and the renderers it started.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn chromium() -> Option<PathBuf> {
    vigie_testkit::find_tool("VIGIE_CHROMIUM", "chromium", &["/usr/bin".into()])
}

/// The table row of `period` in the page.
fn month_row<'a>(page: &'a str, period: &str) -> &'a str {
    let start = page
        .find(&format!("data-period=\"{period}\""))
        .unwrap_or_else(|| panic!("no row {period}"));
    let end = page[start..].find("</tr>").unwrap();
    &page[start..start + end]
}

/// The figure row `id` (`pue`, `erf`, ...) of the year's table.
fn figure_row<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<tr id=\"{id}\""))
        .unwrap_or_else(|| panic!("no figure {id}"));
    let end = page[start..].find("</tr>").unwrap();
    &page[start..start + end]
}

/// A PNG's (width, height), checking its signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "not a PNG");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_page_shows_the_year_without_a_token_or_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = mint(d, "operator", "ops");
    let broker = Mosquitto::start().unwrap();
    let http = free_addr().unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            r#"[mqtt]
port = {}
client_id = "public-collector"
[store]
path = "{}"
[http]
listen = "{http}"
tokens_file = "{}"
[carbon]
zone = "FR"
intensity_g_per_kwh = 50.0
[public]
enabled = true
site_name = "Nord-1 data centre"
operator = "Example SAS"
contact = "energy@example.org"
licence = "CC-BY-4.0"
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
name = "water"
role = "water"
"#,
            broker.port(),
            d.join("ledger.sqlite").display(),
            d.join("tokens").display(),
        ),
    )
    .unwrap();
    let d_owned = d.to_path_buf();
    let collector = tokio::task::spawn_blocking(move || start_collector(&d_owned, http))
        .await
        .unwrap()
        .unwrap();
    let tok = Some(operator.as_str());

    // A host in the ledger: one minute of a RAPL reading.
    let now = vigie_service::now_ms();
    let minute = now / 60_000 * 60_000 - 120_000;
    let batch = TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "nord1".into(),
        host: HOST.into(),
        boot_id: "b".into(),
        epoch: 1,
        seq: 0,
        readings: vec![Reading {
            sensor: "rapl:package-0".into(),
            start_ms: minute,
            end_ms: minute + 60_000,
            energy_uj: 6_000_000_000,
            cumulative_uj: 6_000_000_000,
            power_w: None,
            quality: Quality::Measured,
        }],
        gauges: Vec::new(),
        workloads: Vec::new(),
    };
    let client = TestClient::connect(broker.port(), "public-host", None)
        .await
        .unwrap();
    client
        .publish(
            &format!("vigie/v1/nord1/{HOST}/telemetry"),
            serde_json::to_vec(&batch).unwrap(),
        )
        .await
        .unwrap();
    let operator2 = operator.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "the host in the ledger",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let r = http_get_with(http, "/api/v1/hosts", Some(&operator2)).ok()?;
                r.body.contains(HOST).then_some(())
            },
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));
    // The API still wants a token; the public page does not.
    assert_eq!(
        http_get_with(http, "/api/v1/hosts", None).unwrap().status,
        401
    );

    // Last year, read by hand each month: IT 100 MWh; grid 150 MWh, but
    // 130 MWh in February, whose IT reading is an estimate; 20 MWh of heat
    // delivered and 60 m3 of water each month.
    let year = vigie_collector::api::rfc3339(now)[..4]
        .parse::<i64>()
        .unwrap()
        - 1;
    let bound = |m: u32| {
        if m == 13 {
            format!("{}-01-01T00:00:00Z", year + 1)
        } else {
            format!("{year}-{m:02}-01T00:00:00Z")
        }
    };
    let post = |meter: &str, f: &dyn Fn(u32) -> String| {
        let body: Vec<String> = (1..=12).map(f).collect();
        let r = http_post_json(
            http,
            &format!("/api/v1/meters/{meter}/readings"),
            tok,
            &format!("[{}]", body.join(",")),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{meter}: {}", r.body);
    };
    post("grid", &|m| {
        let kwh = if m == 2 { 130_000 } else { 150_000 };
        format!(
            r#"{{"from":"{}","to":"{}","kwh":{kwh}}}"#,
            bound(m),
            bound(m + 1)
        )
    });
    post("it", &|m| {
        format!(
            r#"{{"from":"{}","to":"{}","kwh":100000,"estimated":{}}}"#,
            bound(m),
            bound(m + 1),
            m == 2
        )
    });
    post("heat-out", &|m| {
        format!(
            r#"{{"from":"{}","to":"{}","kwh":20000}}"#,
            bound(m),
            bound(m + 1)
        )
    });
    post("water", &|m| {
        format!(
            r#"{{"from":"{}","to":"{}","litres":60000}}"#,
            bound(m),
            bound(m + 1)
        )
    });

    // By hand: E_DC = 11 x 150 + 130 = 1780 MWh, E_IT = 1200 MWh.
    let pue = 1_780.0 / 1_200.0; // 1.4833, estimated (February)
    let erf = 240.0 / 1_780.0; // 13.48 %
    let wue = 720_000.0 / 1_200_000.0; // 0.6 L/kWh
    let location_t = 1_780_000.0 * 50.0 / 1e6; // 89 t

    let q = format!("?year={year}");
    let (page, json, csv, default) = tokio::task::spawn_blocking({
        let q = q.clone();
        move || {
            (
                get(http, &format!("/public{q}")),
                get(http, &format!("/public/data.json{q}")),
                get(http, &format!("/public/data.csv{q}")),
                get(http, "/public"),
            )
        }
    })
    .await
    .unwrap();
    for (r, ty) in [
        (&page, "text/html"),
        (&json, "application/json"),
        (&csv, "text/csv"),
        (&default, "text/html"),
    ] {
        assert_eq!(r.status, 200, "{}\n{}", r.body, collector.log_tail());
        assert!(r.header("content-type").unwrap().starts_with(ty));
        assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
        assert!(
            r.header("content-security-policy")
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(!r.body.contains(HOST), "the host's name leaks: {}", r.body);
        assert!(!r.body.contains("rapl"), "a sensor leaks");
    }
    assert_eq!(
        csv.header("content-disposition"),
        Some(format!("attachment; filename=\"public-{year}.csv\"").as_str())
    );
    // The current year to date links to last year.
    assert!(
        default
            .body
            .contains(&format!("href=\"/public?year={year}\""))
    );
    // Bad years are refused.
    let bad = get(http, "/public?year=abcd");
    assert_eq!(bad.status, 400);
    assert_eq!(get(http, &format!("/public?year={}", year + 2)).status, 400);

    // data.json: the figures computed by hand.
    let j: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(j["version"], 2);
    assert_eq!(j["licence"], "CC-BY-4.0");
    assert_eq!(j["site"]["name"], "Nord-1 data centre");
    assert_eq!(j["period"]["year"], year);
    let close = |v: &serde_json::Value, want: f64| {
        let got = v.as_f64().unwrap_or_else(|| panic!("no number: {v}"));
        assert!(
            (got - want).abs() < 1e-6 * want.abs().max(1.0),
            "{got} != {want}"
        );
    };
    let t = &j["total"];
    let months = j["months"].as_array().unwrap();
    assert_eq!(months.len(), 12);
    close(&t["facility_energy_kwh"]["value"], 1_780_000.0);
    close(&t["it_energy_kwh"]["value"], 1_200_000.0);
    // Each amount has its own status: the grid meter is read in full, the
    // IT meter's February is estimated.
    assert_eq!(t["facility_energy_kwh"]["status"], "measured");
    close(&t["facility_energy_kwh"]["coverage"], 1.0);
    assert_eq!(t["it_energy_kwh"]["status"], "estimated");
    assert_eq!(months[0]["it_energy_kwh"]["status"], "measured");
    close(&t["pue"]["value"], pue);
    assert_eq!(t["pue"]["status"], "estimated");
    close(&t["pue"]["coverage"], 1.0);
    close(&t["erf"]["value"], erf);
    close(&t["wue_l_per_kwh"]["value"], wue);
    close(&t["emissions_location_based_t_co2e"]["value"], location_t);
    // The configured yearly factor applied to every hour: an estimate.
    assert_eq!(t["emissions_location_based_t_co2e"]["status"], "estimated");
    close(&months[0]["pue"]["value"], 1.5);
    assert_eq!(months[0]["pue"]["status"], "measured");
    close(&months[1]["pue"]["value"], 1.3);
    assert_eq!(months[1]["pue"]["status"], "estimated");
    assert_eq!(j["methodology"]["it_measurement_category"], 2);
    assert_eq!(j["methodology"]["gap_rule"], "strict");
    // No cooling meter here: said, by role.
    assert!(
        j["coverage"]["roles_without_meter"]
            .as_array()
            .unwrap()
            .contains(&"cooling".into())
    );

    // data.csv: the header, one row per month and the total.
    let lines: Vec<&str> = csv.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("row,period,from,to,facility_energy_kwh,"));
    assert_eq!(lines.len(), 1 + 12 + 1, "{}", csv.body);
    for (i, l) in lines[1..13].iter().enumerate() {
        assert!(l.starts_with(&format!("month,{year}-{:02},", i + 1)), "{l}");
    }
    assert!(lines[13].starts_with(&format!("total,{year},")));
    let cols = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == cols));

    // Headless Chromium: the rendered page.
    let Some(chromium) = chromium() else {
        vigie_testkit::skip(
            "VIGIE_REQUIRE_CHROMIUM",
            "the browser part",
            "chromium not found ($VIGIE_CHROMIUM, PATH, /usr/bin)",
            "apt-get install chromium",
        );
        return;
    };
    let url = format!("http://{http}/public{q}");
    let dom_file = d.join("dom.html");
    let ok = Browser::run(
        &chromium,
        &d.join("profile-dom"),
        &["--dump-dom", &url],
        &dom_file,
    )
    .wait(Duration::from_secs(90));
    assert!(ok, "chromium --dump-dom failed or timed out");
    let dom = std::fs::read_to_string(&dom_file).unwrap();
    assert!(dom.contains("<html lang=\"en\">"), "{dom}");
    assert!(dom.contains("Nord-1 data centre"));
    assert!(!dom.contains(HOST));
    // The year's figures as computed by hand, flagged estimated.
    let row = figure_row(&dom, "pue");
    assert!(row.contains(&format!("{pue:.2}")), "{row}");
    assert!(row.contains("estimated"), "{row}");
    assert!(figure_row(&dom, "erf").contains(&format!("{:.1}&nbsp;%", erf * 100.0)));
    assert!(figure_row(&dom, "wue").contains(&format!("{wue:.2}&nbsp;L/kWh")));
    assert!(figure_row(&dom, "emissions-location").contains(&format!("{location_t:.2}")));
    let facility = figure_row(&dom, "facility-energy");
    assert!(facility.contains("1,780.00&nbsp;MWh"), "{facility}");
    assert!(facility.contains("<td>measured</td>"), "{facility}");
    let it = figure_row(&dom, "it-energy");
    assert!(
        it.contains("1,200.00&nbsp;MWh") && it.contains("flag est"),
        "{it}"
    );
    // Every month, February estimated, January measured.
    for (i, name) in MONTHS.iter().enumerate() {
        let r = month_row(&dom, &format!("{year}-{:02}", i + 1));
        assert!(r.contains(&format!("{name} {year}")), "{r}");
    }
    let feb = month_row(&dom, &format!("{year}-02"));
    assert!(feb.contains("1.30") && feb.contains("flag est"), "{feb}");
    let jan = month_row(&dom, &format!("{year}-01"));
    // January: energy and PUE measured, no badge; its emissions rest on
    // the configured yearly factor, so they are flagged estimated.
    assert!(
        jan.contains("<td>150.00</td><td>100.00</td><td>1.50</td>"),
        "{jan}"
    );
    assert_eq!(jan.matches("flag est").count(), 2, "{jan}");
    // The legend, three charts with titles, methodology, coverage, data.
    assert!(dom.contains("class=\"legend\""));
    assert_eq!(dom.matches("<svg").count(), 3);
    assert!(dom.contains(&format!("<title>PUE per month, {year}</title>")));
    for needle in [
        "ISO/IEC 30134-2",
        "GHG Protocol Scope 2",
        "Gap rule in force",
        "measurement category 2",
        "Data coverage",
        "/public/data.json",
        "/public/data.csv",
        "Last updated",
    ] {
        assert!(dom.contains(needle), "missing {needle:?}");
    }

    // A screenshot that is not blank: a PNG of the asked size, much larger
    // than the screenshot of an empty page (a blank one compresses to
    // almost nothing).
    let shot = |name: &str, target: &str| {
        let file = d.join(format!("{name}.png"));
        let ok = Browser::run(
            &chromium,
            &d.join(format!("profile-{name}")),
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=1280,2000",
                target,
            ],
            &d.join(format!("{name}.out")),
        )
        .wait(Duration::from_secs(90));
        assert!(ok, "chromium --screenshot failed or timed out");
        std::fs::read(&file).unwrap()
    };
    let blank = shot("blank", "about:blank");
    let page_png = shot("page", &url);
    assert_eq!(png_size(&page_png), (1280, 2000));
    assert!(
        page_png.len() > 4 * blank.len(),
        "the page's screenshot looks blank: {} bytes, an empty page {}",
        page_png.len(),
        blank.len()
    );
}
