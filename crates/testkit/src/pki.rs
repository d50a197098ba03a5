//! A throwaway certificate authority for TLS tests: a CA, a broker
//! certificate for 127.0.0.1 and localhost, and client certificates whose
//! common name is the MQTT identity (Mosquitto `use_identity_as_username`).

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Files of one certificate: PEM certificate and PEM private key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Certificate.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// A CA that writes its certificates into a directory.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (what clients and the broker trust).
    pub ca_file: PathBuf,
}

impl Pki {
    /// Creates a CA in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "vigie test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).context("writing the CA")?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca,
            ca_file,
        })
    }

    fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        // As an operator would keep it (the daemons warn otherwise).
        std::fs::set_permissions(
            &files.key,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        Ok(files)
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> anyhow::Result<CertFiles> {
        self.issue(
            "server",
            "localhost",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> anyhow::Result<CertFiles> {
        self.issue(
            &format!("client-{cn}"),
            cn,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}
