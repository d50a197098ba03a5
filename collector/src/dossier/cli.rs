//! `vigie-collector dossier`.

use anyhow::Context;
use std::path::PathBuf;

/// `dossier`: the permit dossier for a period, HTML or PDF.
#[derive(Debug, clap::Args)]
pub struct DossierArgs {
    /// Configuration file (meters, ledger, carbon, `[dossier]`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Period start: YYYY-MM-DD (UTC), RFC 3339 or Unix ms; default 1 January of last year.
    #[arg(long)]
    pub from: Option<String>,
    /// Period end, exclusive; default 1 January of this year.
    #[arg(long)]
    pub to: Option<String>,
    /// html or pdf.
    #[arg(long, default_value = "pdf")]
    pub format: String,
    /// Output file; FILE.sha256 (and FILE.sig with --key) go next to it.
    #[arg(long)]
    pub out: PathBuf,
    /// Private signing key, PKCS#8 PEM (from `export keygen`); default:
    /// the configuration's `[export] signing_key`.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// Runs `dossier`.
pub fn dossier(a: DossierArgs) -> anyhow::Result<()> {
    let format = super::Format::parse(&a.format).context("--format must be html or pdf")?;
    let now = crate::now_ms();
    let req =
        super::request(a.from.as_deref(), a.to.as_deref(), now).map_err(anyhow::Error::msg)?;
    let cfg: crate::config::CollectorConfig = vigie_service::load_config(a.config.as_deref())?;
    // Load the key first: a bad key should not cost a long report.
    let key = crate::export::cli::signing_key(a.key.as_deref(), &cfg, true)?;
    // The inventory's grams must come from factors of one basis, as `run`
    // requires.
    crate::carbon::check_basis(&cfg.carbon)?;
    let step = |s: &str| eprintln!("dossier: {s}");
    step(&format!(
        "period {} to {}, ledger {}",
        crate::export::date::rfc3339(req.from_ms),
        crate::export::date::rfc3339(req.to_ms),
        cfg.store.path.display()
    ));
    let conn = crate::export::cli::open_ledger(&cfg)?;
    let mut progress = |s: &str| step(s);
    let bytes = super::build(
        &*conn,
        &super::Settings::from_config(&cfg),
        req,
        format,
        now,
        &mut progress,
    )?;
    crate::export::cli::write_signed(&a.out, &bytes, key.as_ref(), &step)?;
    step("done");
    Ok(())
}
