//! `[[issuer]]` entries: remote issuers defined by id, referenced by profiles
//! (`issuer = "<id>"`). The built-in local CA is always there as `iss-local`
//! (alias `local`) and needs no entry. See docs/issuers.md for the reference.
//!
//! ```toml
//! [[issuer]]
//! id = "iss-bao"                     # required; [a-z0-9-], 1..=63 chars; not "local", "iss-local", "none"
//! type = "vault"                     # required; "vault" (HashiCorp Vault or OpenBao PKI) or "local" (below)
//! address = "https://vault:8200"     # required; http(s)://host[:port]
//! mount = "pki"                      # PKI mount path; default "pki"
//! role = "devices"                   # required; the role that signs device CSRs
//! namespace = "team-a"               # X-Vault-Namespace; default none
//! ca_bundle = "vault-ca.pem"         # CA certificates for https (required with https)
//! token_file = "/run/scepd/token"    # auth: exactly one of token_file, token_env, approle_role_id_file
//! token_env = "VAULT_TOKEN"          #   (the token itself is never written in this file)
//! approle_role_id_file = "role-id"   # AppRole: with approle_secret_id_file
//! approle_secret_id_file = "secret-id"
//! approle_mount = "approle"          # default "approle"
//! connect_timeout_secs = 5           # 1..=300; default 5
//! request_timeout_secs = 30          # one HTTP exchange, 1..=600; default 30
//! max_retries = 2                    # 0..=10; default 2
//! retry_backoff_ms = 200             # first retry delay, doubling, 10..=60000; default 200
//! breaker_threshold = 5              # consecutive failures opening the breaker, 1..=1000; default 5
//! breaker_cooldown_secs = 5          # first cool-down (doubles up to 60 s), 1..=3600; default 5
//! preflight_timeout_secs = 10        # start-up CA chain fetch bound, 1..=300; default 10
//! ```
//!
//! `crate::wiring::issuers` validates an entry into a Vault configuration and
//! connects it; start-up refuses to boot, naming the issuer, when an
//! issuer's CA chain cannot be fetched within `preflight_timeout_secs`.
//!
//! A local CA from given files (every node of a fleet given the same ones):
//!
//! ```toml
//! [[issuer]]
//! id = "corp-ca"                     # required, as above
//! type = "local"
//! ca_cert = "/etc/scepd/ca.pem"      # required; PEM, the CA first (further certificates: its chain)
//! ca_key = "/etc/scepd/ca.key"       # required; PEM (PKCS#8, encrypted PKCS#8, PKCS#1, SEC1), mode 0600
//! ca_key_passphrase_file = "/run/scepd/ca-pass"  # for an encrypted PKCS#8 ca_key
//! chain = "/etc/scepd/chain.pem"     # optional: certificates above the CA
//! ```
//!
//! Its certificate index is the shared store with `[store] url`, else
//! `<data_dir>/local-ca-<id>.sqlite`. Profiles on it name their RA
//! (`ra_cert`, `ra_key`).

use std::path::PathBuf;

use serde::Deserialize;

/// Issuer ids reserved for built-in issuers.
pub const RESERVED_IDS: &[&str] = &["local", "iss-local", "none"];

/// One `[[issuer]]` entry, as written (see the module docs).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// `id`
    pub id: Option<String>,
    /// `type`: `vault`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `address`
    pub address: Option<String>,
    /// `mount`
    pub mount: Option<String>,
    /// `role`
    pub role: Option<String>,
    /// `namespace`
    pub namespace: Option<String>,
    /// `ca_bundle`
    pub ca_bundle: Option<PathBuf>,
    /// `token_file`
    pub token_file: Option<PathBuf>,
    /// `token_env`
    pub token_env: Option<String>,
    /// `approle_role_id_file`
    pub approle_role_id_file: Option<PathBuf>,
    /// `approle_secret_id_file`
    pub approle_secret_id_file: Option<PathBuf>,
    /// `approle_mount`
    pub approle_mount: Option<String>,
    /// `connect_timeout_secs`
    pub connect_timeout_secs: Option<i64>,
    /// `request_timeout_secs`
    pub request_timeout_secs: Option<i64>,
    /// `max_retries`
    pub max_retries: Option<i64>,
    /// `retry_backoff_ms`
    pub retry_backoff_ms: Option<i64>,
    /// `breaker_threshold`
    pub breaker_threshold: Option<i64>,
    /// `breaker_cooldown_secs`
    pub breaker_cooldown_secs: Option<i64>,
    /// `preflight_timeout_secs`
    pub preflight_timeout_secs: Option<i64>,
    /// `ca_cert` (type `local`): the CA certificate PEM (further certificates
    /// in it are its chain).
    pub ca_cert: Option<PathBuf>,
    /// `ca_key` (type `local`): the CA private key PEM (mode 0600).
    pub ca_key: Option<PathBuf>,
    /// `ca_key_passphrase_file` (type `local`): the passphrase of an
    /// encrypted PKCS#8 `ca_key`.
    pub ca_key_passphrase_file: Option<PathBuf>,
    /// `chain` (type `local`): a PEM file of the certificates above the CA.
    pub chain: Option<PathBuf>,
}
