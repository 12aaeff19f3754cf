//! Versioned schema migrations.
//!
//! Each migration has a version (1, 2, ...), a name and its SQL for each
//! backend. Applied versions are rows of `scepd_schema`; a database is at the
//! highest version recorded there. Migrations run in one transaction with the
//! version row, under a lock that serialises nodes starting at once:
//! PostgreSQL's `pg_advisory_xact_lock` ([`ADVISORY_LOCK_KEY`]), SQLite's
//! `BEGIN IMMEDIATE`. The second node waits, then finds nothing left to do.
//! A database at a version newer than [`LATEST`] is refused (an older scepd
//! must not write to a schema it does not know).

/// One schema change.
#[derive(Debug)]
pub struct Migration {
    /// Its version: consecutive from 1.
    pub version: i64,
    /// What it does, recorded with it.
    pub name: &'static str,
    /// Its SQL for SQLite.
    pub sqlite: &'static str,
    /// Its SQL for PostgreSQL.
    pub postgres: &'static str,
}

/// The PostgreSQL advisory lock migrations take (`"scepd-mg"` in ASCII).
pub const ADVISORY_LOCK_KEY: i64 = 0x7363_6570_642d_6d67;

/// The table recording applied versions (same SQL on both backends).
pub const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS scepd_schema (
    version     BIGINT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    applied_at  BIGINT NOT NULL
)";

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "protection state: Intune replay nonces and per-device rate-limit windows",
        sqlite: "
CREATE TABLE replay_nonces (
    key         BLOB PRIMARY KEY NOT NULL,   -- SHA-256 of (anchor scope, nonce)
    expires_at  INTEGER NOT NULL             -- Unix seconds; refused while > now
) STRICT;
CREATE INDEX replay_nonces_by_expiry ON replay_nonces (expires_at);
CREATE TABLE rate_devices (
    device      BLOB PRIMARY KEY NOT NULL,   -- SHA-256 of (profile, sub, iss): the row each admission locks
    expires_at  INTEGER NOT NULL             -- when its last event leaves its window
) STRICT;
CREATE INDEX rate_devices_by_expiry ON rate_devices (expires_at);
CREATE TABLE rate_events (
    device      BLOB NOT NULL,
    at          INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX rate_events_by_device ON rate_events (device, at);
CREATE INDEX rate_events_by_expiry ON rate_events (expires_at);
",
        postgres: "
CREATE TABLE replay_nonces (
    key         BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX replay_nonces_by_expiry ON replay_nonces (expires_at);
CREATE TABLE rate_devices (
    device      BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX rate_devices_by_expiry ON rate_devices (expires_at);
CREATE TABLE rate_events (
    device      BYTEA NOT NULL,
    at          BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX rate_events_by_device ON rate_events (device, at);
CREATE INDEX rate_events_by_expiry ON rate_events (expires_at);
",
    },
    Migration {
        version: 2,
        name: "one-time challenges shared by every node (PostgreSQL; SQLite keeps challenges.sqlite)",
        // The embedded store keeps its challenges in their own file (challenges.sqlite).
        sqlite: "",
        postgres: "
CREATE TABLE one_time_challenges (
    id                    BIGSERIAL PRIMARY KEY,
    secret_sha256         BYTEA NOT NULL UNIQUE,
    profile               TEXT NOT NULL,
    bound_common_name     TEXT,
    bound_sans            TEXT NOT NULL DEFAULT '[]',
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    created_by            TEXT NOT NULL,
    used_at               BIGINT,
    used_by_transaction   TEXT,
    expired_reported_at   BIGINT
);
CREATE INDEX one_time_challenges_expiry ON one_time_challenges (expires_at);
",
    },
    Migration {
        version: 3,
        name: "claim a nonce and count a device in one round trip (PostgreSQL function)",
        sqlite: "",
        // Returns -1: replay (nothing counted); 0: admitted; > 0: limited, the retry time.
        postgres: "
CREATE FUNCTION scepd_claim_and_admit(p_key BYTEA, p_expires BIGINT, p_device BYTEA, p_now BIGINT,
                                      p_window BIGINT, p_limit INT) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    won INT;
    n BIGINT;
    oldest BIGINT;
BEGIN
    IF p_key IS NOT NULL THEN
        INSERT INTO replay_nonces (key, expires_at) VALUES (p_key, p_expires)
            ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
            WHERE replay_nonces.expires_at <= p_now
            RETURNING 1 INTO won;
        IF won IS NULL THEN
            RETURN -1;
        END IF;
    END IF;
    IF p_limit = 0 THEN
        RETURN 0;
    END IF;
    -- The upsert takes the device row's lock until commit: admissions of one device queue here.
    INSERT INTO rate_devices (device, expires_at) VALUES (p_device, p_now + p_window)
        ON CONFLICT (device) DO UPDATE SET expires_at = GREATEST(rate_devices.expires_at, EXCLUDED.expires_at);
    SELECT COUNT(*), MIN(at) INTO n, oldest FROM rate_events WHERE device = p_device AND at > p_now - p_window;
    IF n >= p_limit THEN
        RETURN GREATEST(oldest + p_window, 1);
    END IF;
    INSERT INTO rate_events (device, at, expires_at) VALUES (p_device, p_now, p_now + p_window);
    RETURN 0;
END
$$;
",
    },
    Migration {
        version: 4,
        name: "the local CA's certificate index shared by every node (PostgreSQL; SQLite keeps local-ca.sqlite)",
        // The embedded store keeps the index in its own file (local-ca.sqlite).
        sqlite: "",
        // Serials are unique per CA (the primary key); `id` orders the
        // inventory's pages; `ca_counters` holds each CA's last cRLNumber and
        // its revocation counter, both bumped atomically (scep-issuers,
        // local/index/postgres.rs). A certificate renews once: the partial
        // unique index backs the row lock the renewal takes.
        postgres: "
CREATE TABLE ca_certificates (
    id              BIGSERIAL NOT NULL UNIQUE,
    ca_id           TEXT NOT NULL,
    serial          TEXT NOT NULL,
    profile         TEXT NOT NULL,
    transaction_id  TEXT NOT NULL,
    subject         TEXT NOT NULL,
    sans            TEXT NOT NULL,
    not_before      BIGINT NOT NULL,
    not_after       BIGINT NOT NULL,
    der             BYTEA NOT NULL,
    issued_at       BIGINT NOT NULL,
    renewal_of      TEXT,
    status          TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at      BIGINT,
    reason          INT,
    intune_device   TEXT,
    issued_by       TEXT,           -- the node that recorded it ([server] node_name): start-up audit reconciliation
    PRIMARY KEY (ca_id, serial)
);
CREATE INDEX ca_certificates_by_transaction ON ca_certificates (ca_id, profile, transaction_id);
CREATE INDEX ca_certificates_revoked ON ca_certificates (ca_id) WHERE status = 'revoked';
CREATE UNIQUE INDEX ca_certificates_renewed_once ON ca_certificates (ca_id, renewal_of) WHERE renewal_of IS NOT NULL;
CREATE INDEX ca_certificates_by_not_after ON ca_certificates (ca_id, not_after);
CREATE INDEX ca_certificates_by_id ON ca_certificates (ca_id, id);
CREATE INDEX ca_certificates_by_issued_at ON ca_certificates (ca_id, issued_at);
CREATE TABLE ca_counters (
    ca_id        TEXT PRIMARY KEY,
    crl_number   BIGINT NOT NULL DEFAULT 0,
    revocations  BIGINT NOT NULL DEFAULT 0
);
-- A new enrolment (not a renewal) in one round trip: lock the transactionID
-- across nodes, look for its certificate (a fresh snapshot: after the lock),
-- insert. 0: inserted; 1: the transactionID already has a certificate (the
-- caller reads it); 2: the serial is taken (the caller draws another).
CREATE FUNCTION scepd_record_certificate(p_lock_class INT, p_lock_key TEXT, p_ca_id TEXT, p_serial TEXT,
    p_profile TEXT, p_transaction_id TEXT, p_subject TEXT, p_sans TEXT, p_not_before BIGINT,
    p_not_after BIGINT, p_der BYTEA, p_issued_at BIGINT, p_intune_device TEXT, p_issued_by TEXT) RETURNS INT
LANGUAGE plpgsql AS $$
DECLARE
    inserted BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_class, hashtext(p_lock_key));
    IF EXISTS (SELECT 1 FROM ca_certificates
               WHERE ca_id = p_ca_id AND profile = p_profile AND transaction_id = p_transaction_id) THEN
        RETURN 1;
    END IF;
    INSERT INTO ca_certificates (ca_id, serial, profile, transaction_id, subject, sans, not_before, not_after,
                                 der, issued_at, renewal_of, status, intune_device, issued_by)
        VALUES (p_ca_id, p_serial, p_profile, p_transaction_id, p_subject, p_sans, p_not_before, p_not_after,
                p_der, p_issued_at, NULL, 'valid', p_intune_device, p_issued_by)
        ON CONFLICT (ca_id, serial) DO NOTHING RETURNING id INTO inserted;
    IF inserted IS NULL THEN
        RETURN 2;
    END IF;
    RETURN 0;
END
$$;
",
    },
    Migration {
        version: 5,
        name: "one audit trail for every node, and the Intune revocation-sync lease (PostgreSQL; SQLite keeps audit.db)",
        // The embedded store keeps its audit log in audit.db; its revocation
        // sync runs on its one node.
        sqlite: "",
        postgres: "
CREATE TABLE audit_events (
    id                 BIGSERIAL PRIMARY KEY,
    node               TEXT NOT NULL,
    time               TEXT NOT NULL,
    time_unix          BIGINT NOT NULL,
    profile            TEXT NOT NULL,
    action             TEXT NOT NULL,
    operation          TEXT NOT NULL,
    message_type       TEXT,
    transaction_id     TEXT,
    outcome            TEXT NOT NULL,
    http_status        INTEGER NOT NULL,
    pki_status         TEXT,
    fail_info          TEXT,
    subject            TEXT,
    subject_alt_names  TEXT NOT NULL,
    serial             TEXT,
    renewal_of         TEXT,
    intune_subject     TEXT,
    intune_issuer      TEXT,
    intune_nonce       TEXT,
    issuer             TEXT,
    client_addr        TEXT,
    route              TEXT NOT NULL,
    detail             TEXT,
    count              BIGINT NOT NULL DEFAULT 1,
    first_time         TEXT
);
CREATE INDEX audit_events_profile ON audit_events (profile, id);
CREATE INDEX audit_events_action ON audit_events (action, id);
CREATE INDEX audit_events_time ON audit_events (time_unix);
CREATE INDEX audit_events_serial ON audit_events (serial) WHERE serial IS NOT NULL;
CREATE TABLE intune_revocation_sync (
    profile      TEXT PRIMARY KEY,
    next_run_at  BIGINT NOT NULL,   -- Unix ms: the next node to reach this time takes the lease
    node         TEXT,              -- the node holding (or last holding) the lease
    last_report  TEXT,              -- JSON: the last run's report, for intune/stats on every node
    reported_at  BIGINT
);
",
    },
];

/// The version this scepd brings the schema to.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The migrations after `current`, in order.
///
/// # Errors
/// A [`crate::StoreError::Schema`] when `current` is newer than [`LATEST`].
pub fn pending(current: i64) -> Result<&'static [Migration], crate::StoreError> {
    if current > LATEST {
        return Err(crate::StoreError::Schema(format!(
            "the database is at schema version {current}, newer than this scepd's {LATEST}; upgrade scepd"
        )));
    }
    let done = MIGRATIONS.iter().take_while(|m| m.version <= current).count();
    Ok(&MIGRATIONS[done..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
        assert_eq!(pending(0).unwrap().len(), MIGRATIONS.len());
        assert!(pending(LATEST).unwrap().is_empty());
        assert!(matches!(pending(LATEST + 1), Err(crate::StoreError::Schema(_))));
    }
}
