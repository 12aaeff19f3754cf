//! PostgreSQL for the shared-store tests (issue 18).
//!
//! [`TestDatabase`] creates a fresh database on the cluster named by
//! `SCEPD_TEST_DATABASE_URL` (`.ci/run` starts one with `.ci/postgres-dev`)
//! and drops it afterwards; [`TestCluster`] starts a private cluster, for a
//! test that stops and restarts the database. Without PostgreSQL the test
//! FAILS through [`crate::missing_tool`].

use std::path::{Path, PathBuf};
use std::process::Command;

/// The variable naming the test cluster (a superuser URL ending in `/postgres`).
pub const URL_VARIABLE: &str = "SCEPD_TEST_DATABASE_URL";

const INSTALL: &str = "apt-get install postgresql, then `.ci/postgres-dev DIR` and \
                       `export SCEPD_TEST_DATABASE_URL=$(cat DIR/url)`";

/// A database of its own for one test, dropped (connections and all) when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL scepd (or a store) connects to.
    pub url: String,
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (authority, _) = base.rsplit_once('/').unwrap_or((base, ""));
    match query {
        Some(q) => format!("{authority}/{database}?{q}"),
        None => format!("{authority}/{database}"),
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestDatabase {
    /// A new, empty database on the `SCEPD_TEST_DATABASE_URL` cluster.
    ///
    /// # Panics
    /// When the variable is unset ([`crate::missing_tool`]) or the cluster
    /// refuses.
    pub fn create(test: &str) -> Self {
        let Ok(admin_url) = std::env::var(URL_VARIABLE) else {
            crate::missing_tool(test, &format!("a PostgreSQL cluster named by {URL_VARIABLE}"), INSTALL)
        };
        Self::create_on(&admin_url, test)
    }

    /// A new, empty database on the cluster `admin_url` names.
    ///
    /// # Panics
    /// When the cluster refuses.
    pub fn create_on(admin_url: &str, test: &str) -> Self {
        let clean: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(40)
            .collect();
        let name = format!("t_{clean}_{}", random_suffix());
        let mut admin = postgres::Client::connect(admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("{test}: cannot reach the test cluster {admin_url}: {e}"));
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        Self { url: with_database(admin_url, &name), admin_url: admin_url.to_string(), name }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain client on this database (for checks the store does not expose).
    ///
    /// # Panics
    /// When the cluster refuses.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// A private PostgreSQL cluster (`.ci/postgres-dev` into a temporary
/// directory), stopped and removed when dropped.
#[derive(Debug)]
pub struct TestCluster {
    state: tempfile::TempDir,
    /// Its superuser URL (database `postgres`).
    pub url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres-dev")
}

impl TestCluster {
    /// Starts one.
    ///
    /// # Panics
    /// When PostgreSQL is not installed ([`crate::missing_tool`]) or does not start.
    pub fn start(test: &str) -> Self {
        let installed = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().any(|v| v.path().join("bin/initdb").exists()))
            .unwrap_or(false);
        if !installed {
            crate::missing_tool(test, "PostgreSQL's initdb and pg_ctl", "apt-get install postgresql");
        }
        let state = tempfile::tempdir().expect("temp dir");
        let out = Command::new("bash").arg(script()).arg(state.path()).output().expect("run .ci/postgres-dev");
        assert!(out.status.success(), "{test}: .ci/postgres-dev failed: {}", String::from_utf8_lossy(&out.stderr));
        let url = std::fs::read_to_string(state.path().join("url")).expect("cluster url").trim().to_string();
        Self { state, url }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would.
    ///
    /// # Panics
    /// When `pg_ctl` fails.
    pub fn stop(&self) {
        let out = Command::new("bash").arg(script()).arg(self.state.path()).arg("stop").output().expect("pg_ctl");
        assert!(out.status.success(), "stopping the cluster: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts it again on the same port.
    ///
    /// # Panics
    /// When `pg_ctl` fails.
    pub fn restart(&self) {
        let out = Command::new("bash").arg(script()).arg(self.state.path()).arg("restart").output().expect("pg_ctl");
        assert!(out.status.success(), "restarting the cluster: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl TestCluster {
    /// Makes the server stop answering without closing anything (SIGSTOP to
    /// the postmaster and its backends): a frozen server, or a partition
    /// without a reset. [`TestCluster::resume`] undoes it; so does dropping
    /// the returned guard, so a failing test does not leave it frozen.
    ///
    /// # Panics
    /// When the signals cannot be sent.
    #[must_use = "the server resumes when the guard is dropped"]
    pub fn pause(&self) -> Paused<'_> {
        self.signal("pause");
        Paused { cluster: self }
    }

    /// Lets a paused server run again (SIGCONT).
    ///
    /// # Panics
    /// When the signals cannot be sent.
    pub fn resume(&self) {
        self.signal("resume");
    }

    fn signal(&self, verb: &str) {
        let out = Command::new("bash").arg(script()).arg(self.state.path()).arg(verb).output().expect("kill");
        assert!(out.status.success(), "{verb} the cluster: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A paused [`TestCluster`]: resumed when dropped.
#[derive(Debug)]
pub struct Paused<'c> {
    cluster: &'c TestCluster,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg(self.cluster.state.path()).arg("resume").output();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg(self.state.path()).arg("stop").output();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(with_database("postgres://scepd@127.0.0.1:5/postgres", "t_x"), "postgres://scepd@127.0.0.1:5/t_x");
        assert_eq!(with_database("postgres://u@h/postgres?sslmode=disable", "d"), "postgres://u@h/d?sslmode=disable");
    }
}
