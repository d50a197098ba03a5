//! SNMP driver for rack PDUs: SNMPv2c or SNMPv3 (USM, authentication
//! MD5/SHA-1/SHA-2, privacy DES/AES) over UDP, with the `async-snmp`
//! client (RustCrypto, no OpenSSL).
//!
//! What a PDU answers is data, not code: one map per family in
//! `snmp_maps/` (see [`map`]) lists the OIDs, what each measures, its scale,
//! counter width and point names. A poll reads the map's scalars in one
//! GET and walks its table columns with GETBULK, then [`map::Model::extract`]
//! turns the answers into raw [`PointValue`]s; wrap and reset handling is
//! the [`Tracker`](super::Tracker)'s.
//!
//! With `model = "auto"` the first poll reads `sysObjectID.0` and takes the
//! map with the longest matching prefix; for an unknown sysObjectID, the
//! one vendor map whose OIDs the device answers, else a standard map it
//! speaks (UPS-MIB, for any vendor's UPS); otherwise the error lists the
//! maps and says none fits.

pub mod map;

use super::{Device, DeviceError, PointValue, PollFuture};
use async_snmp::{
    Auth, Client, DesSaltState, ErrorKind, PersistedDesSaltState, Retry, UdpHandle, UsmConfig,
    Value as SnmpValue,
};
use map::{Model, Oid, Raw, ReadPlan, Snapshot};
use std::path::PathBuf;
use std::time::Duration;
use vigie_service::secrets::read_secret;

/// sysObjectID.0: which product the agent is.
const SYS_OBJECT_ID: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 2, 0];

/// One SNMP PDU (`kind = "snmp"`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// Host name or address of the PDU's management card.
    pub host: String,
    /// UDP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Protocol version: `"2c"` or `"3"`.
    #[serde(default)]
    pub version: SnmpVersion,
    /// SNMPv2c: file holding the (read-only) community on its first line.
    #[serde(default)]
    pub community_file: Option<PathBuf>,
    /// SNMPv3: USM user name.
    #[serde(default)]
    pub user: Option<String>,
    /// SNMPv3: authentication protocol; leave out for noAuthNoPriv.
    #[serde(default)]
    pub auth_protocol: Option<AuthProtocol>,
    /// SNMPv3: file holding the authentication passphrase (8 bytes or more).
    #[serde(default)]
    pub auth_passphrase_file: Option<PathBuf>,
    /// SNMPv3: privacy protocol; leave out for authNoPriv.
    #[serde(default)]
    pub priv_protocol: Option<PrivProtocol>,
    /// SNMPv3: file holding the privacy passphrase (8 bytes or more).
    #[serde(default)]
    pub priv_passphrase_file: Option<PathBuf>,
    /// SNMPv3 with `priv_protocol = "des"`: file where the agent keeps
    /// its DES salt epoch (one per device), advanced at each start so that
    /// a restart never reuses an initialisation vector under the same key.
    #[serde(default)]
    pub des_state_file: Option<PathBuf>,
    /// SNMPv3: context name, for agents that serve several (rare on PDUs).
    #[serde(default)]
    pub context: Option<String>,
    /// Map to use (`apc-rpdu2`, `apc-rpdu`, `raritan-pdu2`,
    /// `servertech-sentry4`, `eaton-epdu`, `tripplite-pdu`, `apc-ups`,
    /// `ups-mib`), or `auto` to choose by sysObjectID (and, for an unknown
    /// one, by what the device answers) at the first poll.
    #[serde(default = "default_model")]
    pub model: String,
    /// Time to wait for one answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Times a request is sent again after a timeout.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// SNMP protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum SnmpVersion {
    /// Community-based SNMPv2c.
    #[default]
    #[serde(rename = "2c")]
    V2c,
    /// User-based SNMPv3.
    #[serde(rename = "3")]
    V3,
}

/// SNMPv3 authentication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    /// HMAC-MD5-96.
    Md5,
    /// HMAC-SHA-96 (SHA-1).
    Sha,
    /// HMAC-SHA-224.
    Sha224,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-384.
    Sha384,
    /// HMAC-SHA-512.
    Sha512,
}

/// SNMPv3 privacy protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivProtocol {
    /// CBC-DES (legacy; only for agents that know nothing else).
    Des,
    /// CFB-AES-128 (RFC 3826).
    Aes,
    /// CFB-AES-192, Blumenthal key extension (Net-SNMP `AES-192`).
    Aes192,
    /// CFB-AES-256, Blumenthal key extension (Net-SNMP `AES-256`).
    Aes256,
    /// CFB-AES-192, Reeder key extension (Cisco `AES-192C`).
    Aes192c,
    /// CFB-AES-256, Reeder key extension (Cisco `AES-256C`).
    Aes256c,
}

fn default_port() -> u16 {
    161
}
fn default_model() -> String {
    "auto".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_retries() -> u32 {
    1
}

/// An SNMP PDU, ready to poll.
pub struct SnmpDevice {
    host: String,
    port: u16,
    auth: Auth,
    version: SnmpVersion,
    timeout: Duration,
    retry: Retry,
    /// DES only: where the salt epoch is kept, and the state once loaded.
    des_state_file: Option<PathBuf>,
    des: Option<DesSaltState>,
    /// Chosen map and its read plan; `None` until detected under `auto`.
    model: Option<(&'static Model, ReadPlan)>,
    client: Option<Client<UdpHandle>>,
    /// SNMPv2c: why the device is silent, found once per silent spell.
    silence: Option<String>,
}

impl std::fmt::Debug for SnmpDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpDevice")
            .field("target", &format_args!("{}:{}", self.host, self.port))
            .field("version", &self.version)
            .field("model", &self.model.as_ref().map(|(m, _)| &m.name))
            .finish_non_exhaustive()
    }
}

/// Builds the driver: checks the model name, reads the community or the
/// passphrases. Sends nothing.
pub fn build(cfg: &SnmpConfig) -> Result<SnmpDevice, DeviceError> {
    let model = match cfg.model.as_str() {
        "auto" => None,
        name => {
            let m = map::model(name).map_err(DeviceError::Config)?;
            Some((m, m.plan()))
        }
    };
    let secret = |what: &str, path: &Option<PathBuf>| -> Result<String, DeviceError> {
        let Some(path) = path else {
            return Err(DeviceError::Config(format!(
                "SNMP version {} needs {what}",
                version_label(cfg.version)
            )));
        };
        read_secret(path).map_err(|e| DeviceError::Config(format!("{what}: {e}")))
    };
    let v3_only = cfg.user.is_some()
        || cfg.auth_protocol.is_some()
        || cfg.auth_passphrase_file.is_some()
        || cfg.priv_protocol.is_some()
        || cfg.priv_passphrase_file.is_some()
        || cfg.des_state_file.is_some()
        || cfg.context.is_some();
    let auth = match cfg.version {
        SnmpVersion::V2c => {
            if v3_only {
                return Err(DeviceError::Config(
                    "user, auth_*, priv_* and context are for version \"3\"".into(),
                ));
            }
            Auth::v2c(secret("community_file", &cfg.community_file)?)
        }
        SnmpVersion::V3 => {
            if cfg.community_file.is_some() {
                return Err(DeviceError::Config(
                    "community_file is for version \"2c\"".into(),
                ));
            }
            let user = cfg
                .user
                .clone()
                .ok_or_else(|| DeviceError::Config("SNMP version 3 needs user".into()))?;
            let usm = UsmConfig::new(user);
            let usm = match (cfg.auth_protocol, cfg.priv_protocol) {
                (None, None) => {
                    if cfg.auth_passphrase_file.is_some()
                        || cfg.priv_passphrase_file.is_some()
                        || cfg.des_state_file.is_some()
                    {
                        return Err(DeviceError::Config(
                            "a passphrase file without its protocol".into(),
                        ));
                    }
                    usm
                }
                (None, Some(_)) => {
                    return Err(DeviceError::Config(
                        "priv_protocol needs auth_protocol (USM has no privacy without authentication)"
                            .into(),
                    ));
                }
                (Some(a), None) => {
                    if cfg.priv_passphrase_file.is_some() || cfg.des_state_file.is_some() {
                        return Err(DeviceError::Config(
                            "priv_passphrase_file or des_state_file without priv_protocol".into(),
                        ));
                    }
                    let pass = secret("auth_passphrase_file", &cfg.auth_passphrase_file)?;
                    usm.auth(auth_protocol(a), pass.as_bytes())
                        .map_err(|e| DeviceError::Config(format!("SNMPv3 authentication: {e}")))?
                }
                (Some(a), Some(p)) => {
                    if (p == PrivProtocol::Des) != cfg.des_state_file.is_some() {
                        return Err(DeviceError::Config(
                            "des_state_file goes with priv_protocol = \"des\", and only with it"
                                .into(),
                        ));
                    }
                    let apass = secret("auth_passphrase_file", &cfg.auth_passphrase_file)?;
                    let ppass = secret("priv_passphrase_file", &cfg.priv_passphrase_file)?;
                    usm.auth_priv(
                        auth_protocol(a),
                        apass.as_bytes(),
                        priv_protocol(p),
                        ppass.as_bytes(),
                    )
                    .map_err(|e| DeviceError::Config(format!("SNMPv3 privacy: {e}")))?
                }
            };
            let usm = match &cfg.context {
                Some(c) => usm.context_name(c.clone()),
                None => usm,
            };
            Auth::from(usm)
        }
    };
    if cfg.host.is_empty() {
        return Err(DeviceError::Config("host is empty".into()));
    }
    if cfg.timeout.is_zero() {
        return Err(DeviceError::Config("timeout must be positive".into()));
    }
    let retry = Retry::fixed(cfg.retries, Duration::ZERO)
        .map_err(|e| DeviceError::Config(format!("retries: {e}")))?;
    Ok(SnmpDevice {
        host: cfg.host.clone(),
        port: cfg.port,
        auth,
        version: cfg.version,
        timeout: cfg.timeout,
        retry,
        des_state_file: cfg.des_state_file.clone(),
        des: None,
        model,
        client: None,
        silence: None,
    })
}

fn version_label(v: SnmpVersion) -> &'static str {
    match v {
        SnmpVersion::V2c => "2c",
        SnmpVersion::V3 => "3",
    }
}

fn auth_protocol(a: AuthProtocol) -> async_snmp::AuthProtocol {
    use async_snmp::AuthProtocol as A;
    match a {
        AuthProtocol::Md5 => A::Md5,
        AuthProtocol::Sha => A::Sha1,
        AuthProtocol::Sha224 => A::Sha224,
        AuthProtocol::Sha256 => A::Sha256,
        AuthProtocol::Sha384 => A::Sha384,
        AuthProtocol::Sha512 => A::Sha512,
    }
}

fn priv_protocol(p: PrivProtocol) -> async_snmp::PrivProtocol {
    use async_snmp::PrivProtocol as P;
    match p {
        PrivProtocol::Des => P::Des,
        PrivProtocol::Aes => P::Aes128,
        PrivProtocol::Aes192 => P::Aes192Blumenthal,
        PrivProtocol::Aes256 => P::Aes256Blumenthal,
        PrivProtocol::Aes192c => P::Aes192Reeder,
        PrivProtocol::Aes256c => P::Aes256Reeder,
    }
}

/// Maps a client error to what the runner should do with it. A transport
/// that failed is dropped so the next poll starts a fresh one.
fn device_error(e: &async_snmp::Error, what: &str) -> DeviceError {
    let msg = format!("{what}: {e}");
    match e.kind() {
        ErrorKind::Timeout
        | ErrorKind::Network
        | ErrorKind::ConstructionTimeout
        | ErrorKind::Closed => DeviceError::Unreachable(msg),
        ErrorKind::Auth | ErrorKind::Report => DeviceError::Auth(msg),
        ErrorKind::Config | ErrorKind::InvalidOid => DeviceError::Config(msg),
        _ => DeviceError::Protocol(msg),
    }
}

/// The map's view of one SNMP value; exceptions and types a map never
/// reads (OIDs, addresses, opaque) are `None`.
fn raw(v: &SnmpValue) -> Option<Raw> {
    Some(match v {
        SnmpValue::Integer(n) => Raw::Num(i128::from(*n)),
        SnmpValue::Counter32(n)
        | SnmpValue::Gauge32(n)
        | SnmpValue::UInteger32(n)
        | SnmpValue::TimeTicks(n) => Raw::Num(i128::from(*n)),
        SnmpValue::Counter64(n) => Raw::Num(i128::from(*n)),
        SnmpValue::OctetString(b) => Raw::Text(String::from_utf8_lossy(b).into_owned()),
        _ => return None,
    })
}

impl SnmpDevice {
    /// The map in use, once known.
    pub fn model(&self) -> Option<&'static Model> {
        self.model.as_ref().map(|(m, _)| *m)
    }

    async fn client(&mut self) -> Result<Client<UdpHandle>, DeviceError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let mut builder = Client::builder((self.host.as_str(), self.port), self.auth.clone())
            .request_timeout(self.timeout)
            .construction_timeout(self.timeout)
            .retry(self.retry.clone());
        if let Some(path) = &self.des_state_file {
            if self.des.is_none() {
                self.des = Some(load_des_state(path)?);
            }
            if let Some(des) = &self.des {
                builder = builder.des_salt_state(des.clone());
            }
        }
        let client = builder
            .connect()
            .await
            .map_err(|e| device_error(&e, &format!("{}:{}", self.host, self.port)))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn poll_once(&mut self) -> Result<Vec<PointValue>, DeviceError> {
        let client = match self.client().await {
            Ok(client) => client,
            Err(e) => return Err(self.explain_silence(e).await),
        };
        let result = self.read(&client).await;
        match result {
            Err(DeviceError::Unreachable(_)) => {
                // A fresh socket (and, for v3, engine discovery) next time.
                self.client = None;
            }
            Ok(_) => self.silence = None,
            Err(_) => {}
        }
        match result {
            Err(e) => Err(self.explain_silence(e).await),
            ok => ok,
        }
    }

    /// SNMPv2c has no error for a wrong community: the agent just does not
    /// answer, as an unreachable device does. What can be told apart is
    /// whether an SNMP agent answers at that address at all: an SNMPv3
    /// engine discovery gets a Report from any v3-capable agent, whatever
    /// the community. Asked once per silent spell (it costs one timeout).
    async fn explain_silence(&mut self, e: DeviceError) -> DeviceError {
        let DeviceError::Unreachable(what) = e else {
            return e;
        };
        if self.version != SnmpVersion::V2c
            || !(what.contains("timeout after") || what.contains("timed out"))
        {
            return DeviceError::Unreachable(what);
        }
        if self.silence.is_none() {
            let target = format!("{}:{}", self.host, self.port);
            let why = if self.answers_v3().await {
                format!(
                    "no answer from {target} to SNMPv2c, though an SNMP agent there answers \
                     SNMPv3 discovery: the community in community_file is most likely wrong \
                     (SNMPv2c gives no error for a wrong community), or the agent does not \
                     allow v2c from this host"
                )
            } else {
                format!(
                    "no answer from {target}: device unreachable, SNMP off, or a wrong community \
                     (SNMPv2c gives no error for a wrong community; the agent did not answer an \
                     SNMPv3 discovery either)"
                )
            };
            self.silence = Some(why);
        }
        let why = self.silence.clone().unwrap_or_default();
        DeviceError::Unreachable(format!("{why} [{what}]"))
    }

    /// Whether anything at the target answers an SNMPv3 request (engine
    /// discovery, then a Report for our unknown user): one try, one timeout.
    async fn answers_v3(&self) -> bool {
        let Ok(retry) = Retry::fixed(0, Duration::ZERO) else {
            return false;
        };
        // At least 3 s: a slow agent's first v3 answer (key localisation)
        // must not pass for silence.
        let timeout = self.timeout.max(Duration::from_secs(3));
        let probe = async {
            let client = Client::builder((self.host.as_str(), self.port), Auth::usm("vigie-probe"))
                .request_timeout(timeout)
                .construction_timeout(timeout)
                .retry(retry)
                .connect()
                .await?;
            client
                .get(&async_snmp::Oid::from_slice(&SYS_OBJECT_ID))
                .await
                .map(|_| ())
        };
        // Bounded by the client's timeouts; the outer limit is a backstop.
        match tokio::time::timeout(timeout * 3, probe).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => !matches!(
                e.kind(),
                ErrorKind::Timeout
                    | ErrorKind::ConstructionTimeout
                    | ErrorKind::Network
                    | ErrorKind::Closed
            ),
            Err(_) => false,
        }
    }

    async fn read(&mut self, client: &Client<UdpHandle>) -> Result<Vec<PointValue>, DeviceError> {
        let (model, plan) = match &self.model {
            Some((m, p)) => (*m, p.clone()),
            None => {
                let m = detect(client).await?;
                tracing::info!(host = %self.host, model = %m.name, "SNMP map chosen");
                self.model = Some((m, m.plan()));
                (m, m.plan())
            }
        };
        let snap = read_plan(client, &plan).await?;
        let out = model.extract(&snap);
        for p in &out.problems {
            tracing::debug!(host = %self.host, model = %model.name, "{p}");
        }
        if out.answered == 0 {
            return Err(DeviceError::Protocol(format!(
                "the device answers none of map {:?}'s OIDs: set `model` to the right map",
                model.name
            )));
        }
        Ok(out.values)
    }
}

/// Loads the DES salt epoch and moves it on (or starts it at 1), writing
/// the new epoch before any packet is encrypted with it.
fn load_des_state(path: &std::path::Path) -> Result<DesSaltState, DeviceError> {
    let err = |e: &dyn std::fmt::Display| {
        DeviceError::Config(format!("des_state_file {}: {e}", path.display()))
    };
    let write = |next: &PersistedDesSaltState| -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", next.engine_boots()))?;
        std::fs::rename(&tmp, path)
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let boots: u32 = text.trim().parse().map_err(|e| err(&e))?;
            let previous = PersistedDesSaltState::new(boots).map_err(|e| err(&e))?;
            DesSaltState::restart(previous, write).map_err(|e| err(&e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DesSaltState::install(write).map_err(|e| err(&e))
        }
        Err(e) => Err(err(&e)),
    }
}

/// The map for the device: by sysObjectID (longest prefix); for an unknown
/// one, by what the device answers: the one vendor map whose OIDs it
/// answers, else a standard map it speaks (UPS-MIB). Otherwise the error
/// lists the maps that exist and says that none fits, or which ones do.
async fn detect(client: &Client<UdpHandle>) -> Result<&'static Model, DeviceError> {
    let oid = async_snmp::Oid::from_slice(&SYS_OBJECT_ID);
    let resp = client
        .get(&oid)
        .await
        .map_err(|e| device_error(&e, "sysObjectID.0"))?;
    let id: Oid = resp
        .varbinds
        .iter()
        .find(|vb| vb.oid == oid)
        .and_then(|vb| vb.value.as_oid())
        .map(|o| o.arcs().to_vec())
        .ok_or_else(|| DeviceError::Protocol("no sysObjectID.0 in the answer".into()))?;
    if let Some(m) = map::detect(&id).map_err(DeviceError::Config)? {
        return Ok(m);
    }
    let mut fits: Vec<&'static Model> = Vec::new();
    for m in map::models().map_err(DeviceError::Config)? {
        if answers(client, m).await? {
            fits.push(m);
        }
    }
    let vendor: Vec<&'static Model> = fits.iter().copied().filter(|m| !m.generic).collect();
    let id = map::oid_text(&id);
    match (vendor.as_slice(), fits.first()) {
        ([one], _) => {
            tracing::info!(sys_object_id = %id, model = %one.name, "SNMP map chosen by the device's answers (sysObjectID unknown)");
            Ok(one)
        }
        ([], Some(standard)) => {
            tracing::info!(sys_object_id = %id, model = %standard.name, "SNMP map chosen: the device speaks its standard MIB (sysObjectID unknown)");
            Ok(standard)
        }
        ([], None) => Err(DeviceError::Config(format!(
            "sysObjectID {id} matches no SNMP map, and the device answers none of their OIDs: \
             none of the maps fits. Maps: {}. A new model is a new map file \
             (agent/src/device/snmp_maps/)",
            map::catalogue()
        ))),
        (several, _) => Err(DeviceError::Config(format!(
            "sysObjectID {id} matches no SNMP map, and the device answers several: {}: \
             set `model` to the right one",
            several
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether the device answers `model`'s identifying OID. An SNMP error
/// status (v1 noSuchName) is a no; no answer at all is an error.
async fn answers(client: &Client<UdpHandle>, model: &Model) -> Result<bool, DeviceError> {
    let Some((oid, scalar)) = model.identify() else {
        return Ok(false);
    };
    let query = async_snmp::Oid::from_slice(&oid);
    let resp = if scalar {
        client.get(&query).await
    } else {
        client.get_next(&query).await
    };
    let resp = match resp {
        Ok(resp) => resp,
        Err(e) if matches!(e.kind(), ErrorKind::Snmp) => return Ok(false),
        Err(e) => return Err(device_error(&e, &format!("{} OIDs", model.name))),
    };
    Ok(resp.varbinds.iter().any(|vb| {
        let inside = if scalar {
            vb.oid == query
        } else {
            vb.oid.arcs().starts_with(&oid)
        };
        inside && raw(&vb.value).is_some()
    }))
}

/// Reads a plan: every GET OID in as few requests as the agent allows,
/// then each column with GETBULK. Bounded by the client's request timeout
/// and retries.
async fn read_plan(client: &Client<UdpHandle>, plan: &ReadPlan) -> Result<Snapshot, DeviceError> {
    let mut snap = Snapshot::new();
    if !plan.get.is_empty() {
        let oids: Vec<async_snmp::Oid> = plan
            .get
            .iter()
            .map(|o| async_snmp::Oid::from_slice(o))
            .collect();
        let resp = client
            .get_many(&oids)
            .await
            .map_err(|e| device_error(&e, "GET"))?;
        for vb in &resp.varbinds {
            if let Some(r) = raw(&vb.value) {
                snap.insert(vb.oid.arcs().to_vec(), r);
            }
        }
    }
    for column in &plan.walk {
        let base = async_snmp::Oid::from_slice(column);
        let rows = client
            .walk(base)
            .map_err(|e| device_error(&e, "walk"))?
            .collect()
            .await
            .map_err(|e| device_error(&e, &format!("walk {}", map::oid_text(column))))?;
        for vb in rows {
            if let Some(r) = raw(&vb.value) {
                snap.insert(vb.oid.arcs().to_vec(), r);
            }
        }
    }
    Ok(snap)
}

impl Device for SnmpDevice {
    fn kind(&self) -> &'static str {
        "snmp"
    }

    fn source(&self) -> String {
        let model = self.model().map_or("auto", |m| m.name.as_str());
        format!(
            "snmp://{}:{} (v{}, {model})",
            self.host,
            self.port,
            version_label(self.version)
        )
    }

    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_once())
    }

    /// The map's own places where it has them (a UPS's input, output and
    /// losses), else the PDU naming rules.
    fn places(&self, points: &[&str]) -> Vec<super::scope::Place> {
        self.model()
            .and_then(|m| m.places(points))
            .unwrap_or_else(|| super::scope::by_name(points))
    }
}

#[cfg(test)]
mod tests;
