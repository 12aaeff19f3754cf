//! Reading the files a configuration names (certificates, private keys, trust
//! bundles, password and token files, the TOML file itself): bounded in size
//! and regular files only.
//!
//! A path such as `/dev/urandom`, a FIFO or `/dev/zero` would otherwise make
//! `std::fs::read_to_string` read forever while memory grows; one function,
//! [`read_to_string`], is what every reader of configuration material uses.

use std::fs::File;
use std::io::{Error, ErrorKind, Read as _};
use std::path::Path;

/// The largest configuration file read, in bytes (1 MiB): far above any
/// certificate, key, secret or configuration file (a full public CA bundle
/// is about 220 KB), far below what hurts the process.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the regular file `path` as UTF-8 text, refusing anything else.
///
/// The file type is checked before opening (so a FIFO is never opened, which
/// would block) and again on the open file; at most
/// [`MAX_CONFIG_FILE_BYTES`] + 1 bytes are ever read.
///
/// # Errors
/// The I/O error; [`ErrorKind::InvalidInput`] saying "not a regular file"
/// (directory, device, FIFO, socket) or "larger than ..." for a file over
/// the bound; [`ErrorKind::InvalidData`] for text that is not UTF-8.
pub fn read_to_string(path: &Path) -> Result<String, Error> {
    check_regular(&std::fs::metadata(path)?)?;
    let file = File::open(path)?;
    let meta = file.metadata()?;
    check_regular(&meta)?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
}

fn check_regular(meta: &std::fs::Metadata) -> Result<(), Error> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() { "a directory" } else { "a device, FIFO or socket" };
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!("not a regular file ({kind}); configuration files must be regular files"),
    ))
}

fn too_large() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("larger than {MAX_CONFIG_FILE_BYTES} bytes, the bound for a configuration file"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pem");
        std::fs::write(&path, "text\n").unwrap();
        assert_eq!(read_to_string(&path).unwrap(), "text\n");
    }

    #[test]
    fn refuses_endless_devices_directories_and_fifos_without_blocking() {
        for dev in ["/dev/urandom", "/dev/zero"] {
            let e = read_to_string(Path::new(dev)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{dev}: {e}");
            assert!(e.to_string().contains("not a regular file"), "{dev}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = read_to_string(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo must be installed");
        assert!(made.success());
        // Opening a FIFO for reading would block until a writer comes: the check runs before the open.
        let e = read_to_string(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn refuses_a_file_over_the_bound_and_accepts_one_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pem");
        std::fs::write(&path, vec![b'a'; MAX_CONFIG_FILE_BYTES as usize]).unwrap();
        assert_eq!(read_to_string(&path).unwrap().len() as u64, MAX_CONFIG_FILE_BYTES);
        std::fs::write(&path, vec![b'a'; MAX_CONFIG_FILE_BYTES as usize + 1]).unwrap();
        let e = read_to_string(&path).unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn refuses_bytes_that_are_not_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read_to_string(&path).unwrap_err().kind(), ErrorKind::InvalidData);
    }
}
