//! `vigie-collector export` and `vigie-collector verify`.

use anyhow::Context;
use std::path::PathBuf;

/// `export`: a regulator's data set for a period, or `export keygen`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportArgs {
    /// `keygen --out DIR`: create a signing key pair.
    #[command(subcommand)]
    pub sub: Option<ExportSub>,
    /// eed, enefg or fr.
    #[arg(long)]
    pub regime: Option<String>,
    /// json or csv.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Period start: YYYY-MM-DD (UTC), RFC 3339 or Unix ms; default 1 January of last year.
    #[arg(long)]
    pub from: Option<String>,
    /// Period end, exclusive; default 1 January of this year.
    #[arg(long)]
    pub to: Option<String>,
    /// Commissioning date of the site, YYYY-MM-DD (EnEfG PUE and ERF targets).
    #[arg(long)]
    pub commissioned: Option<String>,
    /// Configuration file (meters, ledger, carbon).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Output file; FILE.sha256 (and FILE.sig with --key) go next to it. Default: stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Private signing key, PKCS#8 PEM (from `export keygen` or `openssl genpkey -algorithm ed25519`);
    /// default with --out: the configuration's `[export] signing_key`.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// Subcommands of `export`.
#[derive(Debug, clap::Subcommand)]
pub enum ExportSub {
    /// Create export-signing.key (0600) and export-signing.pub in DIR.
    Keygen {
        /// Directory for the key pair.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `verify`: check an export against FILE.sha256 and FILE.sig.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Public key, PKCS#8 SubjectPublicKeyInfo PEM.
    #[arg(long)]
    pub public_key: PathBuf,
    /// The export.
    pub file: PathBuf,
}

/// Runs `export`.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    if let Some(ExportSub::Keygen { out }) = a.sub {
        let (k, p) = super::sign::keygen(&out)?;
        eprintln!("private key (0600, keep it secret): {}", k.display());
        eprintln!("public key (give it to whoever verifies): {}", p.display());
        return Ok(());
    }
    let regime = a
        .regime
        .context("--regime eed|enefg|fr is required (or `export keygen --out DIR`)")?;
    let format = super::Format::parse(&a.format).context("--format must be json or csv")?;
    anyhow::ensure!(
        a.key.is_none() || a.out.is_some(),
        "--key needs --out: the signature goes next to the export file"
    );
    let req = super::http::request(
        &regime,
        a.from.as_deref(),
        a.to.as_deref(),
        a.commissioned.as_deref(),
        crate::now_ms(),
    )
    .map_err(anyhow::Error::msg)?;
    let cfg: crate::config::CollectorConfig = vigie_service::load_config(a.config.as_deref())?;
    // Load the key first: a bad key should not cost a long export.
    let key = signing_key(a.key.as_deref(), &cfg, a.out.is_some())?;
    // The inventory's grams must come from factors of one basis, as `run`
    // requires.
    crate::carbon::check_basis(&cfg.carbon)?;
    let step = |s: &str| eprintln!("export {regime}: {s}");
    step(&format!(
        "period {} to {}, ledger {}",
        super::date::rfc3339(req.from_ms),
        super::date::rfc3339(req.to_ms),
        cfg.store.path.display()
    ));
    let conn = open_ledger(&cfg)?;
    let mut progress = |s: &str| step(s);
    let export = super::build(&*conn, &cfg.site, &cfg.carbon, &req, &mut progress)?;
    let bytes = export.render(format);
    match &a.out {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        Some(out) => write_signed(out, &bytes, key.as_ref(), &step)?,
    }
    step("done");
    Ok(())
}

/// Opens the configured ledger for a report: an existing one only
/// (opening would create an empty ledger and report zeros), with the site
/// and grid tables a ledger filled only by hand readings may lack (both
/// created by [`crate::backend::open`]).
pub fn open_ledger(
    cfg: &crate::config::CollectorConfig,
) -> anyhow::Result<crate::backend::Backend> {
    let path = &cfg.store.path;
    anyhow::ensure!(
        path.exists(),
        "no ledger at {}: give the collector's configuration with --config",
        path.display()
    );
    crate::backend::open(path).with_context(|| format!("opening {}", path.display()))
}

/// Writes `bytes` to `out` with `out.sha256` and, with a key, `out.sig`,
/// telling `step` what it does.
pub fn write_signed(
    out: &std::path::Path,
    bytes: &[u8],
    key: Option<&ed25519_dalek::SigningKey>,
    step: &dyn Fn(&str),
) -> anyhow::Result<()> {
    step(&format!(
        "writing {} ({} bytes)",
        out.display(),
        bytes.len()
    ));
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    if key.is_some() {
        step("signing");
    }
    let digest = super::sign::write_sidecars(out, bytes, key)?;
    step(&format!("sha-256 {digest}"));
    Ok(())
}

/// The key that signs a file written with `--out`: `--key`, else the
/// configuration's `[export] signing_key` (none: unsigned). A key that
/// cannot be used is an error naming the flag or setting that gave it,
/// with its cause once.
pub fn signing_key(
    flag: Option<&std::path::Path>,
    cfg: &crate::config::CollectorConfig,
    out: bool,
) -> anyhow::Result<Option<ed25519_dalek::SigningKey>> {
    let (setting, path) = match (flag, &cfg.export.signing_key) {
        (Some(k), _) => ("--key", k),
        (None, Some(k)) if out => ("[export] signing_key", k.as_path()),
        (None, _) => return Ok(None),
    };
    // The message carries the cause; no source chain to print it again.
    load_key(path)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{setting} {e}"))
}

/// Loads a signing key, warning when others may read it.
pub fn load_key(k: &std::path::Path) -> Result<ed25519_dalek::SigningKey, super::sign::SignError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(k)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by group or others; chmod 600 it",
            k.display()
        );
    }
    super::sign::load_signing_key(k)
}

/// Runs `verify`: an error (non-zero exit) on any mismatch.
pub fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let public = super::sign::load_verifying_key(&a.public_key)?;
    let digest = super::sign::verify(&a.file, &public)?;
    eprintln!(
        "{}: OK (sha-256 {digest}, signature valid for {})",
        a.file.display(),
        a.public_key.display()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// How many times the OS's "not found" cause appears in `msg`.
    fn causes(msg: &str) -> usize {
        msg.matches("os error 2").count()
    }

    #[test]
    fn a_missing_key_file_names_its_setting_and_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.key");
        let mut cfg = crate::config::CollectorConfig::default();
        cfg.export.signing_key = Some(missing.clone());

        let e = format!("{:#}", signing_key(None, &cfg, true).unwrap_err());
        assert!(e.starts_with("[export] signing_key "), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert_eq!(causes(&e), 1, "{e}");

        let flag = dir.path().join("flag.key");
        let e = format!("{:#}", signing_key(Some(&flag), &cfg, true).unwrap_err());
        assert!(e.starts_with("--key "), "{e}");
        assert!(e.contains(&flag.display().to_string()), "{e}");
        assert_eq!(causes(&e), 1, "{e}");

        // Without --out nothing is signed: the configured key is not read.
        assert!(signing_key(None, &cfg, false).unwrap().is_none());

        // The collector daemon's message: the setting, the file, the cause once.
        let e = crate::CollectorError::SigningKey(
            super::super::sign::load_signing_key(&missing).unwrap_err(),
        );
        let e = format!("{:#}", anyhow::Error::from(e));
        assert!(e.starts_with("[export] signing_key "), "{e}");
        assert_eq!(causes(&e), 1, "{e}");
    }
}
