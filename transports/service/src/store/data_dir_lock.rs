//! One scepd process per data directory while its SQLite stores are in use.
//!
//! A serving process keeps in memory what it derived from the data
//! directory's SQLite stores: the local CA's revocation counter (which only
//! the process that revokes raises), the OCSP answers and the CRL versioned by
//! it. A second process serving from the same directory answers from its own
//! memory, e.g. `good` from its OCSP responder for a certificate the first one
//! revoked. So `scepd serve` takes an exclusive advisory lock on
//! `<data_dir>/scepd.lock` ([`DataDirLock::acquire`]) before it writes
//! anything to the directory and holds it for the life of the process; a
//! second `serve` on the directory is refused at start, naming the directory
//! and the process holding it.
//!
//! The lock is the kernel's (`flock(2)` through [`std::fs::File::try_lock`]),
//! held by the open file: it ends with the process however the process ends
//! (SIGKILL included), so a leftover `scepd.lock` never blocks a start and is
//! never removed. The file holds the holder's PID and command, for the next
//! process's error message only.
//!
//! With the store on PostgreSQL (`[store] url`) no SQLite store is in the
//! data directory and the nodes' caches follow the database's revocation
//! counter, so the wiring takes no lock there: nodes may share a (read-only)
//! key directory (see `docs/high-availability.md`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use scep_engine::config::ConfigError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "scepd.lock";

/// The scepd command holding a data directory's lock (written into the
/// lock file so that the next process can say who holds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockHolder {
    /// `scepd serve`, for the life of the process.
    Serve,
    /// `scepd migrate` on the SQLite store, while it migrates.
    Migrate,
}

impl LockHolder {
    /// The subcommand's name, as the lock file records it.
    pub fn command(self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Migrate => "migrate",
        }
    }

    /// What the holder does with the directory, for messages.
    pub fn activity(self) -> &'static str {
        match self {
            Self::Serve => "is serving from it",
            Self::Migrate => "is migrating the store in it",
        }
    }
}

/// Who holds a data directory's lock, for messages: "another scepd (pid
/// 4242, `scepd serve`)", or less when the lock file does not say.
pub fn describe_holder(pid: Option<u32>, holder: Option<LockHolder>) -> String {
    match (pid, holder) {
        (Some(pid), Some(holder)) => format!("another scepd (pid {pid}, `scepd {}`)", holder.command()),
        (Some(pid), None) => format!("another scepd (pid {pid})"),
        (None, _) => "another scepd process".to_string(),
    }
}

/// Why [`DataDirLock::acquire`] failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LockError {
    /// Another process holds the lock.
    Held {
        /// The data directory.
        data_dir: PathBuf,
        /// Its PID, when the lock file says.
        pid: Option<u32>,
        /// The command it runs, when the lock file says.
        holder: Option<LockHolder>,
    },
    /// The lock file cannot be created, opened or locked.
    Unusable {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held { data_dir, pid, holder } => {
                let who = describe_holder(*pid, *holder);
                // A holder that has not written its record yet is most likely a serve.
                let doing = holder.unwrap_or(LockHolder::Serve).activity();
                write!(
                    f,
                    "data_dir {}: {who} {doing} ({} is locked); two processes on one data directory's SQLite \
                     stores answer from diverging memory (a certificate revoked through one stays `good` in the \
                     other's OCSP answers). Stop the other process first, or give this one a data directory of \
                     its own (--data-dir, SCEPD_DATA_DIR or server.data_dir)",
                    data_dir.display(),
                    data_dir.join(LOCK_FILE).display()
                )
            }
            Self::Unusable { path, reason } => write!(
                f,
                "data_dir: cannot lock {}: {reason}; scepd does not serve from a data directory it cannot lock \
                 (it would not know whether another scepd serves from it)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LockError {}

impl From<LockError> for ConfigError {
    fn from(e: LockError) -> Self {
        Self(e.to_string())
    }
}

/// The exclusive lock on a data directory (see the module docs), held until
/// dropped; the process's end releases it too.
#[derive(Debug)]
pub struct DataDirLock {
    /// The open lock file: the lock lives as long as it is open.
    #[allow(dead_code, reason = "never read: held open for its lock")]
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `<data_dir>/scepd.lock` for `holder`, without
    /// waiting: creates the data directory (mode 0700) and the lock file
    /// (mode 0600, owned by the directory's owner) when missing, and on
    /// success records this process's PID and `holder` in the file (unless
    /// the file belongs to another user and is not writable: it still locks,
    /// without the record).
    ///
    /// # Errors
    /// [`LockError::Held`] when another process holds the lock (with its PID
    /// and command when the file says), [`LockError::Unusable`] when the
    /// directory or the file cannot be created, opened or locked.
    pub fn acquire(data_dir: &Path, holder: LockHolder) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let unusable = |e: &dyn std::fmt::Display| LockError::Unusable { path: path.clone(), reason: e.to_string() };
        create_private_dir(data_dir).map_err(|e| unusable(&format!("cannot create the data directory: {e}")))?;
        let mut opts = OpenOptions::new();
        // Never truncated on open: the file names the holder until the lock is ours.
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let (mut file, writable) = match opts.open(&path) {
            Ok(file) => (file, true),
            // A lock file another user created (`sudo scepd migrate` before
            // the service's first start): the lock needs no write access
            // (flock(2) locks a read-only descriptor), only the PID record does.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && path.is_file() => {
                (File::open(&path).map_err(|e| unusable(&e))?, false)
            }
            Err(e) => return Err(unusable(&e)),
        };
        #[cfg(unix)]
        if writable {
            owned_like_the_directory(&file, &path, data_dir).map_err(|e| unusable(&e))?;
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, holder) = read_holder(&mut file);
                return Err(LockError::Held { data_dir: data_dir.to_path_buf(), pid, holder });
            }
            Err(TryLockError::Error(e)) => return Err(unusable(&e)),
        }
        if writable {
            let record = format!("{} {}\n", std::process::id(), holder.command());
            file.set_len(0).and_then(|()| file.write_all(record.as_bytes())).map_err(|e| unusable(&e))?;
        }
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID and command a lock file records (`<pid> <command>`), when it
/// holds them: the holder may not have written them yet.
fn read_holder(file: &mut File) -> (Option<u32>, Option<LockHolder>) {
    let mut text = String::new();
    // A record is a few bytes; anything longer is not one of ours.
    if file.take(64).read_to_string(&mut text).is_err() {
        return (None, None);
    }
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|w| w.parse().ok());
    let holder = match words.next() {
        Some("serve") => Some(LockHolder::Serve),
        Some("migrate") => Some(LockHolder::Migrate),
        _ => None,
    };
    (pid, holder)
}

/// Gives the lock file the data directory's owner when it has another
/// (`sudo scepd migrate` in the service's directory creates it as root): the
/// service's own `serve` must be able to open it later.
#[cfg(unix)]
fn owned_like_the_directory(file: &File, path: &Path, data_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let (dir, ours) = (std::fs::metadata(data_dir)?, file.metadata()?);
    if (dir.uid(), dir.gid()) != (ours.uid(), ours.gid()) {
        std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()))?;
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 when missing.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on the directory is refused while the first is held,
    /// naming the directory, the holder's PID and command; dropping the
    /// first (as a process's end does) frees it. A lock file left behind
    /// blocks nothing.
    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data, LockHolder::Serve).unwrap();
        assert_eq!(first.path(), data.join(LOCK_FILE));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
            assert_eq!(std::fs::metadata(first.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let err = DataDirLock::acquire(&data, LockHolder::Serve).unwrap_err();
        let pid = std::process::id();
        assert_eq!(err, LockError::Held { data_dir: data.clone(), pid: Some(pid), holder: Some(LockHolder::Serve) });
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "data_dir {}: another scepd (pid {pid}, `scepd serve`) is serving",
                data.display()
            )),
            "{message}"
        );
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{pid} serve\n"),
            "the holder's record stays"
        );
        drop(first);
        assert!(data.join(LOCK_FILE).exists());
        let again = DataDirLock::acquire(&data, LockHolder::Migrate).unwrap();
        assert_eq!(std::fs::read_to_string(again.path()).unwrap(), format!("{pid} migrate\n"));
        let err = DataDirLock::acquire(&data, LockHolder::Serve).unwrap_err().to_string();
        assert!(err.contains("`scepd migrate`) is migrating the store in it"), "{err}");
    }

    /// A holder that has not written its record yet (or a file that is not
    /// ours) is still named as another scepd process.
    #[test]
    fn an_unreadable_record_still_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), LockHolder::Serve).unwrap();
        // The lock is advisory: the record can be emptied beside it.
        OpenOptions::new().write(true).open(first.path()).unwrap().set_len(0).unwrap();
        let err = DataDirLock::acquire(dir.path(), LockHolder::Serve).unwrap_err();
        assert_eq!(err, LockError::Held { data_dir: dir.path().to_path_buf(), pid: None, holder: None });
        assert!(err.to_string().contains("another scepd process is serving from it"), "{err}");
    }

    /// A lock file that cannot be opened is an error naming it.
    #[test]
    fn an_unusable_lock_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOCK_FILE)).unwrap();
        let err = DataDirLock::acquire(dir.path(), LockHolder::Serve).unwrap_err();
        assert!(matches!(&err, LockError::Unusable { path, .. } if *path == dir.path().join(LOCK_FILE)), "{err}");
        assert!(
            err.to_string().starts_with(&format!("data_dir: cannot lock {}", dir.path().join(LOCK_FILE).display()))
        );
    }
}
