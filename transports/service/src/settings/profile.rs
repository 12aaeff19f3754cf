//! `[[profile]]` entries, as written, and the parsers of their values
//! (`crate::wiring::profile` turns an entry into a running profile).
//!
//! ```toml
//! [[profile]]
//! name = "corp"                      # required; [a-z0-9-], 1..=63 chars; URL /scep/corp
//! issuer = "local"                   # "local" / "iss-local" (default: the built-in CA in data_dir),
//!                                    #   "none" (CA certs are served, every issuance is refused), or
//!                                    #   the id of an [[issuer]] (settings::issuers; needs ra_cert/ra_key)
//! challenge_mode = "static"          # or "one-time": single-use challenges minted through the admin API
//!                                    #   (POST /api/v1/admin/scep/challenges); no challenge_password then
//! challenge_password = "..."         # static challenge; required in static mode unless danger_no_challenge = true
//! danger_no_challenge = false        # true: anyone reaching the URL enrols (lab only)
//! ra_cert = "ra.pem"                 # RA certificate PEM; default (issuer local): the bootstrap RA
//! ra_key = "ra.key"                  # RA key PEM (RSA; ECDSA P-256/384 only beside ra_encryption_*), mode 0600; with ra_cert
//!                                    #   (ra_key / ra_encryption_key may be a pkcs11: URI instead: settings::pkcs11)
//! ra_encryption_cert = "ra-enc.pem"  # NDES arrangement: an encryption RA certificate (keyEncipherment)
//! ra_encryption_key = "ra-enc.key"   #   and its RSA key (0600); then ra_cert is the signing RA. Default:
//!                                    #   none (one RA signs and decrypts), except the bootstrap profile
//! ra_key_passphrase_file = "ra.pass" # passphrase (0600) of an ENCRYPTED PRIVATE KEY (PKCS#8, PBES2) in
//! ra_encryption_key_passphrase_file = "ra-enc.pass"  # ra_key / ra_encryption_key; default: unencrypted
//! reply_signature = "rsa-encryption" # CertRep signatureAlgorithm: "rsa-encryption" (default) or "mirror"
//! trust_requested_sid = false        # copy a CSR's SID extension (1.3.6.1.4.1.311.25.2); default false
//! url_aliases = ["/certsrv/mscep/mscep.dll"]  # extra paths serving this profile (+ "/pkiclient.exe");
//!                                    #   default: the default profile gets NDES's path unless claimed
//! ca_chain = "chain.pem"             # CA chain PEM, issuing CA first; default: the issuer's chain
//!                                    #   (required with issuer = "none")
//! ca_chain_shape = "ra-and-chain"    # or "ca-only" (GetCACert answer shape, RFC 8894 §4.2.1)
//! ciphers = ["des3", "aes128", "aes192", "aes256"]   # default; "des" only by explicit opt-in
//! digests = ["sha1", "sha256", "sha384", "sha512"]   # default
//! validity_days = 365                # issued certificate validity, 1..=3650; default 365
//! ekus = ["client-auth"]             # EKUs issued and allowed in CSRs: client-auth, server-auth,
//!                                    #   code-signing, email-protection or a dotted OID; default client-auth
//! min_rsa_bits = 2048                # smallest CSR RSA key, 2048..=16384; default 2048
//! renewal = true                     # renewal by an issued certificate; default true
//! allow_san_change = false           # renewed certificate may change SANs; default false
//! renewal_window_days = 30           # renewal by certificate only this close to its expiry, 1..=3650;
//!                                    #   default: any time while it is valid
//! signing_time_tolerance_secs = 3600 # max |signingTime - now|; default: signingTime not checked
//! max_message_size = 262144          # largest PKIMessage in bytes, 1024..=16 MiB; default 256 KiB
//! key_algorithms = ["rsa", "ec-p256", "ec-p384"]  # CSR key types accepted (badAlg otherwise); default all
//! max_ttl_days = 90                  # cap on the issued validity: min(validity_days, max_ttl_days)
//! san_types = ["dns", "email", "upn", "uri", "ip", "other"]  # SAN kinds a CSR may ask for; default all
//! san_dns_suffixes = [".corp.example"]  # dNSNames must lie below one of these; default any
//! mtls_enabled = false               # also serve /scep-mtls/<name>, requiring a client certificate
//! mtls_client_ca_trust_bundle_path = "clients-ca.pem"  # CA bundle the client certificate must chain to
//! intune_enabled = false             # Intune Connector challenges; intune_* keys: see crate::intune
//! ```
//!
//! `issuer = "iss-local"` is accepted as a synonym of `"local"` (the spec's issuer id).
//! The `intune_*` keys are documented in `docs/configuration.md`.
//!
//! Every invalid value is an error naming `profile[<name>].<key>` and why.

use std::path::{Path, PathBuf};

use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, ConfigError, KeyPolicy, RenewalPolicy, ReplySignaturePolicy,
    SanPolicy, SanType,
};
use scep_engine::crypto::{ContentCipher, DigestAlg};
use scep_engine::intune::{IntuneSettings, RateLimiter};
use scep_engine::issue::IssuancePolicy;
use scep_engine::oid;
use serde::Deserialize;

use super::{int_in, resolve};

/// Upper bound of `intune_replay_capacity` and `intune_rate_limit_devices`
/// (the replay cache at ten million entries is 256 to 512 MiB).
const MAX_TABLE_ENTRIES: i64 = 10_000_000;
/// Upper bound of `intune_per_device_rate_limit_24h` (each unit is one
/// timestamp cell per tracked device).
const MAX_RATE_LIMIT: u32 = 1_000;
/// Largest rate limiter table a configuration may ask for.
const MAX_TABLE_BYTES: usize = 2 << 30;

/// Largest accepted PKIMessage by default (256 KiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// One `[[profile]]` entry, as written (every key optional; see the module docs).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    /// `name`
    pub name: Option<String>,
    /// `issuer`: `local` or `none`.
    pub issuer: Option<String>,
    /// `challenge_mode`: `static` (default) or `one-time`.
    pub challenge_mode: Option<String>,
    /// `challenge_password`
    pub challenge_password: Option<String>,
    /// `danger_no_challenge`
    pub danger_no_challenge: Option<bool>,
    /// `ra_cert`
    pub ra_cert: Option<PathBuf>,
    /// `ra_key`
    pub ra_key: Option<PathBuf>,
    /// `ra_encryption_cert`: the NDES arrangement's encryption RA certificate.
    pub ra_encryption_cert: Option<PathBuf>,
    /// `ra_encryption_key`: its RSA key.
    pub ra_encryption_key: Option<PathBuf>,
    /// `ra_key_passphrase_file`: the passphrase of an encrypted `ra_key`.
    pub ra_key_passphrase_file: Option<PathBuf>,
    /// `ra_encryption_key_passphrase_file`: the passphrase of an encrypted `ra_encryption_key`.
    pub ra_encryption_key_passphrase_file: Option<PathBuf>,
    /// `reply_signature`: `rsa-encryption` or `mirror`.
    pub reply_signature: Option<String>,
    /// `trust_requested_sid`
    pub trust_requested_sid: Option<bool>,
    /// `url_aliases`: extra absolute paths that serve this profile.
    pub url_aliases: Option<Vec<String>>,
    /// Not a TOML key: set only on the bootstrap profile, which uses the
    /// local CA's NDES RA pair (signing RA + encryption RA) when it sets no
    /// RA files itself, and issues client-auth alone to a CSR that asks for
    /// no EKU (whatever else `ekus` allows).
    #[serde(skip)]
    pub bootstrap: bool,
    /// `ca_chain`
    pub ca_chain: Option<PathBuf>,
    /// `ca_chain_shape`: `ra-and-chain` or `ca-only`.
    pub ca_chain_shape: Option<String>,
    /// `ciphers`
    pub ciphers: Option<Vec<String>>,
    /// `digests`
    pub digests: Option<Vec<String>>,
    /// `validity_days`
    pub validity_days: Option<i64>,
    /// `ekus`
    pub ekus: Option<Vec<String>>,
    /// `min_rsa_bits`
    pub min_rsa_bits: Option<i64>,
    /// `renewal`
    pub renewal: Option<bool>,
    /// `allow_san_change`
    pub allow_san_change: Option<bool>,
    /// `renewal_window_days`: renewal by certificate only within this many
    /// days before its expiry (unset: any time while it is valid).
    pub renewal_window_days: Option<i64>,
    /// `signing_time_tolerance_secs`
    pub signing_time_tolerance_secs: Option<i64>,
    /// `max_message_size`
    pub max_message_size: Option<i64>,
    /// `key_algorithms`: `rsa`, `ec-p256`, `ec-p384`.
    pub key_algorithms: Option<Vec<String>>,
    /// `max_ttl_days`: cap on the issued validity.
    pub max_ttl_days: Option<i64>,
    /// `san_types`: allowed subjectAltName kinds.
    pub san_types: Option<Vec<String>>,
    /// `san_dns_suffixes`: allowed dNSName suffixes.
    pub san_dns_suffixes: Option<Vec<String>>,
    /// `mtls_enabled`: serve `/scep-mtls/<name>` (client certificate required).
    pub mtls_enabled: Option<bool>,
    /// `mtls_client_ca_trust_bundle_path`: PEM bundle of client CAs.
    pub mtls_client_ca_trust_bundle_path: Option<PathBuf>,
    /// `intune_enabled` (see `crate::intune` for the `intune_*` keys).
    pub intune_enabled: Option<bool>,
    /// `intune_connector_cert_path`: PEM bundle of the Connector signing certificates.
    pub intune_connector_cert_path: Option<PathBuf>,
    /// `intune_audience`
    pub intune_audience: Option<String>,
    /// `intune_challenge_validity`: duration, e.g. `"60m"`.
    pub intune_challenge_validity: Option<String>,
    /// `intune_clock_skew_tolerance`: duration, e.g. `"60s"`.
    pub intune_clock_skew_tolerance: Option<String>,
    /// `intune_per_device_rate_limit_24h` (0 disables).
    pub intune_per_device_rate_limit_24h: Option<u32>,
    /// `intune_replay_capacity`: live nonces the replay cache holds.
    pub intune_replay_capacity: Option<i64>,
    /// `intune_rate_limit_devices`: devices the rate limiter tracks at once.
    pub intune_rate_limit_devices: Option<i64>,
    /// `intune_renewal_by_certificate`: an Intune profile accepts renewal by
    /// certificate (default false: Intune renews with a fresh challenge).
    pub intune_renewal_by_certificate: Option<bool>,
    /// `intune_mode`: `connector` (the default: Connector-signed challenges)
    /// or `api` (Microsoft's SCEP validation API, [`IntuneApiSettings`]).
    pub intune_mode: Option<String>,
    /// `intune_tenant_id`: Entra tenant GUID or verified domain (API mode).
    pub intune_tenant_id: Option<String>,
    /// `intune_client_id`: the Entra application (client) id (API mode).
    pub intune_client_id: Option<String>,
    /// `intune_client_secret_path`: file holding the client secret, mode 0600.
    pub intune_client_secret_path: Option<PathBuf>,
    /// `intune_client_cert_path`: certificate credential (PEM), with `intune_client_key_path`.
    pub intune_client_cert_path: Option<PathBuf>,
    /// `intune_client_key_path`: the certificate credential's RSA key (PEM, mode 0600).
    pub intune_client_key_path: Option<PathBuf>,
    /// `intune_authority_url`: Entra authority (default `https://login.microsoftonline.com/`).
    pub intune_authority_url: Option<String>,
    /// `intune_graph_url`: Microsoft Graph root (default `https://graph.microsoft.com/`).
    pub intune_graph_url: Option<String>,
    /// `intune_resource_url`: Intune resource (default `https://api.manage.microsoft.com/`).
    pub intune_resource_url: Option<String>,
    /// `intune_api_ca_bundle_path`: extra trust roots (PEM) for the three hops.
    pub intune_api_ca_bundle_path: Option<PathBuf>,
    /// `intune_revocation_poll_interval`: duration, `0` = off (default `15m`).
    pub intune_revocation_poll_interval: Option<String>,
    /// `intune_compliance_check`: `off` (default), `graph`, or a webhook URL.
    pub intune_compliance_check: Option<String>,
    /// `intune_return_before_notification`: return the certificate without
    /// waiting for Intune's answer to the success notification (default false).
    pub intune_return_before_notification: Option<bool>,
    /// `intune_api_timeout`: longest wait for one answer of any hop (default `30s`).
    pub intune_api_timeout: Option<String>,
}

/// Whether `name` is a valid profile name: `[a-z0-9-]{1,63}`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A profile's `mtls_*` keys, validated: serve `/scep-mtls/<name>`, requiring
/// a client certificate that chains to the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtlsSettings {
    /// The client CA bundle (PEM), resolved against the configuration file.
    pub bundle_path: PathBuf,
    /// The key that named it (`profile[<name>].mtls_client_ca_trust_bundle_path`), for errors.
    pub bundle_key: String,
}

/// A profile's `intune_*` keys, validated (see `crate::intune`).
#[derive(Clone, Debug)]
pub struct IntuneProfileSettings {
    /// The Connector certificate bundle, resolved against the configuration file.
    pub connector_cert_path: PathBuf,
    /// The validator's settings.
    pub validator: IntuneSettings,
}

/// Which issuer a profile names (`issuer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerRef {
    /// `local` / `iss-local` (the default): the built-in CA in the data directory.
    Local,
    /// `none`: CA certificates are served, every issuance is refused.
    None,
    /// The id of an `[[issuer]]` entry.
    Named(String),
}

/// A `[[profile]]` entry, validated: every key that needs no file, no issuer
/// and no clock (`crate::wiring::profile` reads the files and builds the engine).
#[derive(Clone)]
pub struct ProfileSettings {
    /// `name`
    pub name: String,
    /// `issuer`
    pub issuer: IssuerRef,
    /// `challenge_mode`, `challenge_password` / `danger_no_challenge`
    pub challenge: ChallengePolicy,
    /// `ra_cert`, `ra_key` (resolved); `None`: the issuer's default RA.
    pub ra_files: Option<(PathBuf, PathBuf)>,
    /// `ra_encryption_cert`, `ra_encryption_key` (resolved): the NDES
    /// arrangement's encryption RA; `None`: one RA signs and decrypts (or, on
    /// the bootstrap profile, the local CA's NDES pair: see
    /// [`ProfileSettings::bootstrap`]).
    pub ra_encryption_files: Option<(PathBuf, PathBuf)>,
    /// `ra_key_passphrase_file` (resolved): the file holding the passphrase
    /// of an encrypted (PKCS #8 `ENCRYPTED PRIVATE KEY`) `ra_key`.
    pub ra_key_passphrase_file: Option<PathBuf>,
    /// `ra_encryption_key_passphrase_file` (resolved), for `ra_encryption_key`.
    pub ra_encryption_key_passphrase_file: Option<PathBuf>,
    /// The bootstrap profile: with no RA files of its own it uses the local
    /// CA's NDES RA pair (`ra-signing.*`, `ra-encryption.*`).
    pub bootstrap: bool,
    /// EKUs issued to a CSR that asks for none: `ekus`, except on the
    /// bootstrap profile (client-auth only: it allows server-auth for the
    /// clients that ask for it, but does not hand it out unasked).
    pub issued_ekus: Vec<Vec<u8>>,
    /// `reply_signature`
    pub reply_signature: ReplySignaturePolicy,
    /// `trust_requested_sid`
    pub trust_requested_sid: bool,
    /// `url_aliases`, validated (absolute, RFC 3986 path characters, no
    /// trailing `/`, not under scepd's own routes); the default profile's
    /// `/certsrv/mscep/mscep.dll` is added by `crate::wiring` when no profile
    /// claims it and this profile does not set the key (`None`).
    pub url_aliases: Option<Vec<String>>,
    /// `ca_chain` (resolved); `None`: the issuer's chain.
    pub ca_chain: Option<PathBuf>,
    /// `ca_chain_shape`
    pub ca_cert_shape: CaCertShape,
    /// `ciphers`, `digests`
    pub algorithms: AlgorithmPolicy,
    /// `key_algorithms`, `min_rsa_bits`
    pub keys: KeyPolicy,
    /// `renewal`, `allow_san_change`
    pub renewal: RenewalPolicy,
    /// `validity_days` capped by `max_ttl_days`
    pub validity_days: i64,
    /// `ekus`, as OID contents bytes (issued and allowed in CSRs)
    pub ekus: Vec<Vec<u8>>,
    /// `san_types`, `san_dns_suffixes`
    pub sans: SanPolicy,
    /// `signing_time_tolerance_secs`
    pub signing_time_tolerance: Option<i64>,
    /// `max_message_size`
    pub max_message_size: usize,
    /// `mtls_*`
    pub mtls: Option<MtlsSettings>,
    /// `intune_*` in connector mode
    pub intune: Option<IntuneProfileSettings>,
    /// `intune_*` in API mode (`intune_mode = "api"`)
    pub intune_api: Option<IntuneApiSettings>,
    /// `intune_compliance_check` (gate 9), in either Intune mode
    pub intune_compliance: Option<ComplianceSettings>,
}

impl std::fmt::Debug for ProfileSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The challenge password is a secret: never printed.
        f.debug_struct("ProfileSettings")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("ra_files", &self.ra_files)
            .field("ra_encryption_files", &self.ra_encryption_files)
            .field("ra_key_passphrase_file", &self.ra_key_passphrase_file)
            .field("ra_encryption_key_passphrase_file", &self.ra_encryption_key_passphrase_file)
            .field("url_aliases", &self.url_aliases)
            .field("ca_chain", &self.ca_chain)
            .field("mtls", &self.mtls)
            .field("intune", &self.intune.is_some())
            .field("intune_api", &self.intune_api)
            .field("intune_compliance", &self.intune_compliance)
            .finish_non_exhaustive()
    }
}

impl ProfileSection {
    /// Validates this entry (every key that needs no file, no issuer and no
    /// clock) into [`ProfileSettings`]. `index` (0-based) names the entry
    /// until its name is known; relative paths resolve against `base`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `profile[<name>].<key>` and the reason.
    pub fn validate(&self, index: usize, base: Option<&Path>) -> Result<ProfileSettings, ConfigError> {
        let name = self.validated_name(index)?.to_string();
        let k = |key: &str| format!("profile[{name}].{key}");
        let err = |key: &str, why: String| ConfigError(format!("{}: {why}", k(key)));

        let one_time = match self.challenge_mode.as_deref() {
            None | Some("static") => false,
            Some("one-time") => true,
            Some(other) => {
                return Err(err("challenge_mode", format!("{other:?} is not one of \"static\", \"one-time\"")));
            }
        };
        let intune_api = self.intune_api_settings(&name, base)?;
        let intune_compliance = self.intune_compliance_settings(&name, base, intune_api.as_ref())?;
        let challenge = match (&self.challenge_password, self.danger_no_challenge.unwrap_or(false), one_time) {
            _ if intune_api.is_some() => {
                if self.challenge_password.is_some() {
                    return Err(err(
                        "challenge_password",
                        "must not be set when intune_mode = \"api\" (Intune validates every challenge)".into(),
                    ));
                }
                if one_time || self.danger_no_challenge.unwrap_or(false) {
                    let key = if one_time { "challenge_mode" } else { "danger_no_challenge" };
                    return Err(err(key, "cannot be combined with intune_mode = \"api\"".into()));
                }
                ChallengePolicy::IntuneApi
            }
            (Some(_), _, true) => {
                return Err(err(
                    "challenge_password",
                    "must not be set when challenge_mode = \"one-time\" (challenges are minted through the admin API)"
                        .into(),
                ));
            }
            (None, true, true) => {
                return Err(err("danger_no_challenge", "cannot be true when challenge_mode = \"one-time\"".into()));
            }
            (None, false, true) => ChallengePolicy::OneTime,
            (Some(_), true, false) => {
                return Err(err("danger_no_challenge", "cannot be true while challenge_password is set".into()));
            }
            (Some(p), false, false) if p.is_empty() => {
                return Err(err("challenge_password", "must not be empty".into()));
            }
            (Some(p), false, false) => ChallengePolicy::Static(p.clone()),
            (None, true, false) => ChallengePolicy::DangerNone,
            (None, false, false) => {
                return Err(err(
                    "challenge_password",
                    "required (or set challenge_mode = \"one-time\", or danger_no_challenge = true for lab use)".into(),
                ));
            }
        };

        let ca_cert_shape = match self.ca_chain_shape.as_deref() {
            None | Some("ra-and-chain") => CaCertShape::RaAndChain,
            Some("ca-only") => CaCertShape::CaOnly,
            Some(other) => {
                return Err(err("ca_chain_shape", format!("{other:?} is not one of \"ra-and-chain\", \"ca-only\"")));
            }
        };

        let ciphers = match &self.ciphers {
            None => AlgorithmPolicy::default().ciphers,
            Some(list) => parse_list(list, cipher).map_err(|why| err("ciphers", why))?,
        };
        let digests = match &self.digests {
            None => AlgorithmPolicy::default().digests,
            Some(list) => parse_list(list, digest).map_err(|why| err("digests", why))?,
        };
        let ekus = match &self.ekus {
            None => IssuancePolicy::default().ekus,
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for s in list {
                    out.push(eku(s).map_err(|why| err("ekus", why))?);
                }
                out
            }
        };
        let validity_days: i64 = int_in(&k("validity_days"), self.validity_days, 1, 3650, 365)?;
        // Max TTL: the smaller of the profile's validity and its cap wins.
        let validity_days = validity_days.min(int_in(&k("max_ttl_days"), self.max_ttl_days, 1, 3650, 3650)?);
        let key_algorithms = match &self.key_algorithms {
            None => vec![KeyAlg::Rsa, KeyAlg::P256, KeyAlg::P384],
            Some(list) => parse_list(list, key_alg).map_err(|why| err("key_algorithms", why))?,
        };
        let san_types = match &self.san_types {
            None => None,
            Some(list) if list.is_empty() => Some(Vec::new()),
            Some(list) => Some(parse_list(list, san_type).map_err(|why| err("san_types", why))?),
        };
        let dns_suffixes = match &self.san_dns_suffixes {
            None => Vec::new(),
            Some(list) => {
                for s in list {
                    let bare = s.strip_prefix('.').unwrap_or(s);
                    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
                        return Err(err("san_dns_suffixes", format!("{s:?} is not a DNS suffix")));
                    }
                }
                if list.is_empty() {
                    return Err(err("san_dns_suffixes", "must list at least one suffix (or be left out)".into()));
                }
                list.clone()
            }
        };
        let mtls = self.mtls_settings(&name, base)?;
        let min_rsa_bits: usize = int_in(&k("min_rsa_bits"), self.min_rsa_bits, 2048, 16384, 2048)?;
        let max_message_size: usize =
            int_in(&k("max_message_size"), self.max_message_size, 1024, 16 << 20, DEFAULT_MAX_MESSAGE_SIZE)?;
        let signing_time_tolerance = match self.signing_time_tolerance_secs {
            None => None,
            Some(v) => Some(int_in::<i64>(&k("signing_time_tolerance_secs"), Some(v), 1, 30 * 86_400, 0)?),
        };

        let issuer = match self.issuer.as_deref() {
            None | Some("local" | scep_issuers::LOCAL_ISSUER_ID) => IssuerRef::Local,
            Some("none") => IssuerRef::None,
            Some(id) => IssuerRef::Named(id.to_string()),
        };
        let key_ref = |key: &str, path: &Path| -> Result<PathBuf, ConfigError> {
            match path.to_str().filter(|t| scep_issuers::pkcs11::is_pkcs11_uri(t)) {
                Some(uri) => {
                    scep_issuers::pkcs11::KeyUri::parse(uri).map_err(|e| err(key, e.0))?;
                    Ok(path.to_path_buf())
                }
                None => Ok(resolve(base, path)),
            }
        };
        let ra_files = match (&self.ra_cert, &self.ra_key) {
            (Some(c), Some(kp)) => Some((resolve(base, c), key_ref("ra_key", kp)?)),
            (Some(_), None) => return Err(err("ra_key", "required when ra_cert is set".into())),
            (None, Some(_)) => return Err(err("ra_cert", "required when ra_key is set".into())),
            (None, None) => None,
        };
        let passphrase_file = |file: &Option<PathBuf>, name: &str, key: &str, key_set: bool| match file {
            Some(_) if !key_set => Err(err(name, format!("requires {key} (the key it decrypts)"))),
            Some(f) => Ok(Some(resolve(base, f))),
            None => Ok(None),
        };
        let ra_key_passphrase_file =
            passphrase_file(&self.ra_key_passphrase_file, "ra_key_passphrase_file", "ra_key", self.ra_key.is_some())?;
        let ra_encryption_key_passphrase_file = passphrase_file(
            &self.ra_encryption_key_passphrase_file,
            "ra_encryption_key_passphrase_file",
            "ra_encryption_key",
            self.ra_encryption_key.is_some(),
        )?;
        let ra_encryption_files = match (&self.ra_encryption_cert, &self.ra_encryption_key) {
            (Some(c), Some(kp)) => Some((resolve(base, c), key_ref("ra_encryption_key", kp)?)),
            (Some(_), None) => {
                return Err(err("ra_encryption_key", "required when ra_encryption_cert is set".into()));
            }
            (None, Some(_)) => {
                return Err(err("ra_encryption_cert", "required when ra_encryption_key is set".into()));
            }
            (None, None) => None,
        };
        let reply_signature = match self.reply_signature.as_deref() {
            None | Some("rsa-encryption") => ReplySignaturePolicy::RsaEncryption,
            Some("mirror") => ReplySignaturePolicy::MirrorRequest,
            Some(other) => {
                return Err(err("reply_signature", format!("{other:?} is not one of \"rsa-encryption\", \"mirror\"")));
            }
        };
        let url_aliases = match &self.url_aliases {
            None => None,
            Some(list) => {
                let mut out: Vec<String> = Vec::with_capacity(list.len());
                for alias in list {
                    let normal = url_alias(alias).map_err(|why| err("url_aliases", why))?;
                    if out.contains(&normal) {
                        return Err(err("url_aliases", format!("{alias:?} is listed twice")));
                    }
                    out.push(normal);
                }
                Some(out)
            }
        };
        let issued_ekus = if self.bootstrap { vec![oid::KP_CLIENT_AUTH.to_vec()] } else { ekus.clone() };
        let ca_chain = self.ca_chain.as_deref().map(|p| resolve(base, p));
        let intune = self.intune_settings(&name, base)?;
        Ok(ProfileSettings {
            challenge,
            ca_cert_shape,
            algorithms: AlgorithmPolicy { ciphers, digests },
            keys: KeyPolicy {
                min_rsa_bits: key_algorithms.contains(&KeyAlg::Rsa).then_some(min_rsa_bits),
                allow_p256: key_algorithms.contains(&KeyAlg::P256),
                allow_p384: key_algorithms.contains(&KeyAlg::P384),
            },
            renewal: RenewalPolicy {
                enabled: self.renewal.unwrap_or(true),
                allow_san_change: self.allow_san_change.unwrap_or(false),
                window_secs: match self.renewal_window_days {
                    None => None,
                    Some(days) => Some(int_in(&k("renewal_window_days"), Some(days), 1, 3650, 3650)? * 86_400),
                },
                on_intune_profile: self.intune_renewal_by_certificate.unwrap_or(false),
            },
            validity_days,
            ekus,
            sans: SanPolicy { allowed_types: san_types, dns_suffixes },
            signing_time_tolerance,
            max_message_size,
            issuer,
            ra_files,
            ra_encryption_files,
            ra_key_passphrase_file,
            ra_encryption_key_passphrase_file,
            bootstrap: self.bootstrap,
            issued_ekus,
            reply_signature,
            trust_requested_sid: self.trust_requested_sid.unwrap_or(false),
            url_aliases,
            ca_chain,
            mtls,
            intune,
            intune_api,
            intune_compliance,
            name,
        })
    }

    /// The profile name after validation, for `index` (0-based) in the file.
    ///
    /// # Errors
    /// When absent or not `[a-z0-9-]{1,63}`.
    pub fn validated_name(&self, index: usize) -> Result<&str, ConfigError> {
        let name = self.name.as_deref().ok_or_else(|| ConfigError(format!("profile[{index}].name: required")))?;
        if !is_valid_name(name) {
            return Err(ConfigError(format!(
                "profile[{index}].name: {name:?} is not a valid profile name (1 to 63 of a-z, 0-9, '-')"
            )));
        }
        Ok(name)
    }

    /// The `mtls_enabled` / `mtls_client_ca_trust_bundle_path` keys of the
    /// profile `name`; `None` when mTLS is off. Relative paths resolve against
    /// `base`.
    ///
    /// # Errors
    /// A bundle without `mtls_enabled = true`, or `mtls_enabled = true`
    /// without a bundle, naming the key.
    pub fn mtls_settings(&self, name: &str, base: Option<&Path>) -> Result<Option<MtlsSettings>, ConfigError> {
        let enabled_key = format!("profile[{name}].mtls_enabled");
        let bundle_key = format!("profile[{name}].mtls_client_ca_trust_bundle_path");
        let bundle_path = match (self.mtls_enabled.unwrap_or(false), self.mtls_client_ca_trust_bundle_path.as_deref()) {
            (false, None) => return Ok(None),
            (false, Some(_)) => {
                return Err(ConfigError(format!(
                    "{enabled_key}: must be true when {bundle_key} is set (or remove the bundle)"
                )));
            }
            (true, None) => return Err(ConfigError(format!("{bundle_key}: required when mtls_enabled = true"))),
            (true, Some(p)) => resolve(base, p),
        };
        Ok(Some(MtlsSettings { bundle_path, bundle_key }))
    }

    /// The `intune_*` keys of the profile `name`; `None` when Intune is
    /// disabled. Relative paths resolve against `base`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `profile[<name>].intune_*` and the reason.
    pub fn intune_settings(
        &self,
        name: &str,
        base: Option<&Path>,
    ) -> Result<Option<IntuneProfileSettings>, ConfigError> {
        let k = |key: &str| format!("profile[{name}].{key}");
        let err = |key: &str, why: &str| ConfigError(format!("{}: {why}", k(key)));
        let any_key = self.intune_connector_cert_path.is_some()
            || self.intune_audience.is_some()
            || self.intune_challenge_validity.is_some()
            || self.intune_clock_skew_tolerance.is_some()
            || self.intune_per_device_rate_limit_24h.is_some()
            || self.intune_replay_capacity.is_some()
            || self.intune_rate_limit_devices.is_some()
            || self.intune_renewal_by_certificate.is_some();
        if self.intune_mode.as_deref() == Some("api") {
            return Ok(None);
        }
        match self.intune_enabled {
            Some(true) => {}
            Some(false) => return Ok(None),
            None if any_key => {
                return Err(err("intune_enabled", "required (true or false) when other intune_* keys are set"));
            }
            None => return Ok(None),
        }

        let defaults = IntuneSettings::default();
        let duration = |key: &str, v: &Option<String>, default: i64| match v {
            None => Ok(default),
            Some(text) => parse_duration(&k(key), text),
        };
        let settings = IntuneSettings {
            audience: match &self.intune_audience {
                Some(a) if a.trim().is_empty() => {
                    return Err(err("intune_audience", "is empty; remove the key to skip the audience check"));
                }
                other => other.clone(),
            },
            challenge_validity_secs: duration(
                "intune_challenge_validity",
                &self.intune_challenge_validity,
                defaults.challenge_validity_secs,
            )?,
            clock_skew_tolerance_secs: duration(
                "intune_clock_skew_tolerance",
                &self.intune_clock_skew_tolerance,
                defaults.clock_skew_tolerance_secs,
            )?,
            per_device_rate_limit_24h: self
                .intune_per_device_rate_limit_24h
                .unwrap_or(defaults.per_device_rate_limit_24h),
            replay_capacity: int_in(
                &k("intune_replay_capacity"),
                self.intune_replay_capacity,
                1,
                MAX_TABLE_ENTRIES,
                defaults.replay_capacity,
            )?,
            rate_limit_devices: int_in(
                &k("intune_rate_limit_devices"),
                self.intune_rate_limit_devices,
                1,
                MAX_TABLE_ENTRIES,
                defaults.rate_limit_devices,
            )?,
        };
        if settings.challenge_validity_secs <= 0 {
            return Err(err("intune_challenge_validity", "must be positive (it is also the replay TTL)"));
        }
        if settings.clock_skew_tolerance_secs >= settings.challenge_validity_secs {
            return Err(ConfigError(format!(
                "{}: {}s must be less than {} ({}s)",
                k("intune_clock_skew_tolerance"),
                settings.clock_skew_tolerance_secs,
                k("intune_challenge_validity"),
                settings.challenge_validity_secs
            )));
        }

        let path = self
            .intune_connector_cert_path
            .as_deref()
            .ok_or_else(|| err("intune_connector_cert_path", "required when intune_enabled = true"))?;
        let connector_cert_path = resolve(base, path);

        let limit = settings.per_device_rate_limit_24h;
        if limit > MAX_RATE_LIMIT {
            return Err(err(
                "intune_per_device_rate_limit_24h",
                &format!("{limit} is out of range (allowed 0..={MAX_RATE_LIMIT})"),
            ));
        }
        let limiter_bytes = RateLimiter::table_bytes(limit, settings.rate_limit_devices);
        if limiter_bytes > MAX_TABLE_BYTES {
            return Err(ConfigError(format!(
                "{}: {} devices at {} enrolments per 24 h would need a {} MiB rate limiter (at most {} MiB): \
                 lower it or {}",
                k("intune_rate_limit_devices"),
                settings.rate_limit_devices,
                limit,
                limiter_bytes >> 20,
                MAX_TABLE_BYTES >> 20,
                k("intune_per_device_rate_limit_24h")
            )));
        }
        Ok(Some(IntuneProfileSettings { connector_cert_path, validator: settings }))
    }
}

/// NDES's enrolment URL path, served by the default profile unless a profile
/// claims it in `url_aliases`.
pub const NDES_PATH: &str = "/certsrv/mscep/mscep.dll";

/// Path prefixes scepd routes itself; an alias may not equal one or lie below it.
const RESERVED_PATHS: &[&str] = &["/scep", "/scep-mtls", "/api", "/ui", "/pki", "/metrics", "/healthz"];

/// Validates one `url_aliases` entry and returns it without a trailing `/`:
/// an absolute path (RFC 3986 §3.3 `path-absolute`: segments of unreserved,
/// percent-encoded, sub-delims, `:` and `@` characters; no query, fragment,
/// empty, `.` or `..` segment), not ending in `/pkiclient.exe` (that suffix
/// is always served) and not equal to or below one of scepd's own routes
/// (`/scep`, `/scep-mtls`, `/api`, `/ui`, `/pki`, `/metrics`, `/healthz`).
///
/// # Errors
/// Why the alias is refused.
pub fn url_alias(alias: &str) -> Result<String, String> {
    let trimmed = alias.strip_suffix('/').unwrap_or(alias);
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Err(format!("{alias:?} is not an absolute path (it must start with '/')"));
    };
    if rest.is_empty() {
        return Err(format!("{alias:?}: the root path cannot be an alias"));
    }
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!("{alias:?} has an empty, '.' or '..' segment"));
        }
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(format!("{alias:?} has a '%' not followed by two hex digits"));
                }
                i += 3;
                continue;
            }
            let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
            if !allowed {
                return Err(format!(
                    "{alias:?} has {:?}, which is not an RFC 3986 path character (percent-encode it)",
                    char::from(b)
                ));
            }
            i += 1;
        }
    }
    if trimmed.ends_with("/pkiclient.exe") {
        return Err(format!("{alias:?}: leave out \"/pkiclient.exe\" (it is served below every alias)"));
    }
    for reserved in RESERVED_PATHS {
        if trimmed == *reserved || trimmed.strip_prefix(reserved).is_some_and(|r| r.starts_with('/')) {
            return Err(format!("{alias:?} collides with scepd's own route {reserved}"));
        }
    }
    Ok(trimmed.to_string())
}

/// Parses a non-empty list of names.
fn parse_list<T: PartialEq>(list: &[String], one: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    if list.is_empty() {
        return Err("must list at least one value".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let v = one(s)?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// A content cipher of `ciphers`.
///
/// # Errors
/// An unknown name, listing the known ones.
fn cipher(s: &str) -> Result<ContentCipher, String> {
    Ok(match s {
        // Single DES is broken; it is accepted only because it is named here explicitly.
        "des" => ContentCipher::DesCbc,
        "des3" => ContentCipher::DesEde3Cbc,
        "aes128" => ContentCipher::Aes128Cbc,
        "aes192" => ContentCipher::Aes192Cbc,
        "aes256" => ContentCipher::Aes256Cbc,
        other => return Err(format!("{other:?} is not one of \"des\", \"des3\", \"aes128\", \"aes192\", \"aes256\"")),
    })
}

/// A CSR key type of `key_algorithms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAlg {
    /// `rsa`
    Rsa,
    /// `ec-p256`
    P256,
    /// `ec-p384`
    P384,
}

/// A CSR key type of `key_algorithms`.
///
/// # Errors
/// An unknown name, listing the known ones.
fn key_alg(s: &str) -> Result<KeyAlg, String> {
    Ok(match s {
        "rsa" => KeyAlg::Rsa,
        "ec-p256" => KeyAlg::P256,
        "ec-p384" => KeyAlg::P384,
        other => return Err(format!("{other:?} is not one of \"rsa\", \"ec-p256\", \"ec-p384\"")),
    })
}

/// A subjectAltName kind of `san_types`.
///
/// # Errors
/// An unknown name, listing the known ones.
fn san_type(s: &str) -> Result<SanType, String> {
    Ok(match s {
        "dns" => SanType::Dns,
        "email" => SanType::Email,
        "upn" => SanType::Upn,
        "uri" => SanType::Uri,
        "ip" => SanType::Ip,
        "other" => SanType::Other,
        other => {
            return Err(format!("{other:?} is not one of \"dns\", \"email\", \"upn\", \"uri\", \"ip\", \"other\""));
        }
    })
}

/// A message digest of `digests`.
///
/// # Errors
/// An unknown name, listing the known ones.
fn digest(s: &str) -> Result<DigestAlg, String> {
    Ok(match s {
        "sha1" => DigestAlg::Sha1,
        "sha256" => DigestAlg::Sha256,
        "sha384" => DigestAlg::Sha384,
        "sha512" => DigestAlg::Sha512,
        other => return Err(format!("{other:?} is not one of \"sha1\", \"sha256\", \"sha384\", \"sha512\"")),
    })
}

/// An EKU by name or dotted OID, as OID contents bytes.
fn eku(s: &str) -> Result<Vec<u8>, String> {
    Ok(match s {
        "client-auth" => oid::KP_CLIENT_AUTH.to_vec(),
        "server-auth" => oid::KP_SERVER_AUTH.to_vec(),
        "code-signing" => oid::KP_CODE_SIGNING.to_vec(),
        "email-protection" => oid::KP_EMAIL_PROTECTION.to_vec(),
        other => dotted_oid(other).ok_or_else(|| {
            format!(
                "{other:?} is neither a known EKU (client-auth, server-auth, code-signing, email-protection) \
                 nor a dotted OID"
            )
        })?,
    })
}

/// Encodes a dotted OID (X.690 §8.19) into its DER contents bytes.
fn dotted_oid(s: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = s.split('.').map(|a| a.parse().ok()).collect::<Option<_>>()?;
    let (&first, &second) = (arcs.first()?, arcs.get(1)?);
    if first > 2 || (first < 2 && second >= 40) {
        return None;
    }
    let mut out = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        out.extend(tmp.iter().rev());
    };
    push(first.checked_mul(40)?.checked_add(second)?);
    for &a in &arcs[2..] {
        push(a);
    }
    Some(out)
}

/// Parses a duration (`"60m"`, `"3600s"`, `"1h"`, `"1h30m"`) into seconds.
///
/// # Errors
/// Naming `key` when the text is empty, has no unit, an unknown unit (only
/// `h`, `m`, `s`), or overflows.
pub fn parse_duration(key: &str, text: &str) -> Result<i64, ConfigError> {
    let bad = |why: &str| {
        ConfigError(format!("{key}: {text:?} is not a duration ({why}; e.g. \"60m\", \"3600s\", \"1h30m\")"))
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let (number, tail) = rest.split_at(digits);
        let value: i64 = number.parse().map_err(|_| bad("number too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            "" => return Err(bad("a unit (h, m or s) is required")),
            _ => return Err(bad("units are h, m and s")),
        };
        total = value.checked_mul(scale).and_then(|v| total.checked_add(v)).ok_or_else(|| bad("too large"))?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["default", "corp", "iot-2", "a", &"x".repeat(63)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Corp", "pkiclient.exe", "a_b", "a/b", "é", &"x".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn url_aliases_are_absolute_rfc3986_paths_outside_scepd_routes() {
        for (ok, want) in [
            ("/certsrv/mscep/mscep.dll", "/certsrv/mscep/mscep.dll"),
            ("/enroll/", "/enroll"),
            ("/a%20b/c~d_e.f-g!$&'()*+,;=:@", "/a%20b/c~d_e.f-g!$&'()*+,;=:@"),
            ("/scepx", "/scepx"),
            ("/apis", "/apis"),
        ] {
            assert_eq!(url_alias(ok).as_deref(), Ok(want), "{ok}");
        }
        for bad in [
            "",
            "/",
            "certsrv",
            "//x",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a b",
            "/a?b",
            "/a#b",
            "/a%2",
            "/a%zz",
            "/é",
            "/x/pkiclient.exe",
            "/scep",
            "/scep/x",
            "/scep-mtls/corp",
            "/api",
            "/api/v1/admin/x",
            "/ui",
            "/ui/scep",
            "/metrics",
            "/healthz",
            "/healthz/",
        ] {
            assert!(url_alias(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ndes_ra_pair_reply_signature_and_aliases_are_validated_naming_the_key() {
        let base = ProfileSection {
            name: Some("p".into()),
            challenge_password: Some("pw".into()),
            ..ProfileSection::default()
        };
        let s = base.validate(0, None).unwrap();
        assert_eq!(
            (s.ra_encryption_files, s.reply_signature, s.trust_requested_sid, s.url_aliases),
            (None, ReplySignaturePolicy::RsaEncryption, false, None),
            "defaults"
        );
        let s = ProfileSection {
            ra_encryption_cert: Some("enc.pem".into()),
            ra_encryption_key: Some("enc.key".into()),
            reply_signature: Some("mirror".into()),
            trust_requested_sid: Some(true),
            url_aliases: Some(vec!["/certsrv/mscep/mscep.dll/".into()]),
            ..base.clone()
        }
        .validate(0, Some(Path::new("/etc/scepd")))
        .unwrap();
        assert_eq!(s.ra_encryption_files, Some(("/etc/scepd/enc.pem".into(), "/etc/scepd/enc.key".into())));
        assert_eq!(s.reply_signature, ReplySignaturePolicy::MirrorRequest);
        assert!(s.trust_requested_sid);
        assert_eq!(s.url_aliases, Some(vec![NDES_PATH.to_string()]));
        type Edit = fn(&mut ProfileSection);
        let cases: &[(Edit, &str)] = &[
            (|s| s.ra_encryption_cert = Some("enc.pem".into()), "profile[p].ra_encryption_key: required"),
            (|s| s.ra_encryption_key = Some("enc.key".into()), "profile[p].ra_encryption_cert: required"),
            (|s| s.reply_signature = Some("sha256".into()), "profile[p].reply_signature: "),
            (|s| s.url_aliases = Some(vec!["relative".into()]), "profile[p].url_aliases: "),
            (|s| s.url_aliases = Some(vec!["/scep/x".into()]), "profile[p].url_aliases: "),
            (|s| s.url_aliases = Some(vec!["/a".into(), "/a/".into()]), "profile[p].url_aliases: "),
        ];
        for (edit, want) in cases {
            let mut s = base.clone();
            edit(&mut s);
            let e = s.validate(0, None).unwrap_err();
            assert!(e.0.starts_with(want), "{e} does not start with {want}");
        }
    }

    #[test]
    fn dotted_oids_encode_as_der() {
        assert_eq!(dotted_oid("1.3.6.1.5.5.7.3.2").unwrap(), oid::KP_CLIENT_AUTH);
        assert_eq!(dotted_oid("1.3.6.1.4.1.311.20.2.3").unwrap(), oid::MS_UPN);
        assert_eq!(dotted_oid("2.999.1").unwrap(), vec![0x88, 0x37, 0x01]);
        for bad in ["", "1", "3.1", "1.40", "1.2.x", "1..2"] {
            assert!(dotted_oid(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_go_style_and_errors_name_the_key() {
        for (text, secs) in [("60m", 3600), ("3600s", 3600), ("1h", 3600), ("1h30m", 5400), ("0s", 0), ("90s", 90)] {
            assert_eq!(parse_duration("k", text).unwrap(), secs, "{text}");
        }
        for text in ["", "60", "m", "5d", "1.5h", "-1s", "1h 2m", "99999999999999999999s", "9223372036854775807h"] {
            let e = parse_duration("profile[p].intune_challenge_validity", text).unwrap_err();
            assert!(e.0.starts_with("profile[p].intune_challenge_validity: "), "{text}: {e}");
        }
    }

    #[test]
    fn enabled_needs_a_bundle_and_keys_need_enabled() {
        let mut s = ProfileSection { name: Some("p".into()), ..ProfileSection::default() };
        s.intune_enabled = Some(true);
        let e = s.intune_settings("p", None).unwrap_err();
        assert!(e.0.starts_with("profile[p].intune_connector_cert_path: required"), "{e}");
        s.intune_enabled = None;
        s.intune_audience = Some("x".into());
        let e = s.intune_settings("p", None).unwrap_err();
        assert!(e.0.starts_with("profile[p].intune_enabled"), "{e}");
        s.intune_enabled = Some(false);
        assert!(s.intune_settings("p", None).unwrap().is_none());
    }
}

/// Where Entra takes the client's credential from (API mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntuneCredential {
    /// `intune_client_secret_path`: a file holding the secret (mode 0600).
    Secret(PathBuf),
    /// `intune_client_cert_path` + `intune_client_key_path`: a signed client
    /// assertion (RFC 7523) with this certificate's RSA key.
    Certificate {
        /// The certificate (PEM) registered on the Entra application.
        cert: PathBuf,
        /// Its RSA private key (PEM, mode 0600).
        key: PathBuf,
    },
}

/// The compliance gate of a profile (`intune_compliance_check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComplianceCheck {
    /// `off` (the default).
    Off,
    /// `graph`: Microsoft Graph `managedDevices`.
    Graph,
    /// A webhook URL answering allow/deny.
    Webhook(String),
}

/// The compliance gate (gate 9) of a profile, in either Intune mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplianceSettings {
    /// `graph` or a webhook (never `off`: then there are no settings).
    pub check: ComplianceCheck,
    /// The Entra client (Graph token) for `graph`, and for both forms the
    /// timeout (`intune_api_timeout`) and extra trust roots
    /// (`intune_api_ca_bundle_path`). For a webhook in connector mode the
    /// tenant, client and credential are empty and unused.
    pub entra: IntuneApiSettings,
}

/// A profile's `intune_*` keys in API mode (`intune_mode = "api"`), validated:
/// Microsoft's SCEP validation API (see `crate::intune::api`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntuneApiSettings {
    /// `intune_tenant_id`
    pub tenant_id: String,
    /// `intune_client_id`
    pub client_id: String,
    /// The credential.
    pub credential: IntuneCredential,
    /// `intune_authority_url`, ending in `/`.
    pub authority_url: String,
    /// `intune_graph_url`, ending in `/`.
    pub graph_url: String,
    /// `intune_resource_url`, ending in `/` (the scope is this + `/.default`).
    pub resource_url: String,
    /// `intune_api_ca_bundle_path`: extra trust roots.
    pub ca_bundle_path: Option<PathBuf>,
    /// `intune_revocation_poll_interval` in seconds; 0 = off.
    pub revocation_poll_interval_secs: i64,
    /// `intune_compliance_check`
    pub compliance: ComplianceCheck,
    /// `intune_return_before_notification`
    pub return_before_notification: bool,
    /// `intune_api_timeout` (1 s to 40 s): longest wait for one answer.
    pub timeout: std::time::Duration,
}

/// Default `intune_authority_url`.
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com/";
/// Default `intune_graph_url`.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/";
/// Default `intune_resource_url`.
pub const DEFAULT_RESOURCE_URL: &str = "https://api.manage.microsoft.com/";

/// Checks that `url` is `https://`, or `http://` to a loopback host
/// (`localhost`, `127.0.0.0/8`, `[::1]`), and returns it ending in `/`.
///
/// # Errors
/// A one-line reason.
pub fn https_or_loopback(url: &str) -> Result<String, String> {
    let url = url.trim();
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split('/').next().unwrap_or_default();
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!("{url:?} must be https:// (http:// only to a loopback host)"));
        }
        r
    } else {
        return Err(format!("{url:?} must start with https://"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', '@', ' ']) {
        return Err(format!("{url:?} must be scheme://host[:port][/path] without query or credentials"));
    }
    Ok(if url.ends_with('/') { url.to_string() } else { format!("{url}/") })
}

impl ProfileSection {
    /// The `intune_*` keys of the profile `name` in API mode; `None` unless
    /// `intune_enabled = true` and `intune_mode = "api"`. Relative paths
    /// resolve against `base`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `profile[<name>].intune_*` and the reason.
    pub fn intune_api_settings(
        &self,
        name: &str,
        base: Option<&Path>,
    ) -> Result<Option<IntuneApiSettings>, ConfigError> {
        let k = |key: &str| format!("profile[{name}].{key}");
        let err = |key: &str, why: String| ConfigError(format!("{}: {why}", k(key)));
        let compliance = self.compliance_check(name)?;
        match self.intune_mode.as_deref() {
            None | Some("connector") => {
                // The Entra credential also serves the Graph compliance gate
                // of a connector-mode profile.
                let graph = compliance == ComplianceCheck::Graph;
                let api_keys = [
                    ("intune_tenant_id", self.intune_tenant_id.is_some() && !graph),
                    ("intune_client_id", self.intune_client_id.is_some() && !graph),
                    ("intune_client_secret_path", self.intune_client_secret_path.is_some() && !graph),
                    ("intune_client_cert_path", self.intune_client_cert_path.is_some() && !graph),
                    ("intune_client_key_path", self.intune_client_key_path.is_some() && !graph),
                    ("intune_return_before_notification", self.intune_return_before_notification.is_some()),
                ];
                if let Some((key, _)) = api_keys.iter().find(|(_, set)| *set) {
                    return Err(err(
                        key,
                        "only applies when intune_mode = \"api\" (or, for the Entra credential, with \
                         intune_compliance_check = \"graph\")"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            Some("api") => {}
            Some(other) => return Err(err("intune_mode", format!("{other:?} is not one of \"connector\", \"api\""))),
        }
        if self.intune_enabled != Some(true) {
            return Err(err("intune_enabled", "must be true when intune_mode = \"api\"".into()));
        }
        if self.intune_connector_cert_path.is_some() {
            return Err(err("intune_connector_cert_path", "only applies when intune_mode = \"connector\"".into()));
        }
        self.entra_settings(name, base, compliance, "when intune_mode = \"api\"").map(Some)
    }

    /// `intune_compliance_check` of the profile `name`, parsed.
    fn compliance_check(&self, name: &str) -> Result<ComplianceCheck, ConfigError> {
        let err = |why: String| ConfigError(format!("profile[{name}].intune_compliance_check: {why}"));
        let check = match self.intune_compliance_check.as_deref().map(str::trim) {
            None | Some("off") => ComplianceCheck::Off,
            Some("graph") => ComplianceCheck::Graph,
            Some(u) if u.starts_with("http") => ComplianceCheck::Webhook(https_or_loopback(u).map_err(err)?),
            Some(other) => return Err(err(format!("{other:?} is not \"off\", \"graph\" or a webhook URL"))),
        };
        if check != ComplianceCheck::Off && self.intune_enabled != Some(true) {
            return Err(err("needs intune_enabled = true (gate 9 checks Intune devices)".into()));
        }
        Ok(check)
    }

    /// The compliance gate (gate 9) of the profile `name` in either Intune
    /// mode; `None` when `intune_compliance_check` is `off` or unset. `api`
    /// is the profile's API-mode settings, whose Entra credential the Graph
    /// form shares; in connector mode the Graph form reads the same
    /// `intune_tenant_id`, `intune_client_id` and credential keys.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `profile[<name>].intune_*` and the reason.
    pub fn intune_compliance_settings(
        &self,
        name: &str,
        base: Option<&Path>,
        api: Option<&IntuneApiSettings>,
    ) -> Result<Option<ComplianceSettings>, ConfigError> {
        let check = self.compliance_check(name)?;
        let entra = match (&check, api) {
            (ComplianceCheck::Off, _) => return Ok(None),
            (_, Some(api)) => api.clone(),
            (ComplianceCheck::Graph, None) => {
                self.entra_settings(name, base, check.clone(), "when intune_compliance_check = \"graph\"")?
            }
            // A webhook needs no Entra credential: only the timeout and the trust roots.
            (ComplianceCheck::Webhook(_), None) => IntuneApiSettings {
                tenant_id: String::new(),
                client_id: String::new(),
                credential: IntuneCredential::Secret(PathBuf::new()),
                authority_url: DEFAULT_AUTHORITY_URL.into(),
                graph_url: DEFAULT_GRAPH_URL.into(),
                resource_url: DEFAULT_RESOURCE_URL.into(),
                ca_bundle_path: self.intune_api_ca_bundle_path.as_deref().map(|p| resolve(base, p)),
                revocation_poll_interval_secs: 0,
                compliance: check.clone(),
                return_before_notification: false,
                timeout: self.api_timeout(name)?,
            },
        };
        Ok(Some(ComplianceSettings { check, entra }))
    }

    fn api_timeout(&self, name: &str) -> Result<std::time::Duration, ConfigError> {
        let key = format!("profile[{name}].intune_api_timeout");
        let timeout_secs = match self.intune_api_timeout.as_deref() {
            None => 30,
            Some(text) => parse_duration(&key, text)?,
        };
        match u64::try_from(timeout_secs) {
            Ok(secs @ 1..=40) => Ok(std::time::Duration::from_secs(secs)),
            _ => Err(ConfigError(format!(
                "{key}: {timeout_secs}s is out of range (1s to 40s: a retry must fit the 45 s request deadline)"
            ))),
        }
    }

    /// The Entra client settings (tenant, client, credential, URLs, timeout),
    /// required `when` (for the error text).
    fn entra_settings(
        &self,
        name: &str,
        base: Option<&Path>,
        compliance: ComplianceCheck,
        when: &str,
    ) -> Result<IntuneApiSettings, ConfigError> {
        let k = |key: &str| format!("profile[{name}].{key}");
        let err = |key: &str, why: String| ConfigError(format!("{}: {why}", k(key)));
        let required = |key: &str, v: &Option<String>| -> Result<String, ConfigError> {
            match v.as_deref().map(str::trim) {
                None => Err(err(key, format!("required {when}"))),
                Some("") => Err(err(key, "must not be empty".into())),
                Some(t) if t.contains(['/', '?', '#', ' ', '&']) => {
                    Err(err(key, format!("{t:?} contains a character not allowed in an id")))
                }
                Some(t) => Ok(t.to_string()),
            }
        };
        let tenant_id = required("intune_tenant_id", &self.intune_tenant_id)?;
        let client_id = required("intune_client_id", &self.intune_client_id)?;
        let credential =
            match (&self.intune_client_secret_path, &self.intune_client_cert_path, &self.intune_client_key_path) {
                (Some(p), None, None) => IntuneCredential::Secret(resolve(base, p)),
                (None, Some(c), Some(key)) => {
                    IntuneCredential::Certificate { cert: resolve(base, c), key: resolve(base, key) }
                }
                (None, Some(_), None) => {
                    return Err(err("intune_client_key_path", "required with intune_client_cert_path".into()));
                }
                (None, None, Some(_)) => {
                    return Err(err("intune_client_cert_path", "required with intune_client_key_path".into()));
                }
                (Some(_), _, _) => {
                    return Err(err(
                        "intune_client_secret_path",
                        "set either it or intune_client_cert_path + intune_client_key_path, not both".into(),
                    ));
                }
                (None, None, None) => {
                    return Err(err(
                        "intune_client_secret_path",
                        format!("required {when} (or intune_client_cert_path + intune_client_key_path)"),
                    ));
                }
            };
        let url = |key: &str, v: &Option<String>, default: &str| {
            https_or_loopback(v.as_deref().unwrap_or(default)).map_err(|why| err(key, why))
        };
        let revocation_poll_interval_secs = match self.intune_revocation_poll_interval.as_deref().map(str::trim) {
            None => 15 * 60,
            Some("0") => 0,
            Some(text) => parse_duration(&k("intune_revocation_poll_interval"), text)?,
        };
        Ok(IntuneApiSettings {
            tenant_id,
            client_id,
            credential,
            authority_url: url("intune_authority_url", &self.intune_authority_url, DEFAULT_AUTHORITY_URL)?,
            graph_url: url("intune_graph_url", &self.intune_graph_url, DEFAULT_GRAPH_URL)?,
            resource_url: url("intune_resource_url", &self.intune_resource_url, DEFAULT_RESOURCE_URL)?,
            ca_bundle_path: self.intune_api_ca_bundle_path.as_deref().map(|p| resolve(base, p)),
            revocation_poll_interval_secs,
            compliance,
            return_before_notification: self.intune_return_before_notification.unwrap_or(false),
            timeout: self.api_timeout(name)?,
        })
    }
}

#[cfg(test)]
mod intune_api_tests {
    use super::*;

    fn api_section() -> ProfileSection {
        ProfileSection {
            name: Some("p".into()),
            intune_enabled: Some(true),
            intune_mode: Some("api".into()),
            intune_tenant_id: Some("tenant".into()),
            intune_client_id: Some("app".into()),
            intune_client_secret_path: Some("secret".into()),
            ..ProfileSection::default()
        }
    }

    #[test]
    fn api_mode_needs_no_connector_bundle_and_takes_documented_defaults() {
        let s = api_section().validate(0, Some(Path::new("/etc/scepd"))).unwrap();
        let api = s.intune_api.unwrap();
        assert_eq!(api.credential, IntuneCredential::Secret("/etc/scepd/secret".into()));
        assert_eq!(
            (api.authority_url.as_str(), api.graph_url.as_str(), api.resource_url.as_str()),
            (DEFAULT_AUTHORITY_URL, DEFAULT_GRAPH_URL, DEFAULT_RESOURCE_URL)
        );
        assert_eq!((api.revocation_poll_interval_secs, api.timeout.as_secs()), (900, 30));
        assert!(!api.return_before_notification);
        assert!(matches!(s.challenge, ChallengePolicy::IntuneApi));
    }

    #[test]
    fn every_invalid_api_setting_is_refused_naming_its_key() {
        type Edit = fn(&mut ProfileSection);
        let cases: [(Edit, &str); 15] = [
            (|s| s.intune_mode = Some("graph".into()), "profile[p].intune_mode: "),
            (|s| s.intune_enabled = None, "profile[p].intune_enabled: "),
            (|s| s.intune_tenant_id = None, "profile[p].intune_tenant_id: required"),
            (|s| s.intune_client_id = Some(" ".into()), "profile[p].intune_client_id: must not be empty"),
            (|s| s.intune_tenant_id = Some("a/b".into()), "profile[p].intune_tenant_id: "),
            (|s| s.intune_client_secret_path = None, "profile[p].intune_client_secret_path: required"),
            (|s| s.intune_client_cert_path = Some("c.pem".into()), "profile[p].intune_client_secret_path: set either"),
            (
                |s| {
                    s.intune_client_secret_path = None;
                    s.intune_client_cert_path = Some("c.pem".into());
                },
                "profile[p].intune_client_key_path: required",
            ),
            (|s| s.intune_graph_url = Some("http://graph.example/".into()), "profile[p].intune_graph_url: "),
            (|s| s.intune_authority_url = Some("ftp://x/".into()), "profile[p].intune_authority_url: "),
            (
                |s| s.intune_revocation_poll_interval = Some("soon".into()),
                "profile[p].intune_revocation_poll_interval: ",
            ),
            (|s| s.intune_compliance_check = Some("maybe".into()), "profile[p].intune_compliance_check: "),
            (|s| s.intune_api_timeout = Some("2m".into()), "profile[p].intune_api_timeout: 120s is out of range"),
            (|s| s.challenge_password = Some("pw".into()), "profile[p].challenge_password: must not be set"),
            (|s| s.intune_connector_cert_path = Some("i.pem".into()), "profile[p].intune_connector_cert_path: "),
        ];
        for (edit, key) in cases {
            let mut s = api_section();
            edit(&mut s);
            let e = s.validate(0, None).unwrap_err();
            assert!(e.0.starts_with(key), "{key}: {e}");
        }
        // API keys on a connector-mode profile are refused too, naming the key.
        let s = ProfileSection { intune_mode: None, intune_enabled: Some(false), ..api_section() };
        assert!(s.validate(0, None).unwrap_err().0.starts_with("profile[p].intune_tenant_id: only applies"));
    }

    #[test]
    fn the_compliance_gate_is_read_in_both_modes() {
        // API mode: the Graph form shares the API credential.
        let s = ProfileSection { intune_compliance_check: Some("graph".into()), ..api_section() };
        let c = s.validate(0, None).unwrap().intune_compliance.unwrap();
        assert_eq!((c.check, c.entra.client_id.as_str()), (ComplianceCheck::Graph, "app"));
        // Connector mode, Graph: the Entra keys are allowed, and required.
        let connector = ProfileSection {
            intune_mode: None,
            intune_connector_cert_path: Some("i.pem".into()),
            intune_compliance_check: Some("graph".into()),
            ..api_section()
        };
        let c = connector.intune_compliance_settings("p", None, None).unwrap().unwrap();
        assert_eq!((c.check, c.entra.tenant_id.as_str()), (ComplianceCheck::Graph, "tenant"));
        assert!(connector.intune_api_settings("p", None).unwrap().is_none());
        let no_tenant = ProfileSection { intune_tenant_id: None, ..connector.clone() };
        let e = no_tenant.intune_compliance_settings("p", None, None).unwrap_err();
        assert!(e.0.starts_with("profile[p].intune_tenant_id: required when intune_compliance_check"), "{e}");
        // Connector mode, webhook: no credential needed; a loopback http URL is fine, others not.
        let hook = ProfileSection {
            intune_tenant_id: None,
            intune_client_id: None,
            intune_client_secret_path: None,
            intune_compliance_check: Some("http://127.0.0.1:9/hook".into()),
            intune_api_timeout: Some("2s".into()),
            ..connector.clone()
        };
        let c = hook.intune_compliance_settings("p", None, None).unwrap().unwrap();
        assert_eq!(
            (c.check, c.entra.timeout.as_secs()),
            (ComplianceCheck::Webhook("http://127.0.0.1:9/hook/".into()), 2)
        );
        let remote = ProfileSection { intune_compliance_check: Some("http://hooks.example/".into()), ..hook.clone() };
        assert!(remote.intune_compliance_settings("p", None, None).unwrap_err().0.contains("must be https://"));
        // Off: no gate; and the gate needs an Intune profile.
        let off = ProfileSection { intune_compliance_check: Some("off".into()), ..hook.clone() };
        assert!(off.intune_compliance_settings("p", None, None).unwrap().is_none());
        let plain = ProfileSection { intune_enabled: None, ..hook };
        assert!(plain.intune_compliance_settings("p", None, None).unwrap_err().0.contains("intune_enabled = true"));
    }

    #[test]
    fn urls_must_be_https_except_to_loopback() {
        assert_eq!(https_or_loopback("https://login.example").unwrap(), "https://login.example/");
        assert_eq!(https_or_loopback("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080/");
        assert_eq!(https_or_loopback("http://[::1]:1/x").unwrap(), "http://[::1]:1/x/");
        assert!(https_or_loopback("http://localhost:1").is_ok());
        for bad in ["http://10.0.0.1/", "http://login.example/", "https://", "https://u@h/", "https://h/?q", "h"] {
            assert!(https_or_loopback(bad).is_err(), "{bad}");
        }
    }
}
