//! The data directory's safety, end to end against the real `scepd` binary:
//!
//! - one `serve` per data directory: a second one on the same directory exits
//!   at once naming the directory and the first one's PID, while the first
//!   keeps serving; `check-config` and `migrate` work beside it, and a SIGHUP
//!   reload keeps the lock; once the
//!   first has stopped (SIGTERM) or been killed (SIGKILL: the lock does not
//!   outlive the process), a new `serve` starts;
//! - every database file in the data directory is private (0600);
//! - a lost CA is never replaced by a new one in a directory that issued
//!   certificates (the old certificates would vanish from the admin API, the
//!   CRL and OCSP): the start is refused naming the certificates and the CA,
//!   the directory is left as it was, and restoring the CA from backup works;
//!   a directory that never issued is told which RA files to remove.
//!
//! The behaviour is the same on both transports (it happens before either
//! serves), so these run on the default one.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use scep_tests::client::{CsrSpec, DeviceKey, MessageOptions, PkiMethod, PkiStatus, ScepClient};
use scep_tests::server::{Scepd, ScepdError, ScepdOptions, Signal, scepd_binary};

const CHALLENGE: &str = "data-dir-secret";
const CONFIG: &str = "[[profile]]\nname = \"corp\"\nchallenge_password = \"data-dir-secret\"\n";
/// A refused start must be quick: it happens before any key is generated.
const REFUSED_WITHIN: Duration = Duration::from_secs(10);

/// A server with [`CONFIG`], on `data_dir` when given.
fn options(data_dir: Option<&Path>) -> ScepdOptions {
    ScepdOptions { data_dir: data_dir.map(Path::to_path_buf), ..ScepdOptions::with_config(CONFIG) }
}

/// The bootstrap `default` profile, on `data_dir` when given.
fn bootstrap_options(data_dir: Option<&Path>) -> ScepdOptions {
    ScepdOptions { data_dir: data_dir.map(Path::to_path_buf), ..ScepdOptions::bootstrap(CHALLENGE) }
}

/// Starts a server that must be refused: its exit status (non-zero) and log.
fn refused(opts: ScepdOptions) -> String {
    let started = Instant::now();
    match Scepd::start(opts) {
        Err(ScepdError::Startup { stderr, exit, .. }) => {
            assert!(exit.is_some_and(|s| !s.success()), "the second scepd must exit by itself, non-zero: {stderr}");
            assert!(started.elapsed() < REFUSED_WITHIN, "refused only after {:?}: {stderr}", started.elapsed());
            stderr
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(server) => panic!("scepd started on {}:\n{}", server.data_dir().display(), server.log_tail(20)),
    }
}

/// Runs `scepd <args>` to its end (bounded by the test harness's own limits).
fn scepd(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(scepd_binary().unwrap());
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    for var in ["SCEPD_CONFIG", "SCEPD_DATA_DIR", "CERTCTL_SCEP_PROFILES", "CERTCTL_DATABASE_URL"] {
        cmd.env_remove(var);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Enrols one device (key `slot` of the pregenerated ones) on `url`: the
/// certificate is recorded in the data directory.
fn enrol(url: &str, cn: &str, slot: usize) {
    let client = ScepClient::new(url).unwrap().with_timeout(Duration::from_secs(20));
    let key = DeviceKey::pregenerated(slot).unwrap();
    let e =
        client.enroll(&key, &CsrSpec::new(cn, Some(CHALLENGE)), &MessageOptions::default(), PkiMethod::Post).unwrap();
    assert_eq!(e.reply.status, PkiStatus::SUCCESS, "{:?}", e.reply);
}

/// Every file of `dir` with its contents, but the lock file's record (each
/// process writes its own PID there, a refused one too).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let contents = if name == "scepd.lock" { Vec::new() } else { std::fs::read(e.path()).unwrap() };
            (name, contents)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_second_serve_on_one_data_directory_is_refused_until_the_first_is_gone() {
    let mut first = Scepd::start(options(None)).unwrap_or_else(|e| panic!("{e}"));
    let data = first.data_dir().to_path_buf();
    let config = first.dir().join("scepd.toml");
    enrol(&first.profile_url("corp"), "before-the-second", 0);

    let stderr = refused(options(Some(&data)));
    let message = format!(
        "data_dir {}: another scepd (pid {}, `scepd serve`) is serving from it ({} is locked)",
        data.display(),
        first.pid(),
        data.join("scepd.lock").display()
    );
    assert!(stderr.contains(&message), "{message:?} not in:\n{stderr}");
    assert!(stderr.contains("--data-dir"), "the way out is named:\n{stderr}");
    // The first keeps serving.
    enrol(&first.profile_url("corp"), "after-the-second", 1);
    assert!(first.is_running());

    // Beside it: check-config reads the live directory and writes nothing; migrate has nothing to do.
    let before = snapshot(&data);
    let out = scepd(&["check-config"], &[("--config", &config), ("--data-dir", &data)]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("serve would create nothing new"), "{}", text(&out.stdout));
    let out = scepd(&["migrate"], &[("--config", &config), ("--data-dir", &data)]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to migrate"), "{}", text(&out.stdout));
    assert_eq!(snapshot(&data).len(), before.len(), "a file appeared beside the running server");
    // A reload keeps the data directory, and with it the lock.
    first.signal(Signal::Hup).unwrap();
    assert!(
        first.wait_for_stderr(Duration::from_secs(30), |log| log.contains("configuration reloaded")),
        "{}",
        first.log_tail(20)
    );
    assert!(refused(options(Some(&data))).contains(&format!("(pid {}, `scepd serve`)", first.pid())));

    // SIGTERM: the next serve starts.
    first.signal(Signal::Term).unwrap();
    assert!(first.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", first.log_tail(20));
    let mut second = Scepd::start(options(Some(&data))).unwrap_or_else(|e| panic!("after SIGTERM: {e}"));
    enrol(&second.profile_url("corp"), "on-the-second", 2);
    assert!(refused(options(Some(&data))).contains(&format!("(pid {}, `scepd serve`)", second.pid())));

    // SIGKILL: the lock ends with the process; the lock file left behind blocks nothing.
    second.signal(Signal::Kill).unwrap();
    assert!(second.wait_exit(Duration::from_secs(30)).is_some());
    assert!(data.join("scepd.lock").exists());
    let third = Scepd::start(options(Some(&data))).unwrap_or_else(|e| panic!("after SIGKILL: {e}"));
    enrol(&third.profile_url("corp"), "on-the-third", 3);
}

/// Every database file scepd keeps in the data directory, with the write-ahead
/// files SQLite makes beside them, is 0600 (the directory is 0700).
#[test]
fn database_files_in_the_data_directory_are_private() {
    let server = Scepd::start(bootstrap_options(None)).unwrap_or_else(|e| panic!("{e}"));
    enrol(&server.url(), "private-files", 0);
    let data = server.data_dir();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data), 0o700);
    let databases = ["local-ca.sqlite", "protection.sqlite", "challenges.sqlite", "audit.db"];
    for name in databases {
        assert!(data.join(name).exists(), "{name} missing");
    }
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if databases.iter().any(|db| name.starts_with(db)) || name == "scepd.lock" {
            assert_eq!(mode(&path), 0o600, "{name} is {:o}", mode(&path));
            checked.push(name);
        }
    }
    assert!(checked.iter().any(|n| n.ends_with("-wal")), "no write-ahead log checked: {checked:?}");
}

/// The RA files a bootstrap writes.
const RA_FILES: [&str; 6] =
    ["ra.pem", "ra.key", "ra-signing.pem", "ra-signing.key", "ra-encryption.pem", "ra-encryption.key"];

/// Moves `names` out of `data` into `backup`.
fn move_out(data: &Path, backup: &Path, names: &[&str]) {
    for name in names {
        std::fs::rename(data.join(name), backup.join(name)).unwrap();
    }
}

/// The CA's subject as the refusal names it (`CN=scepd CA <id>`).
fn ca_common_name(ca_pem: &str) -> String {
    let der = scep_engine::pem::certificates(ca_pem).unwrap().remove(0);
    let cert = scep_engine::x509::CertificateRef::parse(&der).unwrap();
    cert.subject_common_names().unwrap().remove(0)
}

/// The brief's story: a directory that issued loses `ca.pem`/`ca.key`. Every
/// start is refused, naming the certificate count and the CA, telling to
/// restore it (never to remove the RA files), and writes nothing; with the RA
/// files removed too, still no new CA. Restored from backup, it serves the
/// old CA with its certificate.
#[test]
fn a_lost_ca_is_never_replaced_where_certificates_were_issued() {
    let mut server = Scepd::start(bootstrap_options(None)).unwrap_or_else(|e| panic!("{e}"));
    enrol(&server.url(), "issued-before-the-loss", 0);
    server.stop();
    let data: PathBuf = server.data_dir().to_path_buf();
    let ca_pem = server.ca_pem();
    let subject = ca_common_name(&ca_pem);
    let backup = tempfile::tempdir().unwrap();
    move_out(&data, backup.path(), &["ca.pem", "ca.key"]);

    for ra_files_left in [true, false] {
        if !ra_files_left {
            move_out(&data, backup.path(), &RA_FILES);
        }
        let before = snapshot(&data);
        let stderr = refused(bootstrap_options(Some(&data)));
        assert!(
            stderr.contains("there is no CA (ca.pem and ca.key are missing)")
                && stderr.contains(&format!(
                    "{} holds 1 certificate(s) issued by CA ",
                    data.join("local-ca.sqlite").display()
                ))
                && stderr.contains(&format!("(CN={subject})"))
                && stderr.contains("restore ca.pem and ca.key from backup"),
            "{stderr}"
        );
        assert!(!stderr.contains("remove"), "removal offered where certificates were issued:\n{stderr}");
        assert!(!stderr.contains("new CA and RA created"), "{stderr}");
        assert_eq!(snapshot(&data), before, "the refused start changed the data directory");
    }

    // Restored from backup (the CA only: its RAs are issued again), the old CA serves its certificate.
    move_out(backup.path(), &data, &["ca.pem", "ca.key"]);
    let restored = Scepd::start(bootstrap_options(Some(&data))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(restored.ca_pem(), ca_pem);
    let key = std::fs::read_to_string(data.join("admin-api-key")).unwrap();
    let listed = admin_certificates(&restored, key.trim());
    assert!(listed.contains("issued-before-the-loss"), "{listed}");
}

/// A directory that never issued a certificate, with its CA gone and the RA
/// files left: refused once, naming all six files, offering to restore the CA
/// or remove them; removing them starts over with a new CA.
#[test]
fn ra_files_without_a_ca_are_named_and_may_be_removed_where_nothing_was_issued() {
    let mut server = Scepd::start(bootstrap_options(None)).unwrap_or_else(|e| panic!("{e}"));
    server.stop();
    let data = server.data_dir().to_path_buf();
    let old_ca = server.ca_pem();
    std::fs::remove_file(data.join("ca.pem")).unwrap();
    std::fs::remove_file(data.join("ca.key")).unwrap();
    let before = snapshot(&data);
    let stderr = refused(bootstrap_options(Some(&data)));
    assert!(
        stderr.contains(&format!("RA files issued by a CA are left: {}", RA_FILES.join(", ")))
            && stderr.contains("Restore ca.pem and ca.key from backup")
            && stderr.contains("remove these files to start over with a new CA"),
        "{stderr}"
    );
    assert_eq!(snapshot(&data), before);
    for name in RA_FILES {
        std::fs::remove_file(data.join(name)).unwrap();
    }
    let fresh = Scepd::start(bootstrap_options(Some(&data))).unwrap_or_else(|e| panic!("{e}"));
    assert!(!fresh.ca_pem().is_empty() && fresh.ca_pem() != old_ca);
    enrol(&fresh.url(), "on-the-new-ca", 0);
}

/// The admin API's certificate list (its JSON text).
fn admin_certificates(server: &Scepd, key: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/v1/admin/scep/certificates HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw
}

/// `sudo scepd migrate` in a service's data directory (owned by the service's
/// user) must not leave a root-owned lock file the service's own `serve`
/// could not open: the lock file takes the directory's owner.
#[test]
fn a_lock_file_made_by_another_user_belongs_to_the_directory_owner() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = (dir.path().join("scepd.toml"), dir.path().join("data"));
    std::fs::write(&config, CONFIG).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The service's user: any other than this test's.
    let (service_uid, service_gid) = (std::fs::metadata(dir.path()).unwrap().uid() + 4242, 4242);
    std::os::unix::fs::chown(&data, Some(service_uid), Some(service_gid)).unwrap();
    let out = scepd(&["migrate"], &[("--config", &config), ("--data-dir", &data)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lock = std::fs::metadata(data.join("scepd.lock")).unwrap();
    assert_eq!((lock.uid(), lock.gid()), (service_uid, service_gid), "the lock file belongs to the directory's owner");
    assert_eq!(lock.mode() & 0o777, 0o600);
}
