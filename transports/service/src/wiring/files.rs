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

/// Reads a private key PEM file after checking its permissions.
///
/// # Errors
/// As [`check_key_file_permissions`], or when the file holds no key.
pub fn read_private_key(path: &Path, key: &str) -> Result<Vec<u8>, ConfigError> {
    check_key_file_permissions(path, key)?;
    let text = read_text(path, key)?;
    pem::private_key(&text).map_err(|e| ConfigError(format!("{key}: {}: {e}", path.display())))
}
