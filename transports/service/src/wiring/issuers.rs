//! Issuer wiring: validates each `[[issuer]]` entry (`crate::settings::issuers`)
//! into a Vault/OpenBao configuration, connects it and runs its start-up
//! preflight, or (`type = "local"`) opens a local CA from the given CA
//! certificate and key, its certificate index in the shared store or the
//! data directory. The built-in local CA needs no entry (see [`super::bootstrap`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use scep_engine::config::ConfigError;
use scep_engine::time::UnixTime;
use scep_issuers::{Issuer, IssuerError, LocalCa, LocalCaConfig, VaultAuth, VaultConfig, VaultIssuer};

use crate::settings::issuers::{IssuerSection, RESERVED_IDS};
use crate::settings::profile::is_valid_name;
use crate::settings::{int_in, resolve};
use crate::wiring::files::{check_key_file_permissions, read_private_key};

/// Configured remote issuers by id.
pub type IssuerMap = HashMap<String, Arc<dyn Issuer>>;

/// Where `[[issuer]] type = "local"` entries are opened: the node's state.
#[derive(Clone, Debug)]
pub struct LocalIssuerPlace<'a> {
    /// The directory of their SQLite index (`local-ca-<id>.sqlite`): the data
    /// directory, or check-config's scratch directory.
    pub index_dir: &'a Path,
    /// The node's PostgreSQL pool: their index is in the shared store.
    pub shared_index: Option<Arc<scep_store::postgres::Pool>>,
    /// The current time (CA validity).
    pub now: UnixTime,
    /// `[server] public_url`: the CRL and OCSP URLs named in what they issue.
    pub public_url: Option<&'a str>,
}

impl IssuerSection {
    /// The entry's id, checked (a-z, 0-9, '-'; not a built-in's).
    fn checked_id(&self, index: usize) -> Result<&str, ConfigError> {
        let id = self.id.as_deref().ok_or_else(|| ConfigError(format!("issuer[{index}].id: required")))?;
        if !is_valid_name(id) {
            return Err(ConfigError(format!(
                "issuer[{index}].id: {id:?} is not a valid id (1 to 63 of a-z, 0-9, '-')"
            )));
        }
        if RESERVED_IDS.contains(&id) {
            return Err(ConfigError(format!("issuer[{id}].id: is reserved for a built-in issuer")));
        }
        Ok(id)
    }

    /// Opens this `type = "local"` entry: the CA from `ca_cert` / `ca_key`
    /// (with `ca_key_passphrase_file` for an encrypted PKCS#8 key) and
    /// `chain`, its index in `place`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `issuer[<id>].<key>`.
    pub fn open_local(
        &self,
        index: usize,
        base: Option<&Path>,
        place: &LocalIssuerPlace<'_>,
    ) -> Result<LocalCa, ConfigError> {
        let id = self.checked_id(index)?;
        let k = |key: &str| format!("issuer[{id}].{key}");
        let err = |key: &str, why: String| ConfigError(format!("{}: {why}", k(key)));
        let vault_keys = [
            ("address", self.address.is_some()),
            ("role", self.role.is_some()),
            ("mount", self.mount.is_some()),
            ("token_file", self.token_file.is_some()),
            ("token_env", self.token_env.is_some()),
            ("approle_role_id_file", self.approle_role_id_file.is_some()),
            ("ca_bundle", self.ca_bundle.is_some()),
        ];
        if let Some((key, _)) = vault_keys.iter().find(|(_, set)| *set) {
            return Err(err(key, "is a Vault setting, not used by type = \"local\"".into()));
        }
        let ca_cert = resolve(
            base,
            self.ca_cert.as_ref().ok_or_else(|| err("ca_cert", "required with type = \"local\"".into()))?,
        );
        let ca_key =
            resolve(base, self.ca_key.as_ref().ok_or_else(|| err("ca_key", "required with type = \"local\"".into()))?);
        let passphrase = self.ca_key_passphrase_file.as_ref().map(|p| resolve(base, p));
        let passphrase_setting = k("ca_key_passphrase_file");
        let der =
            read_private_key(&ca_key, &k("ca_key"), passphrase.as_deref().map(|p| (p, passphrase_setting.as_str())))?;
        let mut config = LocalCaConfig::new(&ca_cert, &ca_key, place.index_dir);
        config.id = id.to_string();
        config.ca_key_der = Some(der);
        config.index_file = format!("local-ca-{id}.sqlite");
        config.shared_index.clone_from(&place.shared_index);
        config.public_url = place.public_url.map(str::to_string);
        let chain = self.chain.as_ref().map(|c| resolve(base, c));
        config.chain_pem = chain.iter().cloned().collect();
        LocalCa::open_at(config, place.now).map_err(|e| {
            // Name the setting whose file is at fault.
            let key = match &e {
                IssuerError::InvalidFile { path, .. } | IssuerError::Io { path, .. } if *path == ca_key => "ca_key",
                IssuerError::InvalidFile { path, .. } | IssuerError::Io { path, .. }
                    if Some(path) == chain.as_ref() =>
                {
                    "chain"
                }
                IssuerError::InvalidFile { .. } | IssuerError::Io { .. } => "ca_cert",
                _ => "type",
            };
            err(key, e.to_string())
        })
    }

    /// Validates this entry into a [`VaultConfig`] (no network).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `issuer[<id>].<key>`.
    pub fn vault_config(&self, index: usize, base: Option<&Path>) -> Result<VaultConfig, ConfigError> {
        let id = self.checked_id(index)?;
        let k = |key: &str| format!("issuer[{id}].{key}");
        let err = |key: &str, why: &str| ConfigError(format!("{}: {why}", k(key)));
        match self.kind.as_deref() {
            Some("vault") => {}
            Some(other) => return Err(err("type", &format!("{other:?} is not one of \"vault\", \"local\""))),
            None => return Err(err("type", "required (\"vault\" or \"local\")")),
        }
        for (key, set) in [
            ("ca_cert", self.ca_cert.is_some()),
            ("ca_key", self.ca_key.is_some()),
            ("ca_key_passphrase_file", self.ca_key_passphrase_file.is_some()),
            ("chain", self.chain.is_some()),
        ] {
            if set {
                return Err(err(key, "is a type = \"local\" setting, not used by type = \"vault\""));
            }
        }
        let address = self.address.clone().ok_or_else(|| err("address", "required"))?;
        let role = self.role.clone().ok_or_else(|| err("role", "required"))?;
        let auth = match (&self.token_file, &self.token_env, &self.approle_role_id_file, &self.approle_secret_id_file) {
            (Some(f), None, None, None) => VaultAuth::TokenFile(resolve(base, f)),
            (None, Some(v), None, None) if !v.is_empty() => VaultAuth::TokenEnv(v.clone()),
            (None, None, Some(r), Some(s)) => VaultAuth::AppRole {
                mount: self.approle_mount.clone().unwrap_or_else(|| "approle".into()),
                role_id_file: resolve(base, r),
                secret_id_file: resolve(base, s),
            },
            (None, None, Some(_), None) => {
                return Err(err("approle_secret_id_file", "required with approle_role_id_file"));
            }
            (None, None, None, Some(_)) => {
                return Err(err("approle_role_id_file", "required with approle_secret_id_file"));
            }
            (None, None, None, None) => {
                return Err(err("token_file", "authentication required: token_file, token_env or approle_*_file"));
            }
            _ => return Err(err("token_file", "give exactly one of token_file, token_env, approle_*_file")),
        };
        if let (Some(f), VaultAuth::TokenFile(_) | VaultAuth::AppRole { .. }) =
            (self.token_file.as_ref().or(self.approle_secret_id_file.as_ref()), &auth)
        {
            let key = if self.token_file.is_some() { "token_file" } else { "approle_secret_id_file" };
            check_key_file_permissions(&resolve(base, f), &k(key))?;
        }
        let secs = |key: &str, v: Option<i64>, max: i64, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(int_in(&k(key), v, 1, max, default)?))
        };
        let mut c = VaultConfig::new(id, address, self.mount.clone().unwrap_or_else(|| "pki".into()), role, auth);
        c.namespace.clone_from(&self.namespace);
        c.ca_bundle = self.ca_bundle.as_deref().map(|p| resolve(base, p));
        c.connect_timeout = secs("connect_timeout_secs", self.connect_timeout_secs, 300, 5)?;
        c.request_timeout = secs("request_timeout_secs", self.request_timeout_secs, 600, 30)?;
        c.max_retries = int_in(&k("max_retries"), self.max_retries, 0, 10, 2)?;
        c.retry_backoff =
            Duration::from_millis(int_in(&k("retry_backoff_ms"), self.retry_backoff_ms, 10, 60_000, 200)?);
        c.breaker_threshold = int_in(&k("breaker_threshold"), self.breaker_threshold, 1, 1000, 5)?;
        c.breaker_cooldown = secs("breaker_cooldown_secs", self.breaker_cooldown_secs, 3600, 5)?;
        c.preflight_timeout = secs("preflight_timeout_secs", self.preflight_timeout_secs, 300, 10)?;
        Ok(c)
    }
}

/// Builds every `[[issuer]]`: validates, connects and runs the start-up
/// preflight (CA chain fetch within its timeout); a `type = "local"` entry
/// opens its CA and certificate index in `place`.
///
/// # Errors
/// The first invalid entry, or the first issuer whose preflight fails, named.
pub fn build_issuers(
    sections: &[IssuerSection],
    base: Option<&Path>,
    place: &LocalIssuerPlace<'_>,
) -> Result<IssuerMap, ConfigError> {
    let mut map = IssuerMap::with_capacity(sections.len());
    for (i, s) in sections.iter().enumerate() {
        let id = s.checked_id(i)?.to_string();
        if map.contains_key(&id) {
            return Err(ConfigError(format!("issuer[{id}].id: defined more than once")));
        }
        let issuer: Arc<dyn Issuer> = if s.kind.as_deref() == Some("local") {
            Arc::new(s.open_local(i, base, place)?)
        } else {
            let config = s.vault_config(i, base)?;
            Arc::new(VaultIssuer::connect(config).map_err(|e| ConfigError(format!("issuer[{id}]: {e}")))?)
        };
        map.insert(id, issuer);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> IssuerSection {
        toml::from_str(text).unwrap()
    }

    fn place(dir: &Path) -> LocalIssuerPlace<'_> {
        LocalIssuerPlace { index_dir: dir, shared_index: None, now: UnixTime::now(), public_url: None }
    }

    /// `type = "local"`: a CA from given files, its index
    /// `local-ca-<id>.sqlite`; an encrypted key with its passphrase file;
    /// every mistake named by its setting.
    #[test]
    fn a_local_issuer_opens_the_given_ca_and_names_its_settings() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let files = scep_issuers::bootstrap(&keys, &scep_issuers::BootstrapOptions::default()).unwrap();
        let data = dir.path().join("data");
        let toml = format!(
            "id = \"corp-ca\"\ntype = \"local\"\nca_cert = \"{}\"\nca_key = \"{}\"\n",
            files.ca_cert.display(),
            files.ca_key.display()
        );
        let map = build_issuers(&[section(&toml)], None, &place(&data)).unwrap();
        let ca = map["corp-ca"].inventory().expect("a local CA");
        assert_eq!(ca.id(), "corp-ca");
        assert!(data.join("local-ca-corp-ca.sqlite").exists());
        assert!(!data.join("local-ca.sqlite").exists(), "not the built-in CA's index");
        let ca_pem = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert_eq!(map["corp-ca"].ca_chain()[0], scep_engine::pem::certificates(&ca_pem).unwrap()[0]);

        // An encrypted PKCS#8 key needs its passphrase file.
        let encrypted = dir.path().join("ca-enc.key");
        let out = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:s3cret", "-in"])
            .arg(&files.ca_key)
            .arg("-out")
            .arg(&encrypted)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::set_permissions(&encrypted, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "s3cret\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let with_key = |key: &Path, extra: &str| {
            format!(
                "id = \"enc\"\ntype = \"local\"\nca_cert = \"{}\"\nca_key = \"{}\"\n{extra}",
                files.ca_cert.display(),
                key.display()
            )
        };
        let Err(e) = build_issuers(&[section(&with_key(&encrypted, ""))], None, &place(&data)) else {
            panic!("an encrypted key without its passphrase")
        };
        assert!(e.0.starts_with("issuer[enc].ca_key: ") && e.0.contains("passphrase"), "{e}");
        let good = with_key(&encrypted, &format!("ca_key_passphrase_file = \"{}\"\n", pass.display()));
        assert!(build_issuers(&[section(&good)], None, &place(&data)).is_ok());

        // Mistakes name their setting.
        let wrong_key = dir.path().join("other.key");
        let other =
            scep_issuers::bootstrap(&dir.path().join("other"), &scep_issuers::BootstrapOptions::default()).unwrap();
        std::fs::copy(&other.ca_key, &wrong_key).unwrap();
        std::fs::set_permissions(&wrong_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cases = [
            ("id = \"x\"\ntype = \"local\"\nca_key = \"k\"\n".to_string(), "issuer[x].ca_cert: required"),
            (
                format!("id = \"x\"\ntype = \"local\"\nca_cert = \"{}\"\n", files.ca_cert.display()),
                "issuer[x].ca_key: required",
            ),
            (with_key(&dir.path().join("missing.key"), ""), "issuer[enc].ca_key: "),
            // A key of another CA: the pair is named from the certificate's side (the message names both files).
            (with_key(&wrong_key, ""), "issuer[enc].ca_cert: "),
            (with_key(&files.ca_key, "chain = \"/nonexistent/chain.pem\"\n"), "issuer[enc].chain: "),
            (with_key(&files.ca_key, "address = \"http://vault\"\n"), "issuer[enc].address: "),
        ];
        for (toml, named) in cases {
            let Err(e) = build_issuers(&[section(&toml)], None, &place(&data)) else { panic!("{toml:?} accepted") };
            assert!(e.0.starts_with(named), "{toml:?}: {e} does not start with {named}");
        }
        let vault_with_ca =
            "id = \"v\"\ntype = \"vault\"\naddress = \"http://x\"\nrole = \"r\"\ntoken_env = \"T\"\nca_cert = \"c\"\n";
        assert!(section(vault_with_ca).vault_config(0, None).unwrap_err().0.starts_with("issuer[v].ca_cert"));
    }

    #[test]
    fn every_key_parses() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let s = section(
            r#"
            id = "iss-bao"
            type = "vault"
            address = "https://vault:8200"
            mount = "pki_int"
            role = "devices"
            namespace = "ns1"
            ca_bundle = "ca.pem"
            token_file = "token"
            connect_timeout_secs = 2
            request_timeout_secs = 3
            max_retries = 4
            retry_backoff_ms = 50
            breaker_threshold = 6
            breaker_cooldown_secs = 7
            preflight_timeout_secs = 8
            "#,
        );
        let c = s.vault_config(0, Some(dir.path())).unwrap();
        assert_eq!((c.id.as_str(), c.mount.as_str(), c.role.as_str()), ("iss-bao", "pki_int", "devices"));
        assert_eq!(c.auth, VaultAuth::TokenFile(token));
        assert_eq!(c.ca_bundle, Some(dir.path().join("ca.pem")));
        assert_eq!(c.namespace.as_deref(), Some("ns1"));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.max_retries, 4);
        assert_eq!(c.retry_backoff, Duration::from_millis(50));
        assert_eq!(c.breaker_threshold, 6);
        assert_eq!(c.breaker_cooldown, Duration::from_secs(7));
        assert_eq!(c.preflight_timeout, Duration::from_secs(8));
        let e = section("id = \"a\"\ntype = \"vault\"\naddress = \"http://x\"\nrole = \"r\"\ntoken_env = \"T\"\n");
        let c = e.vault_config(0, None).unwrap();
        assert_eq!(c.auth, VaultAuth::TokenEnv("T".into()));
        assert_eq!(c.mount, "pki");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let base = "type = \"vault\"\naddress = \"http://x\"\nrole = \"r\"\ntoken_env = \"T\"\n";
        let cases: &[(&str, &str)] = &[
            ("", "issuer[0].id"),
            ("id = \"Bad\"\n", "issuer[0].id"),
            ("id = \"iss-local\"\n", "issuer[iss-local].id"),
            ("id = \"a\"\ntype = \"acme\"\n", "issuer[a].type"),
            ("id = \"a\"\nmax_retries = 99\n", "issuer[a].max_retries"),
            ("id = \"a\"\nrequest_timeout_secs = 0\n", "issuer[a].request_timeout_secs"),
            ("id = \"a\"\ntoken_file = \"/nonexistent/token\"\n", "issuer[a].token_file"),
        ];
        for (extra, key) in cases {
            // `type`/`token_file` given twice would be a TOML error: build by hand.
            let mut s: IssuerSection = toml::from_str(base).unwrap();
            let over: IssuerSection = toml::from_str(extra).unwrap();
            s.id = over.id;
            if over.kind.is_some() {
                s.kind = over.kind;
            }
            if over.token_file.is_some() {
                s.token_file = over.token_file;
                if key.ends_with("token_file") {
                    s.token_env = None;
                }
            }
            s.max_retries = over.max_retries;
            s.request_timeout_secs = over.request_timeout_secs;
            let e = s.vault_config(0, None).expect_err(key);
            assert!(e.0.starts_with(key), "{extra:?}: {e} does not name {key}");
        }
        let mut s: IssuerSection = toml::from_str(base).unwrap();
        s.id = Some("a".into());
        s.token_file = Some("t".into());
        assert!(s.vault_config(0, None).unwrap_err().0.contains("exactly one"));
        let e = toml::from_str::<IssuerSection>("id = \"a\"\ntoken = \"s.secret\"\n").unwrap_err();
        assert!(e.to_string().contains("token"), "a token in the file is an unknown key: {e}");
    }

    #[test]
    fn an_unreachable_issuer_refuses_to_boot_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // token_env names any set variable: the preflight fails before authenticating.
        let s: IssuerSection = toml::from_str(&format!(
            "id = \"iss-down\"\ntype = \"vault\"\naddress = \"http://127.0.0.1:{port}\"\nrole = \"r\"\n\
             token_env = \"PATH\"\npreflight_timeout_secs = 2\n"
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = build_issuers(&[s], None, &place(dir.path())) else {
            panic!("an unreachable issuer must refuse to boot")
        };
        assert!(e.0.starts_with("issuer[iss-down]") && e.0.contains("unavailable"), "{e}");
    }
}
