//! Profile wiring: turns a `[[profile]]` entry into a running [`Profile`]:
//! the one place where configuration becomes a [`ProfileConfig`] and an
//! engine, with its issuer (the local CA, a remote `[[issuer]]`, or none), RA
//! identity, CA chain, mTLS policy and Intune setup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use scep_engine::config::{ConfigError, ProfileConfig, RaIdentity};
use scep_engine::crypto::provider::PrivateKey;
use scep_engine::crypto::{RaKey, RsaPrivateKey, SystemRandom};
use scep_engine::intune::{IntuneValidator, ReplayCache};
use scep_engine::issue::IssuancePolicy;
use scep_engine::x509::{CertificateRef, SubjectPublicKeyInfoRef, name_to_string};
use scep_engine::{Engine, UnixTime, pem};
use scep_issuers::Issuer;

use crate::intune;
use crate::settings::pkcs11::Pkcs11Settings;
use crate::settings::profile::{IssuerRef, ProfileSection, ProfileSettings};
use crate::state::Profile;
use crate::state::discovery::DiscoveryAnswers;
use crate::tls::client_auth::MtlsPolicy;
use crate::wiring::bootstrap::{self, LocalCa};
use crate::wiring::check::DryRun;
use crate::wiring::files::{read_private_key, read_text};
use crate::wiring::issuers::IssuerMap;
use crate::wiring::refuse::RefusingIssuer;

/// Shared inputs while building the profiles of one configuration.
pub struct BuildContext<'a> {
    /// Directory of the configuration file (relative paths resolve against it).
    pub base: Option<&'a Path>,
    /// The data directory (local CA).
    pub data_dir: &'a Path,
    /// The current time (RA certificate expiry).
    pub now: UnixTime,
    /// The local CA, opened on first use and shared by every profile.
    local: Option<LocalCa>,
    /// The `[[issuer]]` entries, by id.
    issuers: IssuerMap,
    /// Intune validators of the configuration being replaced, by profile name
    /// (their replay caches, rate limiters and counters carry over).
    previous_intune: HashMap<String, IntuneValidator>,
    /// The replay cache every Intune profile shares ([`intune::shared_replay_cache`]).
    replay: Option<Arc<ReplayCache>>,
    /// `check-config`: nothing is written to the data directory ([`DryRun`]).
    dry_run: Option<&'a mut DryRun>,
    /// `[server] public_url`, written into the local CA's certificates.
    public_url: Option<String>,
    /// On reload: the local CA already serving, kept rather than opened again
    /// ([`bootstrap::open_or_keep_local_ca`]).
    running_local: Option<scep_issuers::LocalCa>,
    /// `[pkcs11]`: how keys named by `pkcs11:` URIs are opened.
    pkcs11: Pkcs11Settings,
    /// The node's PostgreSQL pool: the local CA's certificate index lives in
    /// the shared store (`None`: SQLite in the data directory).
    shared_index: Option<Arc<scep_store::postgres::Pool>>,
}

impl<'a> BuildContext<'a> {
    /// A context for one configuration load.
    pub fn new(base: Option<&'a Path>, data_dir: &'a Path, now: UnixTime) -> Self {
        Self {
            base,
            data_dir,
            now,
            local: None,
            issuers: IssuerMap::new(),
            previous_intune: HashMap::new(),
            replay: None,
            dry_run: None,
            public_url: None,
            running_local: None,
            pkcs11: Pkcs11Settings::default(),
            shared_index: None,
        }
    }

    /// `[pkcs11]`: the module, PIN and pool size for RA keys given as
    /// `pkcs11:` URIs.
    #[must_use]
    pub fn with_pkcs11(mut self, pkcs11: Pkcs11Settings) -> Self {
        self.pkcs11 = pkcs11;
        self
    }

    /// A reload: the local CA already serving is kept, not opened a second
    /// time ([`bootstrap::open_or_keep_local_ca`]).
    #[must_use]
    pub fn with_running_local_ca(mut self, running: Option<scep_issuers::LocalCa>) -> Self {
        self.running_local = running;
        self
    }

    /// The node's PostgreSQL pool (`[store] url`): local CAs opened by this
    /// context keep their certificate index in the shared store.
    #[must_use]
    pub fn with_shared_index(mut self, pool: Option<Arc<scep_store::postgres::Pool>>) -> Self {
        self.shared_index = pool;
        self
    }

    /// For `check-config`: the local CA is checked without writing to the
    /// data directory; what `serve` would create is recorded in `dry_run`.
    #[must_use]
    pub fn with_dry_run(mut self, dry_run: &'a mut DryRun) -> Self {
        self.dry_run = Some(dry_run);
        self
    }

    /// The local CA opened by this context names its CRL and OCSP URLs under
    /// `public_url` in what it issues (`[server] public_url`).
    #[must_use]
    pub fn with_public_url(mut self, public_url: Option<String>) -> Self {
        self.public_url = public_url;
        self
    }

    /// Makes the `[[issuer]]` entries available to profiles by id.
    #[must_use]
    pub fn with_issuers(mut self, issuers: IssuerMap) -> Self {
        self.issuers = issuers;
        self
    }

    /// Carries Intune state from the configuration being replaced (see
    /// [`intune::build`]).
    #[must_use]
    pub fn with_previous_intune(mut self, previous: HashMap<String, IntuneValidator>) -> Self {
        self.previous_intune = previous;
        self
    }

    /// The local CA, when a profile of this load opened it.
    pub fn opened_local_ca(&self) -> Option<Arc<scep_issuers::LocalCa>> {
        self.local.as_ref().map(|l| l.ca.clone())
    }

    /// The replay cache shared by every Intune profile built with this
    /// context (see [`intune::shared_replay_cache`]). Without one, each
    /// Intune profile gets a cache of its own.
    #[must_use]
    pub fn with_replay_cache(mut self, replay: Option<Arc<ReplayCache>>) -> Self {
        self.replay = replay;
        self
    }

    fn local_ca(&mut self) -> Result<&LocalCa, ConfigError> {
        if self.local.is_none() {
            // `[pkcs11] ca_key`: the CA key in a token (kept when reloading a running CA).
            let token_key: Option<Arc<dyn PrivateKey>> = match (&self.pkcs11.ca_key, &self.running_local) {
                (Some(uri), None) => Some(Arc::new(open_pkcs11_key(uri, &self.pkcs11, "pkcs11.ca_key")?)),
                _ => None,
            };
            // The configured local CAs' certificates share a PostgreSQL index
            // with the built-in CA's; they do not stop its first bootstrap.
            let mut other_cas: Vec<String> =
                self.issuers.values().filter_map(|i| i.inventory().map(|ca| ca.ca_id().to_string())).collect();
            other_cas.sort();
            self.local = Some(match self.dry_run.as_deref_mut() {
                Some(dry_run) => dry_run.open_local_ca(
                    self.data_dir,
                    self.now,
                    self.public_url.as_deref(),
                    token_key,
                    bootstrap::index_location(
                        self.shared_index.clone(),
                        other_cas,
                        self.data_dir.join(scep_issuers::local::store::DB_FILE),
                    ),
                )?,
                None => bootstrap::open_or_keep_local_ca(
                    self.data_dir,
                    self.now,
                    self.public_url.as_deref(),
                    self.running_local.as_ref(),
                    token_key,
                    self.shared_index.clone(),
                    other_cas,
                )?,
            });
        }
        self.local.as_ref().ok_or_else(|| ConfigError("local CA unavailable".into()))
    }
}

impl ProfileSection {
    /// Converts this entry into a [`Profile`]: validates it
    /// ([`ProfileSection::validate`]) and builds it ([`build`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `profile[<name>].<key>` and the reason.
    pub fn build(&self, index: usize, ctx: &mut BuildContext<'_>) -> Result<Profile, ConfigError> {
        build(&self.validate(index, ctx.base)?, ctx)
    }
}

/// Builds a running [`Profile`] from its settings: reads the mTLS bundle,
/// picks the issuer (opening the local CA on first use), reads the RA and
/// chain files, builds the Intune setup and the engine.
///
/// # Errors
/// A [`ConfigError`] naming `profile[<name>].<key>` and the reason.
pub fn build(settings: &ProfileSettings, ctx: &mut BuildContext<'_>) -> Result<Profile, ConfigError> {
    let name = settings.name.clone();
    let k = |key: &str| format!("profile[{name}].{key}");
    let err = |key: &str, why: String| ConfigError(format!("{}: {why}", k(key)));

    let mtls = match &settings.mtls {
        Some(m) => Some(Arc::new(MtlsPolicy::load(m, ctx.now)?)),
        None => None,
    };

    // Issuer first: with issuer = "local" the RA and chain default to the local CA's.
    let (issuer, default_ra, default_chain): IssuerChoice = match &settings.issuer {
        IssuerRef::Local => {
            let ca = ctx.local_ca()?;
            let chain = ca.issuer.ca_chain();
            let ra = match (&ca.ndes, settings.bootstrap) {
                (Some(pair), true) => DefaultRa::NdesPair(pair.clone()),
                _ => DefaultRa::Single(ca.ra_cert_path.clone(), ca.ra_key_path.clone()),
            };
            (ca.issuer.clone(), Some(ra), chain)
        }
        IssuerRef::None => (Arc::new(RefusingIssuer::new(format!("none-{name}"))), None, Vec::new()),
        IssuerRef::Named(id) => match ctx.issuers.get(id) {
            Some(issuer) => (issuer.clone(), None, issuer.ca_chain()),
            None => {
                let mut known: Vec<&str> = ctx.issuers.keys().map(String::as_str).collect();
                known.sort_unstable();
                known.splice(0..0, ["local", "none"]);
                return Err(err(
                    "issuer",
                    format!("{id:?} is not one of {known:?} (define it in an [[issuer]] table)"),
                ));
            }
        },
    };

    // The RA arrangement: the profile's own files, else the issuer's default
    // (the local CA's single RA, or its NDES pair for the bootstrap profile).
    let ra_passphrase_setting = k("ra_key_passphrase_file");
    let ra_passphrase = settings.ra_key_passphrase_file.as_deref().map(|f| (f, ra_passphrase_setting.as_str()));
    let (ra, encryption_ras) = match (&settings.ra_files, default_ra) {
        (Some((cert, key)), _) => (
            load_ra(
                cert,
                key,
                ctx.now,
                &k("ra_cert"),
                &k("ra_key"),
                RaRole::Signing,
                KeyAccess { passphrase: ra_passphrase, pkcs11: &ctx.pkcs11 },
            )?,
            Vec::new(),
        ),
        (None, Some(DefaultRa::Single(cert, key))) => (
            load_ra(
                &cert,
                &key,
                ctx.now,
                &k("ra_cert"),
                &k("ra_key"),
                RaRole::Signing,
                KeyAccess { passphrase: None, pkcs11: &ctx.pkcs11 },
            )?,
            Vec::new(),
        ),
        (None, Some(DefaultRa::NdesPair(pair))) if settings.ra_encryption_files.is_none() => {
            let signing = load_ra(
                &pair.signing_cert,
                &pair.signing_key,
                ctx.now,
                &k("ra_cert"),
                &k("ra_key"),
                RaRole::Signing,
                KeyAccess { passphrase: None, pkcs11: &ctx.pkcs11 },
            )?;
            let encryption = load_ra(
                &pair.encryption_cert,
                &pair.encryption_key,
                ctx.now,
                &k("ra_encryption_cert"),
                &k("ra_encryption_key"),
                RaRole::Encryption,
                KeyAccess { passphrase: None, pkcs11: &ctx.pkcs11 },
            )?;
            (signing, vec![encryption])
        }
        (None, Some(DefaultRa::NdesPair(_))) => {
            return Err(err("ra_cert", "required when ra_encryption_cert is set (the signing RA)".into()));
        }
        (None, None) => return Err(err("ra_cert", "required unless issuer = \"local\"".into())),
    };
    let encryption_ras = match &settings.ra_encryption_files {
        Some((cert, key)) => {
            let setting = k("ra_encryption_key_passphrase_file");
            let passphrase = settings.ra_encryption_key_passphrase_file.as_deref().map(|f| (f, setting.as_str()));
            vec![load_ra(
                cert,
                key,
                ctx.now,
                &k("ra_encryption_cert"),
                &k("ra_encryption_key"),
                RaRole::Encryption,
                KeyAccess { passphrase, pkcs11: &ctx.pkcs11 },
            )?]
        }
        None => encryption_ras,
    };
    // RFC 8894 §3.2.2: an ECDSA signing RA cannot receive CMS key transport,
    // so requests need an RSA encryption RA to be encrypted to.
    if ra.key.as_rsa().is_none() && encryption_ras.is_empty() {
        return Err(err(
            "ra_key",
            format!(
                "is an {} key, which cannot decrypt requests (CMS key transport needs RSA, RFC 8894 §3.2.2): \
                 an ECDSA signing RA needs an RSA encryption RA beside it (ra_encryption_cert and ra_encryption_key)",
                ra.key.kind()
            ),
        ));
    }

    let ca_chain = match &settings.ca_chain {
        Some(path) => {
            let text = read_text(path, &k("ca_chain"))?;
            let chain = pem::certificates(&text).map_err(|e| err("ca_chain", format!("{}: {e}", path.display())))?;
            for (i, der) in chain.iter().enumerate() {
                CertificateRef::parse(der).map_err(|e| {
                    err("ca_chain", format!("{}: certificate #{} is not X.509: {e}", path.display(), i + 1))
                })?;
            }
            if chain.is_empty() {
                return Err(err("ca_chain", format!("{}: no CERTIFICATE block", path.display())));
            }
            // The local CA signs as its certificate: a chain that starts with
            // another CA would be published by GetCACert, and every renewal
            // by certificate would be judged against it (and refused). (A
            // Vault role may sign with another issuer of its mount than the
            // default one whose chain Vault reports, so there the configured
            // chain is how the operator names it; Vault refuses renewals by
            // certificate anyway.)
            if let Some(issuing) = default_chain.first().filter(|_| issuer.inventory().is_some())
                && chain.first() != Some(issuing)
            {
                let name =
                    |der: &[u8]| CertificateRef::parse(der).map_or_else(|_| "?".into(), |c| name_to_string(c.subject));
                return Err(err(
                    "ca_chain",
                    format!(
                        "{}: starts with {:?}, but the profile's issuer signs as {:?}: the first certificate must be \
                         the issuing CA's",
                        path.display(),
                        name(&chain[0]),
                        name(issuing)
                    ),
                ));
            }
            let first = CertificateRef::parse(&chain[0]).map_err(|e| err("ca_chain", e.to_string()))?;
            if !first.is_valid_at(ctx.now) {
                return Err(err(
                    "ca_chain",
                    format!(
                        "{}: the issuing CA certificate {:?} is not valid now",
                        path.display(),
                        name_to_string(first.subject)
                    ),
                ));
            }
            chain
        }
        None if default_chain.is_empty() => {
            return Err(err("ca_chain", "required: the issuer provides no CA chain".into()));
        }
        None => default_chain,
    };

    let intune = match &settings.intune {
        Some(i) => Some(intune::build(&name, i, ctx.now, ctx.previous_intune.get(&name), ctx.replay.as_ref())?),
        None => None,
    };

    let config = ProfileConfig {
        name: name.clone(),
        ra,
        ca_chain,
        ca_cert_shape: settings.ca_cert_shape,
        challenge: settings.challenge.clone(),
        algorithms: settings.algorithms.clone(),
        keys: settings.keys.clone(),
        renewal: settings.renewal.clone(),
        issuance: IssuancePolicy {
            validity_secs: settings.validity_days * 86_400,
            ekus: settings.issued_ekus.clone(),
            trust_requested_sid: settings.trust_requested_sid,
            ..Default::default()
        },
        allowed_ekus: settings.ekus.clone(),
        sans: settings.sans.clone(),
        signing_time_tolerance: settings.signing_time_tolerance,
        max_message_size: settings.max_message_size,
        rng: Arc::new(SystemRandom),
        crypto: scep_engine::crypto::default_provider().clone(),
        intune: intune.as_ref().map(|i| i.validator.clone()),
    };
    let engine = Engine::with_encryption_ras(config, encryption_ras)
        .map_err(|e| ConfigError(format!("profile[{name}]: {e}")))?
        .with_reply_signature(settings.reply_signature);
    let discovery = DiscoveryAnswers::new(&engine, ctx.now)?;
    let intune_api = match &settings.intune_api {
        Some(api) => Some(intune::api::load(&name, api, Arc::clone(&issuer))?),
        None => None,
    };
    let intune_compliance = match &settings.intune_compliance {
        Some(c) => {
            let counters = intune.as_ref().map(|i| Arc::clone(i.validator.counters()));
            Some(Arc::new(intune::compliance::load(&name, c, intune_api.as_ref(), counters)?))
        }
        None => None,
    };
    Ok(Profile {
        engine,
        issuer,
        mtls,
        intune,
        intune_api,
        intune_compliance,
        discovery,
        url_aliases: settings.url_aliases.clone(),
    })
}

/// The RA files an issuer provides when a profile names none.
enum DefaultRa {
    /// One RA certificate that signs CertReps and receives envelopes (cert, key).
    Single(PathBuf, PathBuf),
    /// The local CA's NDES pair (signing RA, encryption RA): the bootstrap profile's.
    NdesPair(scep_issuers::NdesRaFiles),
}

/// The issuer, its default RA files and its CA chain.
type IssuerChoice = (Arc<dyn Issuer>, Option<DefaultRa>, Vec<Vec<u8>>);

/// What an RA certificate does, and so which keys it may have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RaRole {
    /// Signs CertReps (and decrypts when its key is RSA): RSA or ECDSA P-256/P-384.
    Signing,
    /// Receives CMS key transport (RFC 8894 §3.2.2): RSA only.
    Encryption,
}

/// How an RA key is unlocked: the passphrase file of an encrypted key file
/// (with its setting's name), and `[pkcs11]` for a `pkcs11:` URI.
#[derive(Clone, Copy)]
struct KeyAccess<'a> {
    passphrase: Option<(&'a Path, &'a str)>,
    pkcs11: &'a Pkcs11Settings,
}

/// Loads and checks an RA identity (RFC 8894 §2.1): a key matching an
/// unexpired certificate, RSA or (signing RA only) ECDSA.
fn load_ra(
    cert_path: &Path,
    key_path: &Path,
    now: UnixTime,
    cert_key: &str,
    key_key: &str,
    role: RaRole,
    access: KeyAccess<'_>,
) -> Result<RaIdentity, ConfigError> {
    let KeyAccess { passphrase, pkcs11 } = access;
    let text = read_text(cert_path, cert_key)?;
    let certificate = pem::certificates(&text)
        .map_err(|e| ConfigError(format!("{cert_key}: {}: {e}", cert_path.display())))?
        .into_iter()
        .next()
        .ok_or_else(|| ConfigError(format!("{cert_key}: {}: no CERTIFICATE block", cert_path.display())))?;
    let cert = CertificateRef::parse(&certificate)
        .map_err(|e| ConfigError(format!("{cert_key}: {}: not an X.509 certificate: {e}", cert_path.display())))?;
    if cert.not_after < now {
        return Err(ConfigError(format!(
            "{cert_key}: RA certificate {} expired at {}",
            cert_path.display(),
            cert.not_after.to_rfc3339()
        )));
    }
    if cert.not_before > now {
        tracing::warn!(file = %cert_path.display(), not_before = %cert.not_before.to_rfc3339(), "RA certificate is not valid yet");
    }
    let token_uri = key_path.to_str().filter(|t| scep_issuers::pkcs11::is_pkcs11_uri(t));
    let key = match (token_uri, passphrase) {
        (Some(_), Some((_, passphrase_key))) => {
            return Err(ConfigError(format!(
                "{passphrase_key}: {key_key} is a pkcs11: URI, whose key has no passphrase (the token's PIN is \
                 set in [pkcs11]): remove {passphrase_key}"
            )));
        }
        (Some(uri), None) => open_token_key(uri, pkcs11, key_key, role)?,
        (None, _) => load_ra_key_file(key_path, key_key, role, passphrase)?,
    };
    let key_spki = SubjectPublicKeyInfoRef::parse(key.spki_der())
        .map_err(|e| ConfigError(format!("{key_key}: {}: {e}", key_path.display())))?;
    if key_spki.key != cert.spki.key {
        return Err(ConfigError(format!(
            "{key_key}: {} does not match the RA certificate {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    Ok(RaIdentity { certificate, key })
}

/// Opens a key held in a PKCS#11 token (`scep_issuers::pkcs11`) for the
/// setting `key_key`. A PIN the token refuses names the setting that gave it.
fn open_pkcs11_key(
    uri: &scep_issuers::pkcs11::KeyUri,
    pkcs11: &Pkcs11Settings,
    key_key: &str,
) -> Result<scep_issuers::pkcs11::Pkcs11Key, ConfigError> {
    use scep_issuers::pkcs11::{Pkcs11Error, Pkcs11Key};
    let key = Pkcs11Key::open(uri, &pkcs11.options).map_err(|e| match &e {
        Pkcs11Error::Pin { .. } => {
            let setting = match (&uri.pin_source, pkcs11.pin_setting) {
                (Some(_), _) => format!("{key_key} (its pin-source)"),
                (None, Some(setting)) => setting.to_string(),
                (None, None) => "pkcs11.pin_file".to_string(),
            };
            ConfigError(format!("{setting}: {e} (opening {key_key} = {})", uri.describe()))
        }
        _ => ConfigError(format!("{key_key}: {e}")),
    })?;
    tracing::info!(target: "scepd::pkcs11", key = %uri.describe(), setting = key_key,
        kind = %PrivateKey::kind(&key).label(), "key opened in its PKCS#11 token");
    Ok(key)
}

/// Opens an RA key held in a PKCS#11 token.
fn open_token_key(uri: &str, pkcs11: &Pkcs11Settings, key_key: &str, role: RaRole) -> Result<RaKey, ConfigError> {
    let parsed = scep_issuers::pkcs11::KeyUri::parse(uri).map_err(|e| ConfigError(format!("{key_key}: {e}")))?;
    let key = open_pkcs11_key(&parsed, pkcs11, key_key)?;
    if role == RaRole::Encryption && !PrivateKey::kind(&key).is_rsa() {
        return Err(ConfigError(format!(
            "{key_key}: {} is an {} key; an encryption RA key must be RSA: it receives CMS key transport",
            parsed.describe(),
            PrivateKey::kind(&key).label()
        )));
    }
    RaKey::from_key(Arc::new(key)).map_err(|e| ConfigError(format!("{key_key}: {e}")))
}

/// Loads an RA key from a PEM file (mode 0600).
fn load_ra_key_file(
    key_path: &Path,
    key_key: &str,
    role: RaRole,
    passphrase: Option<(&Path, &str)>,
) -> Result<RaKey, ConfigError> {
    let der = read_private_key(key_path, key_key, passphrase)?;
    Ok(match role {
        RaRole::Signing => RaKey::from_der(&der).map_err(|e| {
            ConfigError(format!(
                "{key_key}: {}: {e} (the signing RA key must be RSA, or ECDSA P-256 or P-384)",
                key_path.display()
            ))
        })?,
        RaRole::Encryption => RaKey::Rsa(RsaPrivateKey::from_der(&der).map_err(|e| {
            ConfigError(format!(
                "{key_key}: {}: {e} (an encryption RA key must be RSA: it receives CMS key transport)",
                key_path.display()
            ))
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, section};
    use scep_engine::config::{CaCertShape, KeyPolicy, SanPolicy, SanType};
    use scep_engine::crypto::{ContentCipher, DigestAlg};

    #[test]
    fn an_encrypted_ra_key_loads_with_its_passphrase_file_and_every_mistake_names_the_setting() {
        use pkcs8::der::Decode as _;
        let dir = TestDir::new();
        let plain = pem::private_key(crate::testutil::RA_KEY).unwrap();
        let encrypted =
            pkcs8::PrivateKeyInfo::from_der(&plain).unwrap().encrypt(rand_core::OsRng, b"correct horse").unwrap();
        dir.write_key("ra-enc.key", &pem::encode("ENCRYPTED PRIVATE KEY", encrypted.as_bytes()));
        dir.write_key("ra.pass", "correct horse\n");
        dir.write_key("wrong.pass", "battery staple\n");
        let build = |key: &str, pass: Option<&str>| {
            let mut s = section(&dir, "corp");
            s.ra_key = Some(dir.path().join(key));
            s.ra_key_passphrase_file = pass.map(|p| dir.path().join(p));
            s.build(0, &mut BuildContext::new(None, dir.path(), dir.now()))
                .map(|p| p.engine.config().ra.key.spki_der().to_vec())
        };
        let expected = RaKey::from_der(&plain).unwrap().spki_der().to_vec();
        assert_eq!(build("ra-enc.key", Some("ra.pass")).unwrap(), expected);
        let e = build("ra-enc.key", None).unwrap_err().0;
        assert!(e.contains("profile[corp].ra_key") && e.contains("set profile[corp].ra_key_passphrase_file"), "{e}");
        let e = build("ra-enc.key", Some("wrong.pass")).unwrap_err().0;
        assert!(e.starts_with("profile[corp].ra_key_passphrase_file: ") && e.contains("wrong passphrase"), "{e}");
        let e = build("ra.key", Some("ra.pass")).unwrap_err().0;
        assert!(e.starts_with("profile[corp].ra_key_passphrase_file: ") && e.contains("not encrypted"), "{e}");
        std::fs::write(dir.path().join("open.pass"), "x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path().join("open.pass"), std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = build("ra-enc.key", Some("open.pass")).unwrap_err().0;
            assert!(e.starts_with("profile[corp].ra_key_passphrase_file: ") && e.contains("chmod 600"), "{e}");
        }
        let mut s = section(&dir, "corp");
        s.ra_encryption_key_passphrase_file = Some("ra.pass".into());
        let e = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap_err().0;
        assert!(e.contains("ra_encryption_key_passphrase_file") && e.contains("requires ra_encryption_key"), "{e}");
    }

    #[test]
    fn a_full_profile_builds() {
        let dir = TestDir::new();
        let mut s = section(&dir, "corp");
        s.ciphers = Some(vec!["des".into(), "aes256".into()]);
        s.digests = Some(vec!["sha256".into()]);
        s.ekus = Some(vec!["client-auth".into(), "1.3.6.1.4.1.311.20.2.2".into()]);
        s.validity_days = Some(30);
        s.allow_san_change = Some(true);
        s.renewal = Some(false);
        s.ca_chain_shape = Some("ca-only".into());
        let p = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        let c = p.engine.config();
        assert_eq!(c.name, "corp");
        assert_eq!(c.algorithms.ciphers, vec![ContentCipher::DesCbc, ContentCipher::Aes256Cbc]);
        assert_eq!(c.algorithms.digests, vec![DigestAlg::Sha256]);
        assert_eq!(c.issuance.validity_secs, 30 * 86_400);
        assert_eq!(c.allowed_ekus.len(), 2);
        assert!(c.renewal.allow_san_change && !c.renewal.enabled);
        assert_eq!(c.ca_cert_shape, CaCertShape::CaOnly);
        assert_eq!(c.ca_chain.len(), 1);
        assert_eq!(p.issuer.id(), "none-corp");
    }

    #[test]
    fn crypto_policy_keys_reach_the_engine() {
        let dir = TestDir::new();
        let mut s = section(&dir, "p");
        s.key_algorithms = Some(vec!["ec-p256".into()]);
        s.validity_days = Some(365);
        s.max_ttl_days = Some(90);
        s.san_types = Some(vec!["dns".into()]);
        s.san_dns_suffixes = Some(vec![".corp.example".into()]);
        let p = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        let c = p.engine.config();
        assert_eq!(c.keys, KeyPolicy { min_rsa_bits: None, allow_p256: true, allow_p384: false });
        assert_eq!(c.issuance.validity_secs, 90 * 86_400, "the smaller of validity and max TTL wins");
        assert_eq!(c.sans.allowed_types, Some(vec![SanType::Dns]));
        assert_eq!(c.sans.dns_suffixes, vec![".corp.example".to_string()]);
        assert!(p.mtls.is_none());
        // Defaults: every key type, no SAN restriction.
        let p = section(&dir, "q").build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        assert_eq!(p.engine.config().keys, KeyPolicy::default());
        assert_eq!(p.engine.config().sans, SanPolicy::default());
    }

    /// The bootstrap profile publishes the local CA's NDES pair; an explicit
    /// `issuer = "local"` profile keeps the single RA unless it names an
    /// encryption RA, and then publishes it; the reply form and SID trust
    /// reach the engine.
    #[test]
    fn ra_arrangements_reach_the_engine() {
        let dir = TestDir::new();
        let data = dir.path().join("data");
        let now = UnixTime::now();
        let mut ctx = BuildContext::new(None, &data, now);
        let challenge = bootstrap::Challenge { password: "pw".into(), source: bootstrap::ChallengeSource::Explicit };
        let boot = bootstrap::default_profile_section(&challenge).build(0, &mut ctx).unwrap();
        let read =
            |name: &str| pem::certificates(&std::fs::read_to_string(data.join(name)).unwrap()).unwrap().remove(0);
        assert_eq!(boot.engine.config().ra.certificate, read("ra-signing.pem"));
        let enc: Vec<&[u8]> = boot.engine.encryption_ras().iter().map(|r| r.certificate.as_slice()).collect();
        assert_eq!(enc, vec![read("ra-encryption.pem").as_slice()]);
        assert_eq!(
            boot.engine.config().allowed_ekus,
            vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec(), scep_engine::oid::KP_SERVER_AUTH.to_vec()]
        );
        // Issued unasked: client-auth only.
        assert_eq!(boot.engine.config().issuance.ekus, vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec()]);
        assert_eq!(boot.engine.reply_signature(), scep_engine::config::ReplySignaturePolicy::RsaEncryption);

        let local = ProfileSection {
            name: Some("corp".into()),
            issuer: Some("local".into()),
            challenge_password: Some("pw".into()),
            ..ProfileSection::default()
        };
        let single = local.build(1, &mut ctx).unwrap();
        assert_eq!(single.engine.config().ra.certificate, read("ra.pem"));
        assert!(single.engine.encryption_ras().is_empty());
        assert_eq!(single.engine.config().allowed_ekus, vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec()]);

        let pair = ProfileSection {
            ra_cert: Some(data.join("ra-signing.pem")),
            ra_key: Some(data.join("ra-signing.key")),
            ra_encryption_cert: Some(data.join("ra-encryption.pem")),
            ra_encryption_key: Some(data.join("ra-encryption.key")),
            reply_signature: Some("mirror".into()),
            trust_requested_sid: Some(true),
            ..local.clone()
        }
        .build(2, &mut ctx)
        .unwrap();
        assert_eq!(pair.engine.encryption_ras().len(), 1);
        assert_eq!(pair.engine.reply_signature(), scep_engine::config::ReplySignaturePolicy::MirrorRequest);
        assert!(pair.engine.config().issuance.trust_requested_sid);

        // An explicit ca_chain must start with the CA the issuer signs as (it
        // is what GetCACert publishes and renewals are judged against).
        let e = ProfileSection { ca_chain: Some(data.join("ra.pem")), ..local.clone() }.build(4, &mut ctx).unwrap_err();
        assert!(e.0.starts_with("profile[corp].ca_chain") && e.0.contains("first certificate must be"), "{e}");
        let own = ProfileSection { ca_chain: Some(data.join("ca.pem")), ..local.clone() }.build(5, &mut ctx).unwrap();
        assert_eq!(own.engine.config().ca_chain[0], read("ca.pem"));

        // The encryption RA's key must match its certificate, and the error names the key.
        let e = ProfileSection {
            ra_encryption_cert: Some(data.join("ra-encryption.pem")),
            ra_encryption_key: Some(data.join("ra-signing.key")),
            ..local
        }
        .build(3, &mut ctx)
        .unwrap_err();
        assert!(e.0.starts_with("profile[corp].ra_encryption_key") && e.0.contains("does not match"), "{e}");
    }

    /// An RA key and certificate made with the openssl CLI, issued by the
    /// directory's RA certificate (a CA): the key from `keygen` (openssl
    /// arguments writing `<name>.key`), the certificate with `key_usage`.
    /// Returns the certificate and key paths.
    fn openssl_ra(dir: &TestDir, name: &str, keygen: &[&str], key_usage: &str) -> (PathBuf, PathBuf) {
        let d = dir.path();
        let run = |args: &[&str]| {
            let o = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap_or_else(|e| panic!("this test needs the openssl CLI (apt-get install openssl): {e}"));
            assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        let key = format!("{name}.key");
        let mut args = keygen.to_vec();
        args.extend(["-out", &key]);
        run(&args);
        let ext = format!("{name}.cnf");
        std::fs::write(d.join(&ext), format!("keyUsage=critical,{key_usage}\nbasicConstraints=critical,CA:FALSE\n"))
            .unwrap();
        let csr = format!("{name}.csr");
        run(&["req", "-new", "-key", &key, "-subj", &format!("/CN={name}"), "-out", &csr]);
        let cert = format!("{name}.pem");
        #[rustfmt::skip]
        run(&["x509", "-req", "-in", &csr, "-CA", "ra.pem", "-CAkey", "ra.key", "-set_serial", "77",
              "-days", "3650", "-extfile", &ext, "-out", &cert]);
        let key_path = dir.write_key(&key, &std::fs::read_to_string(d.join(&key)).unwrap());
        (d.join(cert), key_path)
    }

    #[test]
    fn an_ecdsa_signing_ra_needs_an_rsa_encryption_ra() {
        let dir = TestDir::new();
        let now = UnixTime::now();
        let mut ctx = BuildContext::new(None, dir.path(), now);
        let (enc_cert, enc_key) = openssl_ra(
            &dir,
            "ra-encryption",
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "keyEncipherment",
        );
        // SEC1 (`EC PRIVATE KEY`) on P-256, PKCS#8 on P-384.
        let p256: &[&str] = &["ecparam", "-name", "prime256v1", "-genkey", "-noout"];
        let p384: &[&str] = &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"];
        for (name, keygen, kind) in [("ec-p256", p256, "ecdsa-p256"), ("ec-p384", p384, "ecdsa-p384")] {
            let (cert, key) = openssl_ra(&dir, name, keygen, "digitalSignature");
            let mut s = section(&dir, "corp");
            s.ra_cert = Some(cert.clone());
            s.ra_key = Some(key.clone());
            // Alone (the single arrangement): refused, naming the key.
            let e = s.build(0, &mut ctx).unwrap_err();
            assert!(e.0.starts_with("profile[corp].ra_key: is an") && e.0.contains(kind), "{e}");
            assert!(e.0.contains("ra_encryption_cert"), "the error says what to add: {e}");
            // With an RSA encryption RA beside it: the EC key signs, the RSA one decrypts.
            s.ra_encryption_cert = Some(enc_cert.clone());
            s.ra_encryption_key = Some(enc_key.clone());
            let p = s.build(0, &mut ctx).unwrap();
            let c = p.engine.config();
            assert_eq!(c.ra.key.kind(), kind);
            assert!(c.ra.key.as_rsa().is_none());
            assert_eq!(p.engine.encryption_ras().len(), 1);
            // An ECDSA key as the encryption RA is refused, naming that key.
            let mut s = section(&dir, "corp");
            s.ra_encryption_cert = Some(cert);
            s.ra_encryption_key = Some(key);
            let e = s.build(0, &mut ctx).unwrap_err();
            assert!(e.0.starts_with("profile[corp].ra_encryption_key") && e.0.contains("must be RSA"), "{e}");
        }
    }

    #[test]
    fn single_des_is_never_a_default() {
        let dir = TestDir::new();
        let p = section(&dir, "p").build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        assert!(!p.engine.config().algorithms.ciphers.contains(&ContentCipher::DesCbc));
    }

    #[test]
    fn a_one_time_profile_needs_no_challenge_password() {
        let dir = TestDir::new();
        let mut s = section(&dir, "p");
        s.challenge_password = None;
        s.challenge_mode = Some("one-time".into());
        let p = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        assert!(matches!(p.engine.config().challenge, scep_engine::config::ChallengePolicy::OneTime));
        s.challenge_mode = Some("static".into());
        s.challenge_password = Some("pw".into());
        let p = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        assert!(matches!(p.engine.config().challenge, scep_engine::config::ChallengePolicy::Static(_)));
    }

    /// Each invalid profile value names its key.
    #[test]
    fn invalid_values_name_the_key() {
        let dir = TestDir::new();
        type Edit = fn(&mut ProfileSection);
        let cases: &[(Edit, &str)] = &[
            (|s| s.name = None, "profile[0].name"),
            (|s| s.name = Some("Bad Name".into()), "profile[0].name"),
            (|s| s.issuer = Some("vault".into()), "profile[p].issuer"),
            (|s| s.challenge_password = None, "profile[p].challenge_password"),
            (|s| s.challenge_password = Some(String::new()), "profile[p].challenge_password"),
            (|s| s.danger_no_challenge = Some(true), "profile[p].danger_no_challenge"),
            (|s| s.challenge_mode = Some("sometimes".into()), "profile[p].challenge_mode"),
            (|s| s.challenge_mode = Some("one-time".into()), "profile[p].challenge_password"),
            (
                |s| {
                    s.challenge_mode = Some("one-time".into());
                    s.challenge_password = None;
                    s.danger_no_challenge = Some(true);
                },
                "profile[p].danger_no_challenge",
            ),
            (|s| s.ca_chain_shape = Some("chain".into()), "profile[p].ca_chain_shape"),
            (|s| s.ciphers = Some(vec!["rc2".into()]), "profile[p].ciphers"),
            (|s| s.ciphers = Some(vec![]), "profile[p].ciphers"),
            (|s| s.digests = Some(vec!["md5".into()]), "profile[p].digests"),
            (|s| s.validity_days = Some(0), "profile[p].validity_days"),
            (|s| s.validity_days = Some(100_000), "profile[p].validity_days"),
            (|s| s.ekus = Some(vec!["any".into()]), "profile[p].ekus"),
            (|s| s.min_rsa_bits = Some(1024), "profile[p].min_rsa_bits"),
            (|s| s.signing_time_tolerance_secs = Some(0), "profile[p].signing_time_tolerance_secs"),
            (|s| s.max_message_size = Some(10), "profile[p].max_message_size"),
            (|s| s.ra_key = None, "profile[p].ra_key"),
            (|s| s.ra_cert = None, "profile[p].ra_cert"),
            (
                |s| {
                    s.ra_cert = None;
                    s.ra_key = None;
                },
                "profile[p].ra_cert",
            ),
            (|s| s.ra_cert = Some("/nonexistent/ra.pem".into()), "profile[p].ra_cert"),
            (|s| s.ca_chain = None, "profile[p].ca_chain"),
            (|s| s.ca_chain = Some("/nonexistent/chain.pem".into()), "profile[p].ca_chain"),
            (|s| s.key_algorithms = Some(vec!["dsa".into()]), "profile[p].key_algorithms"),
            (|s| s.key_algorithms = Some(vec![]), "profile[p].key_algorithms"),
            (|s| s.max_ttl_days = Some(0), "profile[p].max_ttl_days"),
            (|s| s.san_types = Some(vec!["x400".into()]), "profile[p].san_types"),
            (|s| s.san_dns_suffixes = Some(vec!["bad suffix".into()]), "profile[p].san_dns_suffixes"),
            (|s| s.mtls_enabled = Some(true), "profile[p].mtls_client_ca_trust_bundle_path"),
            (|s| s.mtls_client_ca_trust_bundle_path = Some("x.pem".into()), "profile[p].mtls_enabled"),
            (
                |s| {
                    s.mtls_enabled = Some(true);
                    s.mtls_client_ca_trust_bundle_path = Some("/nonexistent/ca.pem".into());
                },
                "profile[p].mtls_client_ca_trust_bundle_path",
            ),
        ];
        for (i, (edit, key)) in cases.iter().enumerate() {
            let mut s = section(&dir, "p");
            edit(&mut s);
            let e = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).expect_err(key);
            assert!(e.0.starts_with(key), "case {i}: {e} does not name {key}");
        }
    }

    #[test]
    fn ra_key_readable_by_others_is_refused_naming_the_file() {
        let dir = TestDir::new();
        let s = section(&dir, "p");
        let key = dir.path().join("ra.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for mode in [0o640, 0o604, 0o660, 0o644] {
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
                let e = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap_err();
                assert!(e.0.starts_with("profile[p].ra_key"), "{e}");
                assert!(e.0.contains(&key.display().to_string()), "{e}");
            }
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
            s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        }
    }

    #[test]
    fn expired_ra_certificate_is_refused() {
        let dir = TestDir::new();
        let s = section(&dir, "p");
        // The test RA certificate is valid 2026-11-25 .. 2036-11-25.
        let later = UnixTime::from_secs(2_200_000_000); // 2039
        let e = s.build(0, &mut BuildContext::new(None, dir.path(), later)).unwrap_err();
        assert!(e.0.starts_with("profile[p].ra_cert") && e.0.contains("expired"), "{e}");
    }

    #[test]
    fn mismatched_ra_key_is_refused() {
        let dir = TestDir::new();
        let (_, other) = RsaPrivateKey::generate(2048).unwrap();
        dir.write_key("other.key", &pem::encode("PRIVATE KEY", &other));
        let mut s = section(&dir, "p");
        s.ra_key = Some(dir.path().join("other.key"));
        let e = s.build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap_err();
        assert!(e.0.starts_with("profile[p].ra_key") && e.0.contains("does not match"), "{e}");
    }
}
