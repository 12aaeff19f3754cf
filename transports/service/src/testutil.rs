//! Test fixtures: an RA certificate/key pair (the real-client vectors' recipient)
//! in a temporary directory, with the key at mode 0600.

use std::path::{Path, PathBuf};

use scep_engine::time::UnixTime;

use crate::settings::profile::ProfileSection;

pub(crate) const RA_CERT: &str = include_str!("../../../tests/vectors/real-clients/recipient-cert.pem");
pub(crate) const RA_KEY: &str = include_str!("../../../tests/vectors/real-clients/recipient-key.pem");

pub(crate) struct TestDir(tempfile::TempDir);

impl TestDir {
    pub(crate) fn new() -> Self {
        let d = Self(tempfile::tempdir().unwrap());
        std::fs::write(d.path().join("ra.pem"), RA_CERT).unwrap();
        std::fs::write(d.path().join("chain.pem"), RA_CERT).unwrap();
        d.write_key("ra.key", RA_KEY);
        d
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    pub(crate) fn write_key(&self, name: &str, pem: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    }

    /// Inside the test RA certificate's validity.
    pub(crate) fn now(&self) -> UnixTime {
        UnixTime::from_secs(1_900_000_000) // 2030
    }

    /// A `[[profile]]` table using this directory's RA (paths relative to it).
    pub(crate) fn profile_toml(&self, name: &str) -> String {
        format!(
            "[[profile]]\nname = \"{name}\"\nissuer = \"none\"\nchallenge_password = \"secret123\"\n\
             ra_cert = \"ra.pem\"\nra_key = \"ra.key\"\nca_chain = \"chain.pem\"\n"
        )
    }
}

/// A valid `issuer = "none"` profile section using the directory's RA.
pub(crate) fn section(dir: &TestDir, name: &str) -> ProfileSection {
    ProfileSection {
        name: Some(name.into()),
        issuer: Some("none".into()),
        challenge_password: Some("secret123".into()),
        ra_cert: Some(dir.path().join("ra.pem")),
        ra_key: Some(dir.path().join("ra.key")),
        ca_chain: Some(dir.path().join("chain.pem")),
        ..ProfileSection::default()
    }
}

/// Runs `f` with a log subscriber on this thread; the text lines it wrote
/// (the service answers on this thread under `block_on`).
pub(crate) fn log_lines_of(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = lines.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}
