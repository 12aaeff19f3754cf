//! First start: create a CA and an RA in the data directory, or load and
//! validate the ones already there.
//!
//! Files, all PEM: `ca.pem` (CA certificate), `ca.key` (CA key, PKCS#8),
//! `ra.pem` (RA certificate, signed by the CA), `ra.key` (RA key, RSA
//! PKCS#8). Keys are created mode 0600 from the first byte, the directory
//! 0700.
//!
//! With [`BootstrapOptions::ndes_ra_pair`] (the default) the directory also
//! holds the NDES RA arrangement (see `scep_engine::config::RaIdentity`):
//! `ra-signing.pem`/`.key` (keyUsage digitalSignature: it signs CertReps) and
//! `ra-encryption.pem`/`.key` (keyUsage keyEncipherment: clients that choose
//! by key usage, such as PyScep, scepreq, jscep and certmonger, encrypt to it),
//! both RSA-2048 and issued by the CA. A missing pair is issued by the existing
//! CA, as the single RA is; `ra.pem`/`ra.key` stay as they were.
//!
//! # A CA is created once
//! Everything already in the directory is checked before anything is written,
//! so a start that is refused leaves the directory as it found it. A new CA
//! is created only in a directory that never had one: with no `ca.pem` (and
//! `ca.key`) it is refused while any RA file is left (they were issued by the
//! CA that is gone) and while the certificate index ([`IndexLocation`]:
//! `local-ca.sqlite`, or the shared PostgreSQL index) holds certificates of
//! another CA. A new CA would orphan those: the admin API, the CRL and OCSP
//! know a certificate only under the CA that issued it. The operator is told
//! to restore the CA from backup, and offered to remove the RA files only
//! where no certificate was ever recorded.
//!
//! # Crash safety
//! Every file is written to a temporary name, fsynced, then renamed into
//! place. A set of files (a new CA with its RAs, or the RAs an existing CA
//! issues) is announced in a marker file first and its *last* rename
//! (`ca.pem`, or the last RA certificate) is the commit point: a
//! later start that finds the marker either sees the commit file (the set is
//! complete; the marker is removed) or removes the listed leftovers and
//! starts over. So a crash never leaves half a CA.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use scep_engine::crypto::provider::PrivateKey;
use scep_engine::crypto::{EcPrivateKey, RandomSource, RsaPrivateKey, SigningKey, SystemRandom};
use scep_engine::pem;
use scep_engine::time::UnixTime;
use scep_engine::x509::{CertificateRef, SubjectPublicKeyInfoRef};

use super::index::RecordedCa;
use super::{load_ca, read_certificates, read_private_key};
use crate::error::IssuerError;
use crate::x509_build::{
    BuildError, CaSigner, KU_DIGITAL_SIGNATURE, KU_KEY_ENCIPHERMENT, RaUsage, Validity, common_name, key_usage_bit,
    random_serial, self_signed_ca,
};

/// CA certificate file name.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA key file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// RA certificate file name.
pub const RA_CERT_FILE: &str = "ra.pem";
/// RA key file name.
pub const RA_KEY_FILE: &str = "ra.key";
/// NDES signing RA certificate file name.
pub const RA_SIGNING_CERT_FILE: &str = "ra-signing.pem";
/// NDES signing RA key file name.
pub const RA_SIGNING_KEY_FILE: &str = "ra-signing.key";
/// NDES encryption RA certificate file name.
pub const RA_ENCRYPTION_CERT_FILE: &str = "ra-encryption.pem";
/// NDES encryption RA key file name.
pub const RA_ENCRYPTION_KEY_FILE: &str = "ra-encryption.key";
/// Marker of a bootstrap in progress (lists the files being installed).
const PENDING_MARKER: &str = ".bootstrap-pending";

/// Every RA file a bootstrap may have written, in the order a refusal lists them.
const RA_FILES: [&str; 6] = [
    RA_CERT_FILE,
    RA_KEY_FILE,
    RA_SIGNING_CERT_FILE,
    RA_SIGNING_KEY_FILE,
    RA_ENCRYPTION_CERT_FILE,
    RA_ENCRYPTION_KEY_FILE,
];

/// The NDES RA pair's two roles: usage, certificate file, key file, name.
const NDES_ROLES: [(RaUsage, &str, &str, &str); 2] = [
    (RaUsage::Signing, RA_SIGNING_CERT_FILE, RA_SIGNING_KEY_FILE, "signing"),
    (RaUsage::Encryption, RA_ENCRYPTION_CERT_FILE, RA_ENCRYPTION_KEY_FILE, "encryption"),
];

/// How far back generated certificates' notBefore is set, for clock skew.
const BACKDATE_SECS: i64 = 3600;

/// The CA key type bootstrap generates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaKeyType {
    /// RSA 2048 (the default: every SCEP client can verify it).
    #[default]
    Rsa2048,
    /// ECDSA P-256.
    EcP256,
}

/// Where the certificates issued from a data directory are recorded. The
/// bootstrap reads it before it creates a CA, and refuses to create one while
/// it holds certificates of another (see the module docs).
#[derive(Clone, Debug, Default)]
pub enum IndexLocation {
    /// `<dir>/local-ca.sqlite`: the SQLite index of the directory being
    /// bootstrapped (the default).
    #[default]
    InDataDir,
    /// The SQLite index at this path (`check-config` bootstraps a copy of the
    /// data directory and reads the real one's index).
    SqliteFile(PathBuf),
    /// The shared PostgreSQL index (`[store] url`) on the node's pool.
    Shared {
        /// The node's pool.
        pool: Arc<scep_store::postgres::Pool>,
        /// The ids of the `[[issuer]] type = "local"` CAs configured beside
        /// the built-in one: their certificates share the tables and are
        /// theirs, so they do not count.
        other_cas: Vec<String>,
    },
}

impl IndexLocation {
    /// What it is, for messages: the SQLite file, or the shared database.
    fn describe(&self, dir: &Path) -> String {
        match self {
            Self::InDataDir => dir.join(super::store::DB_FILE).display().to_string(),
            Self::SqliteFile(path) => path.display().to_string(),
            Self::Shared { pool, .. } => format!("the certificate index in the store (PostgreSQL {})", pool.describe()),
        }
    }

    /// The CAs whose certificates it holds (those of `other_cas` left out).
    fn recorded_cas(&self, dir: &Path) -> Result<Vec<RecordedCa>, IssuerError> {
        let found = match self {
            Self::InDataDir => super::store::recorded_cas(&dir.join(super::store::DB_FILE)),
            Self::SqliteFile(path) => super::store::recorded_cas(path),
            Self::Shared { pool, other_cas } => super::index::postgres::PostgresIndex::recorded_cas(pool)
                .map(|cas| cas.into_iter().filter(|ca| !other_cas.contains(&ca.ca_id)).collect()),
        };
        found.map_err(|e| {
            IssuerError::Database(format!(
                "cannot tell whether {} holds certificates of an earlier CA, so no CA is created: {e}",
                self.describe(dir)
            ))
        })
    }
}

/// Bootstrap settings.
#[derive(Clone, Debug)]
pub struct BootstrapOptions {
    /// Key type of a new CA.
    pub ca_key: CaKeyType,
    /// Validity of a new CA certificate (default 10 years).
    pub ca_validity_secs: i64,
    /// Validity of a new RA certificate (default 2 years; cut at the CA's notAfter).
    pub ra_validity_secs: i64,
    /// The current time.
    pub now: UnixTime,
    /// Source of serial numbers and the CA name's random id.
    pub random: Arc<dyn RandomSource>,
    /// Also make sure the NDES RA pair exists (signing RA + encryption RA, see
    /// the module docs). Default `true`: it is the arrangement every client we
    /// know enrols with on defaults.
    pub ndes_ra_pair: bool,
    /// The CA key held in a token ([`crate::pkcs11`]): `ca.key` is then
    /// neither read nor written (one present is refused), and a missing
    /// `ca.pem` is created self-signed by this key.
    pub token_ca_key: Option<Arc<dyn PrivateKey>>,
    /// Where the directory's certificates are recorded, read before a new
    /// CA is created (default: `local-ca.sqlite` in the directory).
    pub index: IndexLocation,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            ca_key: CaKeyType::Rsa2048,
            ca_validity_secs: 3652 * 86_400,
            ra_validity_secs: 730 * 86_400,
            now: UnixTime::now(),
            random: Arc::new(SystemRandom),
            ndes_ra_pair: true,
            token_ca_key: None,
            index: IndexLocation::InDataDir,
        }
    }
}

/// Where the CA and RA are, and what bootstrap created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapOutcome {
    /// `<dir>/ca.pem`
    pub ca_cert: PathBuf,
    /// `<dir>/ca.key`
    pub ca_key: PathBuf,
    /// `<dir>/ra.pem`
    pub ra_cert: PathBuf,
    /// `<dir>/ra.key`
    pub ra_key: PathBuf,
    /// True when a new CA was generated (false: an existing one was validated).
    pub ca_created: bool,
    /// True when a new RA was generated.
    pub ra_created: bool,
    /// The NDES RA pair, when [`BootstrapOptions::ndes_ra_pair`] asked for it.
    pub ndes: Option<NdesRaFiles>,
}

/// Where the NDES RA pair is. Load each certificate and key as an RA identity:
/// the signing one is the profile's RA (`scep_engine::config::ProfileConfig::ra`),
/// the encryption one goes to `scep_engine::Engine::with_encryption_ras`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NdesRaFiles {
    /// `<dir>/ra-signing.pem`
    pub signing_cert: PathBuf,
    /// `<dir>/ra-signing.key`
    pub signing_key: PathBuf,
    /// `<dir>/ra-encryption.pem`
    pub encryption_cert: PathBuf,
    /// `<dir>/ra-encryption.key`
    pub encryption_key: PathBuf,
    /// True when the signing RA was generated by this call.
    pub signing_created: bool,
    /// True when the encryption RA was generated by this call.
    pub encryption_created: bool,
}

/// Creates `dir` (mode 0700, parents too) if missing; warns when an existing
/// directory is readable by others.
///
/// # Errors
/// When it cannot be created or is not a directory.
pub fn ensure_dir(dir: &Path) -> Result<(), IssuerError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", m.permissions().mode() & 0o777),
                    "the data directory is accessible to other users; 0700 is recommended"
                );
            }
            Ok(())
        }
        Ok(_) => Err(IssuerError::DataDir { path: dir.to_path_buf(), reason: "exists and is not a directory".into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| IssuerError::io(dir, e))
        }
        Err(e) => Err(IssuerError::io(dir, e)),
    }
}

/// Makes sure `dir` holds a valid CA and RA: generates them if absent (see
/// the module docs), otherwise loads and validates them (keys match
/// certificates, the CA is a CA, the RA is signed by it, both are valid at
/// `opts.now`). Everything present is checked before anything is written.
///
/// # Errors
/// An [`IssuerError`] naming the file at fault; an incomplete set that
/// bootstrap did not write itself (e.g. `ca.key` without `ca.pem`) is refused
/// rather than overwritten, and so is a missing CA where one existed (RA
/// files left, or certificates in [`BootstrapOptions::index`]).
pub fn bootstrap(dir: &Path, opts: &BootstrapOptions) -> Result<BootstrapOutcome, IssuerError> {
    ensure_dir(dir)?;
    recover_interrupted(dir)?;
    let mut out = BootstrapOutcome {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        ra_cert: dir.join(RA_CERT_FILE),
        ra_key: dir.join(RA_KEY_FILE),
        ca_created: false,
        ra_created: false,
        ndes: None,
    };
    let token_key = opts.token_ca_key.as_ref();
    let ca_present = match token_key {
        None => presence(&out.ca_cert, &out.ca_key, dir)?,
        Some(_) if out.ca_key.exists() => {
            return Err(IssuerError::DataDir {
                path: dir.to_path_buf(),
                reason: format!(
                    "{CA_KEY_FILE} exists but the CA key is configured in a PKCS#11 token: remove {CA_KEY_FILE} \
                     (and {CA_CERT_FILE}, unless it is the token key's certificate)"
                ),
            });
        }
        Some(_) => out.ca_cert.exists(),
    };
    if !ca_present {
        refuse_a_ca_where_one_existed(dir, opts)?;
        create_ca_and_ras(dir, opts)?;
        out.ca_created = true;
        out.ra_created = true;
        out.ndes = opts.ndes_ra_pair.then(|| ndes_files(dir, true, true));
        return Ok(out);
    }
    let key = match token_key {
        Some(k) => super::CaKey::Token(k),
        None => super::CaKey::File,
    };
    let (ca, _) = load_ca(&out.ca_cert, &out.ca_key, key, opts.now)?;
    // Check everything present before writing anything: a refused start
    // leaves the directory as it found it.
    let ra_present = presence(&out.ra_cert, &out.ra_key, dir)?;
    if ra_present {
        validate_ra(&ca, &out.ra_cert, &out.ra_key, RaUsage::SigningAndEncryption, opts.now)?;
    }
    let mut ndes_present = [true; 2];
    if opts.ndes_ra_pair {
        for (present, (usage, cert_file, key_file, _)) in ndes_present.iter_mut().zip(NDES_ROLES) {
            let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
            *present = presence(&cert_path, &key_path, dir)?;
            if *present {
                validate_ra(&ca, &cert_path, &key_path, usage, opts.now)?;
            }
        }
    }
    // Then the existing CA issues what is missing, installed as one set.
    let mut files: Vec<(&str, String, bool)> = Vec::new();
    if !ra_present {
        let (cert, key) = make_ra(&ca, &short_id(opts.random.as_ref()), RaUsage::SigningAndEncryption, opts)?;
        files.extend([(RA_KEY_FILE, key, true), (RA_CERT_FILE, cert, false)]);
        out.ra_created = true;
    }
    for (present, (usage, cert_file, key_file, role)) in ndes_present.iter().zip(NDES_ROLES) {
        if !present {
            let id = short_id(opts.random.as_ref());
            let (cert, key) = make_ra(&ca, &format!("{role} {id}"), usage, opts)?;
            files.extend([(key_file, key, true), (cert_file, cert, false)]);
        }
    }
    if !files.is_empty() {
        let set: Vec<(&str, &[u8], bool)> =
            files.iter().map(|(name, text, secret)| (*name, text.as_bytes(), *secret)).collect();
        install(dir, &set)?;
    }
    if out.ra_created {
        tracing::info!(dir = %dir.display(), "new RA certificate issued by the existing CA");
    }
    for (present, (_, _, _, role)) in ndes_present.iter().zip(NDES_ROLES) {
        if !present {
            tracing::info!(dir = %dir.display(), role, "new NDES RA certificate issued by the CA");
        }
    }
    if opts.ndes_ra_pair {
        out.ndes = Some(ndes_files(dir, !ndes_present[0], !ndes_present[1]));
    }
    Ok(out)
}

/// Where the NDES RA pair is in `dir`, and which of its certificates this
/// bootstrap created.
fn ndes_files(dir: &Path, signing_created: bool, encryption_created: bool) -> NdesRaFiles {
    NdesRaFiles {
        signing_cert: dir.join(RA_SIGNING_CERT_FILE),
        signing_key: dir.join(RA_SIGNING_KEY_FILE),
        encryption_cert: dir.join(RA_ENCRYPTION_CERT_FILE),
        encryption_key: dir.join(RA_ENCRYPTION_KEY_FILE),
        signing_created,
        encryption_created,
    }
}

/// With no CA in `dir`: refuses to create one where a CA existed before,
/// that is while RA files are left (its CA issued them) or while the
/// certificate index holds certificates (a new CA would orphan them; see
/// the module docs). Removing the RA files is offered only when no
/// certificate was ever recorded.
fn refuse_a_ca_where_one_existed(dir: &Path, opts: &BootstrapOptions) -> Result<(), IssuerError> {
    let ra_files: Vec<&str> = RA_FILES.iter().copied().filter(|name| dir.join(name).exists()).collect();
    let recorded = opts.index.recorded_cas(dir)?;
    let (missing, lost) = match opts.token_ca_key {
        Some(_) => (format!("{CA_CERT_FILE} is missing"), CA_CERT_FILE.to_string()),
        None => (format!("{CA_CERT_FILE} and {CA_KEY_FILE} are missing"), format!("{CA_CERT_FILE} and {CA_KEY_FILE}")),
    };
    let index = opts.index.describe(dir);
    let refuse = |reason: String| Err(IssuerError::DataDir { path: dir.to_path_buf(), reason });
    if !recorded.is_empty() {
        let issued: Vec<String> = recorded
            .iter()
            .map(|ca| format!("{} certificate(s) issued by CA {} ({})", ca.certificates, ca.ca_id, ca.subject))
            .collect();
        let keep = match ra_files.as_slice() {
            [] => String::new(),
            files => format!("; keep {} (issued by that CA)", files.join(", ")),
        };
        return refuse(format!(
            "there is no CA ({missing}), but {index} holds {}. A new CA would orphan them (the admin API, \
             the CRL and OCSP would no longer know them), so none is created: restore {lost} from backup{keep}",
            issued.join(" and ")
        ));
    }
    if !ra_files.is_empty() {
        return refuse(format!(
            "there is no CA ({missing}), but RA files issued by a CA are left: {}. Restore {lost} from backup; or, \
             since {index} holds no certificate (this directory never issued one), remove these files to start \
             over with a new CA",
            ra_files.join(", ")
        ));
    }
    Ok(())
}

/// Whether a certificate/key pair is present: both (true), neither (false);
/// one without the other is an error.
fn presence(cert: &Path, key: &Path, dir: &Path) -> Result<bool, IssuerError> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (c, _) => {
            let (have, missing) = if c { (cert, key) } else { (key, cert) };
            Err(IssuerError::DataDir {
                path: dir.to_path_buf(),
                reason: format!("{} exists without {}", have.display(), missing.display()),
            })
        }
    }
}

/// 8 hex digits naming a generated CA and RA.
fn short_id(random: &dyn RandomSource) -> String {
    let mut b = [0u8; 4];
    random.fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates a new CA and the RAs it issues (the single RA, and the NDES pair
/// when asked), all in memory first, then installed as one set whose commit
/// point is `ca.pem`.
fn create_ca_and_ras(dir: &Path, opts: &BootstrapOptions) -> Result<(), IssuerError> {
    let id = short_id(opts.random.as_ref());
    let (key, key_der) = match (&opts.token_ca_key, opts.ca_key) {
        (Some(k), _) => SigningKey::from_key(k.clone()).map(|k| (k, None)),
        (None, CaKeyType::Rsa2048) => RsaPrivateKey::generate(2048).map(|(k, d)| (SigningKey::Rsa(k), Some(d))),
        (None, CaKeyType::EcP256) => EcPrivateKey::generate().map(|(k, d)| (SigningKey::EcP256(k), Some(d))),
    }
    .map_err(BuildError::Key)?;
    let validity =
        Validity { not_before: opts.now.plus(-BACKDATE_SECS), not_after: opts.now.plus(opts.ca_validity_secs) };
    let cert =
        self_signed_ca(&key, &common_name(&format!("scepd CA {id}")), &random_serial(opts.random.as_ref()), validity)?;
    let ca = CaSigner::new(key, cert)?;
    let (ra_cert, ra_key) = make_ra(&ca, &id, RaUsage::SigningAndEncryption, opts)?;
    let mut files: Vec<(&str, String, bool)> = vec![(RA_KEY_FILE, ra_key, true), (RA_CERT_FILE, ra_cert, false)];
    if opts.ndes_ra_pair {
        for (usage, cert_file, key_file, role) in NDES_ROLES {
            let (cert, key) = make_ra(&ca, &format!("{role} {}", short_id(opts.random.as_ref())), usage, opts)?;
            files.extend([(key_file, key, true), (cert_file, cert, false)]);
        }
    }
    // A token key stays in its token: only the certificate is written.
    if let Some(d) = key_der {
        files.push((CA_KEY_FILE, pem::encode("PRIVATE KEY", &d), true));
    }
    files.push((CA_CERT_FILE, pem::encode("CERTIFICATE", ca.certificate()), false));
    let set: Vec<(&str, &[u8], bool)> =
        files.iter().map(|(name, text, secret)| (*name, text.as_bytes(), *secret)).collect();
    install(dir, &set)?;
    tracing::info!(dir = %dir.display(), ca = %format!("scepd CA {id}"), "new CA and RA created");
    Ok(())
}

/// A new RSA-2048 RA key and certificate (PEM) for `usage`, signed by `ca`.
fn make_ra(ca: &CaSigner, id: &str, usage: RaUsage, opts: &BootstrapOptions) -> Result<(String, String), IssuerError> {
    let (ra, ra_der) = RsaPrivateKey::generate(2048).map_err(BuildError::Key)?;
    let validity =
        Validity { not_before: opts.now.plus(-BACKDATE_SECS), not_after: opts.now.plus(opts.ra_validity_secs) };
    let cert = ca.issue_ra_for(
        usage,
        &common_name(&format!("scepd RA {id}")),
        ra.spki_der(),
        &random_serial(opts.random.as_ref()),
        validity,
    )?;
    Ok((pem::encode("CERTIFICATE", &cert), pem::encode("PRIVATE KEY", &ra_der)))
}

/// Checks the RA: an RSA key (clients encrypt to it, RFC 8894 §3.2.2)
/// matching its certificate, which `ca` signed, which is valid at `now` and
/// whose keyUsage (when present) allows what `usage` needs.
fn validate_ra(
    ca: &CaSigner,
    cert_path: &Path,
    key_path: &Path,
    usage: RaUsage,
    now: UnixTime,
) -> Result<(), IssuerError> {
    let cert_der = read_certificates(cert_path)?.into_iter().next().unwrap_or_default();
    let cert = CertificateRef::parse(&cert_der)
        .map_err(|e| IssuerError::invalid_file(cert_path, format!("malformed certificate: {e}")))?;
    let key = RsaPrivateKey::from_der(&read_private_key(key_path)?)
        .map_err(|e| IssuerError::invalid_file(key_path, format!("not a usable RSA RA key: {e}")))?;
    let key_spki = SubjectPublicKeyInfoRef::parse(key.spki_der())
        .map_err(|e| IssuerError::invalid_file(key_path, format!("unreadable public key: {e}")))?;
    if key_spki.key != cert.spki.key {
        return Err(IssuerError::invalid_file(
            cert_path,
            format!("the RA certificate does not match the key in {}", key_path.display()),
        ));
    }
    let ca_cert = CertificateRef::parse(ca.certificate())
        .map_err(|e| IssuerError::invalid_file(cert_path, format!("CA certificate unreadable: {e}")))?;
    let ca_key = ca_cert
        .spki
        .public_key()
        .map_err(|e| IssuerError::invalid_file(cert_path, format!("unsupported CA key: {e}")))?;
    if cert.issuer != ca.subject() || cert.verify_signed_by(ca_key).is_err() {
        return Err(IssuerError::invalid_file(
            cert_path,
            "the RA certificate was not issued by this data directory's CA",
        ));
    }
    if let Some((_, ku)) = cert
        .extension(scep_engine::oid::KEY_USAGE)
        .map_err(|e| IssuerError::invalid_file(cert_path, format!("malformed extensions: {e}")))?
    {
        let has =
            |bit| key_usage_bit(ku, bit).map_err(|e| IssuerError::invalid_file(cert_path, format!("keyUsage: {e}")));
        let (needs_signature, needs_encipherment) = match usage {
            RaUsage::SigningAndEncryption => (true, true),
            RaUsage::Signing => (true, false),
            RaUsage::Encryption => (false, true),
        };
        if (needs_signature && !has(KU_DIGITAL_SIGNATURE)?) || (needs_encipherment && !has(KU_KEY_ENCIPHERMENT)?) {
            return Err(IssuerError::invalid_file(
                cert_path,
                format!("the RA certificate's keyUsage does not allow its role ({usage:?})"),
            ));
        }
    }
    if !cert.is_valid_at(now) {
        return Err(IssuerError::invalid_file(
            cert_path,
            format!(
                "the RA certificate is not valid now (valid from {} to {}); remove {} and {} to have a new one issued",
                cert.not_before.to_rfc3339(),
                cert.not_after.to_rfc3339(),
                cert_path.display(),
                key_path.display()
            ),
        ));
    }
    Ok(())
}

/// fsyncs a directory so renames and creations in it are durable.
fn sync_dir(dir: &Path) -> Result<(), IssuerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| IssuerError::io(dir, e))
}

/// Writes `bytes` to a new file `path` (mode 0600 for secrets, 0644
/// otherwise, set at creation) and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), IssuerError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| IssuerError::io(path, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| IssuerError::io(path, e))
}

/// Installs a set of files atomically (see the module docs); the last file is
/// the commit point.
fn install(dir: &Path, files: &[(&str, &[u8], bool)]) -> Result<(), IssuerError> {
    let temp = |name: &str| dir.join(format!(".{name}.tmp"));
    for (name, bytes, secret) in files {
        let t = temp(name);
        // A temporary file can only be a leftover of an interrupted run.
        match std::fs::remove_file(&t) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IssuerError::io(&t, e)),
        }
        write_new(&t, bytes, *secret)?;
    }
    let marker = dir.join(PENDING_MARKER);
    let listing: String = files.iter().map(|(name, _, _)| format!("{name}\n")).collect();
    let _ = std::fs::remove_file(&marker);
    write_new(&marker, listing.as_bytes(), false)?;
    sync_dir(dir)?;
    for (name, _, _) in files {
        let (from, to) = (temp(name), dir.join(name));
        std::fs::rename(&from, &to).map_err(|e| IssuerError::io(&to, e))?;
    }
    sync_dir(dir)?;
    std::fs::remove_file(&marker).map_err(|e| IssuerError::io(&marker, e))?;
    sync_dir(dir)
}

/// Completes or undoes a bootstrap that was interrupted (see the module docs).
fn recover_interrupted(dir: &Path) -> Result<(), IssuerError> {
    let marker = dir.join(PENDING_MARKER);
    let listing = match crate::config_file::read_to_string(&marker) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IssuerError::io(&marker, e)),
    };
    let names: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|n| [CA_CERT_FILE, CA_KEY_FILE].contains(n) || RA_FILES.contains(n))
        .collect();
    let committed = names.last().is_some_and(|last| dir.join(last).exists());
    if !committed {
        tracing::warn!(dir = %dir.display(), "removing the files of an interrupted bootstrap");
        for name in &names {
            for path in [dir.join(name), dir.join(format!(".{name}.tmp"))] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(IssuerError::io(&path, e)),
                }
            }
        }
    }
    std::fs::remove_file(&marker).map_err(|e| IssuerError::io(&marker, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_bootstrap_is_undone_and_redone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Simulate a crash after two of four renames.
        std::fs::write(d.join(RA_KEY_FILE), "junk").unwrap();
        std::fs::write(d.join(RA_CERT_FILE), "junk").unwrap();
        std::fs::write(d.join(".ca.key.tmp"), "junk").unwrap();
        std::fs::write(d.join(PENDING_MARKER), "ra.key\nra.pem\nca.key\nca.pem\n").unwrap();
        let out = bootstrap(d, &BootstrapOptions { ca_key: CaKeyType::EcP256, ..Default::default() }).unwrap();
        assert!(out.ca_created && out.ra_created);
        assert!(!d.join(PENDING_MARKER).exists());
        assert!(!d.join(".ca.key.tmp").exists());
        // The set is complete and valid now.
        let again = bootstrap(d, &BootstrapOptions::default()).unwrap();
        assert!(!again.ca_created && !again.ra_created);
    }

    #[test]
    fn ndes_ra_pair_is_created_validated_and_reissued() {
        use scep_engine::x509::find_extension;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let first = bootstrap(d, &BootstrapOptions::default()).unwrap();
        let ndes = first.ndes.clone().unwrap();
        assert!(ndes.signing_created && ndes.encryption_created);
        let ca_der = read_certificates(&first.ca_cert).unwrap().remove(0);
        let ca = CertificateRef::parse(&ca_der).unwrap();
        for (cert_path, key_path, ku) in [
            (&ndes.signing_cert, &ndes.signing_key, [0x03, 0x02, 0x07, 0x80]),
            (&ndes.encryption_cert, &ndes.encryption_key, [0x03, 0x02, 0x05, 0x20]),
            (&first.ra_cert, &first.ra_key, [0x03, 0x02, 0x05, 0xa0]),
        ] {
            let der = read_certificates(cert_path).unwrap().remove(0);
            let cert = CertificateRef::parse(&der).unwrap();
            cert.verify_signed_by(ca.spki.public_key().unwrap()).unwrap();
            assert_eq!(cert.issuer, ca.subject);
            let exts = cert.extensions.unwrap();
            assert_eq!(find_extension(exts, scep_engine::oid::KEY_USAGE).unwrap(), Some((true, &ku[..])));
            let key = RsaPrivateKey::from_der(&read_private_key(key_path).unwrap()).unwrap();
            assert_eq!(SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap().key, cert.spki.key);
            assert_eq!(std::fs::metadata(key_path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Idempotent: validated, not recreated.
        let again = bootstrap(d, &BootstrapOptions::default()).unwrap();
        let pair = again.ndes.unwrap();
        assert!(!pair.signing_created && !pair.encryption_created && !again.ra_created);
        // A missing encryption RA is issued by the existing CA; the signing RA stays.
        let signing_before = std::fs::read(&ndes.signing_cert).unwrap();
        std::fs::remove_file(&ndes.encryption_cert).unwrap();
        std::fs::remove_file(&ndes.encryption_key).unwrap();
        let third = bootstrap(d, &BootstrapOptions::default()).unwrap().ndes.unwrap();
        assert!(!third.signing_created && third.encryption_created);
        assert_eq!(std::fs::read(&ndes.signing_cert).unwrap(), signing_before);
        // Roles swapped: the encryption certificate cannot sign CertReps.
        std::fs::copy(&ndes.encryption_cert, &ndes.signing_cert).unwrap();
        std::fs::copy(&ndes.encryption_key, &ndes.signing_key).unwrap();
        let err = bootstrap(d, &BootstrapOptions::default()).unwrap_err();
        assert!(err.to_string().contains("keyUsage does not allow its role (Signing)"), "{err}");
        // A key without its certificate is refused, not overwritten.
        std::fs::remove_file(&ndes.signing_cert).unwrap();
        let err = bootstrap(d, &BootstrapOptions::default()).unwrap_err();
        assert!(err.to_string().contains("ra-signing.key exists without"), "{err}");
        // Without the option nothing NDES is looked at or made.
        let plain = tempfile::tempdir().unwrap();
        let out = bootstrap(plain.path(), &BootstrapOptions { ndes_ra_pair: false, ..Default::default() }).unwrap();
        assert!(out.ndes.is_none() && !plain.path().join(RA_SIGNING_CERT_FILE).exists());
    }

    #[test]
    fn half_a_ca_that_bootstrap_did_not_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), "mine").unwrap();
        let err = bootstrap(dir.path(), &BootstrapOptions::default()).unwrap_err();
        assert!(err.to_string().contains("ca.key exists without"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join(CA_KEY_FILE)).unwrap(), "mine");
    }

    /// The names of the files in `dir` with their contents.
    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap_or_default())
            })
            .collect();
        files.sort();
        files
    }

    /// Records one certificate of the CA in `dir` in its `local-ca.sqlite`
    /// (the RA certificate stands in for an issued one: the CA signed it).
    /// Returns the CA's id and subject.
    fn record_one_certificate(dir: &Path, out: &BootstrapOutcome) -> (String, String) {
        use crate::local::store::{NewCertificate, Store};
        let ca = crate::LocalCa::open_at(crate::LocalCaConfig::new(&out.ca_cert, &out.ca_key, dir), UnixTime::now())
            .unwrap();
        let ca_id = ca.ca_id().to_string();
        drop(ca);
        let der = read_certificates(&out.ra_cert).unwrap().remove(0);
        let cert = CertificateRef::parse(&der).unwrap();
        let subject = scep_engine::x509::name_to_string(cert.issuer);
        let store = Store::open(&dir.join(crate::local::store::DB_FILE)).unwrap();
        let record = store.record_enrollment(NewCertificate {
            ca_id: ca_id.clone(),
            serial_hex: crate::x509_build::serial_hex(cert.serial),
            profile: "default".into(),
            transaction_id: "t1".into(),
            subject: "CN=device".into(),
            sans: String::new(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            der: der.clone(),
            issued_at: UnixTime::now(),
            renewal_of: None,
            intune_device: None,
        });
        futures_lite::future::block_on(record).unwrap();
        drop(store);
        (ca_id, subject)
    }

    /// Everything present is checked before anything is written: a valid CA
    /// with its single RA missing and a signing RA of another CA is refused
    /// without issuing the single RA first.
    #[test]
    fn a_refused_start_leaves_the_directory_as_it_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = bootstrap(d, &BootstrapOptions::default()).unwrap();
        let other = tempfile::tempdir().unwrap();
        bootstrap(other.path(), &BootstrapOptions::default()).unwrap();
        std::fs::remove_file(&out.ra_cert).unwrap();
        std::fs::remove_file(&out.ra_key).unwrap();
        for name in [RA_SIGNING_CERT_FILE, RA_SIGNING_KEY_FILE] {
            std::fs::copy(other.path().join(name), d.join(name)).unwrap();
        }
        let before = snapshot(d);
        let err = bootstrap(d, &BootstrapOptions::default()).unwrap_err();
        assert!(err.to_string().contains("ra-signing.pem: the RA certificate was not issued by"), "{err}");
        assert_eq!(snapshot(d), before, "a refused bootstrap wrote into the directory");
    }

    /// No CA, RA files left, nothing ever issued: refused once, naming every
    /// RA file left, offering both ways out; the directory is untouched.
    /// Removing the files then starts over.
    #[test]
    fn no_ca_with_ra_files_left_is_refused_naming_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = bootstrap(d, &BootstrapOptions::default()).unwrap();
        std::fs::remove_file(&out.ca_cert).unwrap();
        std::fs::remove_file(&out.ca_key).unwrap();
        // An index that recorded nothing counts as never issued.
        drop(crate::local::store::Store::open(&d.join(crate::local::store::DB_FILE)).unwrap());
        let before = snapshot(d);
        let err = bootstrap(d, &BootstrapOptions::default()).unwrap_err().to_string();
        for name in RA_FILES {
            assert!(err.contains(name), "{name} not named: {err}");
        }
        assert!(err.contains("Restore ca.pem and ca.key from backup") && err.contains("remove these files"), "{err}");
        assert_eq!(snapshot(d), before);
        // Only the NDES pair left (the single RA removed as once advised): refused, not a new CA that
        // then fails on the old signing RA and stays behind.
        std::fs::remove_file(&out.ra_cert).unwrap();
        std::fs::remove_file(&out.ra_key).unwrap();
        let before = snapshot(d);
        let err = bootstrap(d, &BootstrapOptions::default()).unwrap_err().to_string();
        assert!(err.contains(RA_SIGNING_CERT_FILE) && !err.contains("ra.pem,"), "{err}");
        assert_eq!(snapshot(d), before, "a new CA was written");
        for name in RA_FILES {
            let _ = std::fs::remove_file(d.join(name));
        }
        assert!(bootstrap(d, &BootstrapOptions::default()).unwrap().ca_created);
    }

    /// No CA, but the index holds certificates: never a new CA (it would
    /// orphan them), with or without RA files left; the message names the
    /// count and the CA, says to restore it, and does not offer removing
    /// the RA files.
    #[test]
    fn no_new_ca_over_certificates_of_another() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = bootstrap(d, &BootstrapOptions::default()).unwrap();
        let (ca_id, subject) = record_one_certificate(d, &out);
        let (ca_pem, ca_key) = (std::fs::read(&out.ca_cert).unwrap(), std::fs::read(&out.ca_key).unwrap());
        std::fs::remove_file(&out.ca_cert).unwrap();
        std::fs::remove_file(&out.ca_key).unwrap();
        for ra_files_left in [true, false] {
            if !ra_files_left {
                for name in RA_FILES {
                    std::fs::remove_file(d.join(name)).unwrap();
                }
            }
            let before = snapshot(d);
            let err = bootstrap(d, &BootstrapOptions::default()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("1 certificate(s) issued by CA {ca_id} ({subject})"))
                    && subject.starts_with("CN=scepd CA ")
                    && err.contains("local-ca.sqlite")
                    && err.contains("restore ca.pem and ca.key from backup"),
                "{err}"
            );
            assert!(!err.contains("remove"), "removal offered for a directory that issued: {err}");
            assert_eq!(err.contains("keep ra.pem, ra.key, ra-signing.pem"), ra_files_left, "{err}");
            assert_eq!(snapshot(d), before, "a refused bootstrap wrote into the directory");
        }
        // Restored from backup: the CA is back and issues the missing RAs.
        std::fs::write(&out.ca_cert, ca_pem).unwrap();
        std::fs::write(&out.ca_key, ca_key).unwrap();
        std::fs::set_permissions(&out.ca_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let restored = bootstrap(d, &BootstrapOptions::default()).unwrap();
        assert!(!restored.ca_created && restored.ra_created);
        // Elsewhere, the index named by IndexLocation::SqliteFile is the one read.
        let copy = tempfile::tempdir().unwrap();
        let opts = BootstrapOptions {
            index: IndexLocation::SqliteFile(d.join(crate::local::store::DB_FILE)),
            ..BootstrapOptions::default()
        };
        let err = bootstrap(copy.path(), &opts).unwrap_err().to_string();
        assert!(err.contains(&ca_id), "{err}");
        assert!(snapshot(copy.path()).is_empty());
    }

    #[test]
    fn missing_ra_is_reissued_by_the_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BootstrapOptions { ca_key: CaKeyType::EcP256, ..Default::default() };
        let first = bootstrap(dir.path(), &opts).unwrap();
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        std::fs::remove_file(&first.ra_cert).unwrap();
        std::fs::remove_file(&first.ra_key).unwrap();
        let second = bootstrap(dir.path(), &opts).unwrap();
        assert!(!second.ca_created && second.ra_created);
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_before);
        // A RA from another CA is refused.
        let other = tempfile::tempdir().unwrap();
        let foreign = bootstrap(other.path(), &opts).unwrap();
        std::fs::copy(&foreign.ra_cert, &second.ra_cert).unwrap();
        std::fs::copy(&foreign.ra_key, &second.ra_key).unwrap();
        let err = bootstrap(dir.path(), &opts).unwrap_err();
        assert!(err.to_string().contains("not issued by this data directory's CA"), "{err}");
    }
}
