//! Reading key and certificate files the configuration names: a private key
//! file must not be readable by group or others. Every read goes through
//! [`scep_issuers::config_file::read_to_string`]: regular files only, at most
//! [`scep_issuers::config_file::MAX_CONFIG_FILE_BYTES`] (a path such as
//! `/dev/urandom` is refused at start, naming the setting).

use std::path::Path;

use scep_engine::config::ConfigError;
use scep_engine::pem;

/// Reads the text file `path`, which the key `key` names.
///
/// # Errors
/// Naming `key` and the file when it cannot be read, is not a regular file,
/// is larger than the bound or is not UTF-8.
pub fn read_text(path: &Path, key: &str) -> Result<String, ConfigError> {
    scep_issuers::config_file::read_to_string(path)
        .map_err(|e| ConfigError(format!("{key}: cannot read {}: {e}", path.display())))
}

/// Refuses a private key file that group or others may access (Unix modes).
///
/// # Errors
/// Naming `key` and the file when its mode has any group/other bit, or when it
/// cannot be inspected.
pub fn check_key_file_permissions(path: &Path, key: &str) -> Result<(), ConfigError> {
    let meta =
        std::fs::metadata(path).map_err(|e| ConfigError(format!("{key}: cannot read {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError(format!(
                "{key}: private key file {} is accessible by group or others (mode {mode:04o}); \
                 run chmod 600 on it",
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Reads a private key PEM file after checking its permissions: PKCS #8,
/// encrypted PKCS #8 (with `passphrase`: the passphrase file and the name of
/// its setting), PKCS #1 or SEC1 ([`pem::private_key_der`]).
///
/// # Errors
/// As [`check_key_file_permissions`] (for the passphrase file too), when the
/// file holds no usable key, or when the passphrase is missing, wrong or set
/// for a key that is not encrypted; the message names the setting to fix.
pub fn read_private_key(path: &Path, key: &str, passphrase: Option<(&Path, &str)>) -> Result<Vec<u8>, ConfigError> {
    check_key_file_permissions(path, key)?;
    let text = read_text(path, key)?;
    let secret = match passphrase {
        Some((file, setting)) => Some(read_passphrase(file, setting)?),
        None => None,
    };
    pem::private_key_der(&text, secret.as_deref()).map_err(|e| {
        let (setting, fix) = match (&e, passphrase) {
            (pem::KeyFileError::PassphraseNeeded, _) => (key, format!(": set {key}_passphrase_file")),
            (pem::KeyFileError::Decrypt(_) | pem::KeyFileError::PassphraseUnused, Some((_, setting))) => {
                (setting, String::new())
            }
            _ => (key, String::new()),
        };
        ConfigError(format!("{setting}: {}: {e}{fix}", path.display()))
    })
}

/// Reads a passphrase file (mode 0600 like a key): its text without the final
/// line break.
///
/// # Errors
/// Naming `setting`: permissions, unreadable, or empty.
fn read_passphrase(path: &Path, setting: &str) -> Result<Vec<u8>, ConfigError> {
    check_key_file_permissions(path, setting)?;
    let mut bytes =
        std::fs::read(path).map_err(|e| ConfigError(format!("{setting}: cannot read {}: {e}", path.display())))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(ConfigError(format!("{setting}: {} is empty", path.display())));
    }
    Ok(bytes)
}
