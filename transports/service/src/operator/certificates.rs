//! The certificate inventory and revocation endpoints of the admin API.
//!
//! | method | path | answers |
//! |---|---|---|
//! | GET | `/api/v1/admin/scep/certificates?profile=&q=&serial=&device_id=&status=&expires_before=&limit=&cursor=` | certificates the local CAs issued, newest first ([`list`]) |
//! | GET | `/api/v1/admin/scep/certificates/{serial}` | one certificate: its record, PEM and history (audit events that issued, renewed or revoked it; the certificates that renewed it) |
//! | POST | `/api/v1/admin/scep/certificates/{serial}/revoke` | body `{"reason": "keyCompromise"}` (an RFC 5280 §5.3.1 CRLReason name; `removeFromCRL` is not one scepd writes): 200 / 400 bad reason / 404 unknown serial / 409 already revoked |
//! | GET | `/api/v1/admin/scep/charts` | the GUI's charts: enrolments and failures per hour over 7 days (from the audit log), valid certificates by expiry month |
//!
//! A `reader` key may use the GETs; revoking needs an `admin` key. Serials
//! are lower-case hex without leading zero bytes, as in the audit events; a
//! serial given with colons or in upper case, or percent-encoded in the
//! path, is accepted and normalised.
//!
//! The inventory is the local CAs' record ([`scep_issuers::Issuer::inventory`]):
//! the built-in `iss-local` and every `[[issuer]] type = "local"` a profile
//! issues through, each with its own row ids, merged into one list.
//! A Vault/OpenBao issuer keeps its own: its certificates are not listed, but
//! a serial the local CA does not know is offered to each Vault issuer's
//! revoke ([`scep_issuers::Issuer::revoke`], Vault's `pki/revoke` API), so
//! one endpoint revokes whichever issuer issued the certificate.
//!
//! Every revocation is one durable audit event (`certificate_revoked`, route
//! `admin`) naming the API key that made it and the reason; the answer is
//! sent after it is committed. Should the audit log fail after the issuer
//! committed the revocation, the answer is 500 `audit_unavailable` saying
//! that the certificate *is* revoked (a revocation cannot be taken back).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use scep_engine::UnixTime;
use scep_engine::pem;
use scep_issuers::local::store::{CertStatus, CertificateFilter, MAX_LIST_LIMIT, StatusFilter, StoredCertificate};
use scep_issuers::{Issuer, IssuerError, LocalCa, RevocationReason};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::operator::reply::{error, expiry_status, respond};
use crate::state::ServiceState;
use crate::store::audit::{AuditEvent, AuditQuery, MAX_QUERY_LIMIT};

/// `/api/v1/admin/scep/certificates`.
pub const CERTIFICATES: &str = "/api/v1/admin/scep/certificates";
/// `/api/v1/admin/scep/charts`.
pub const CHARTS: &str = "/api/v1/admin/scep/charts";

/// The parameters the list takes, for error messages.
const LIST_PARAMS: &str = "profile, q, serial, device_id, status, expires_before, limit, cursor, before_id";

/// Most inventories a [`Cursor`] names (far more than any configuration has).
const MAX_CURSOR_ENTRIES: usize = 64;

/// Default page size of the list.
const DEFAULT_LIMIT: u32 = 100;

/// Longest accepted `q` / `device_id` / `profile` value.
const MAX_TEXT: usize = 256;

/// Most audit events shown in one certificate's history.
const MAX_HISTORY: u32 = 100;

/// What a path under [`CERTIFICATES`] names.
#[derive(Debug, PartialEq, Eq)]
pub enum CertificatePath<'a> {
    /// The list.
    List,
    /// One certificate (the raw serial segment).
    One(&'a str),
    /// Its revoke action.
    Revoke(&'a str),
}

impl<'a> CertificatePath<'a> {
    /// Parses an admin path; `None` when it is not under [`CERTIFICATES`].
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix(CERTIFICATES)?;
        if rest.is_empty() {
            return Some(Self::List);
        }
        let rest = rest.strip_prefix('/')?;
        match rest.split_once('/') {
            None if !rest.is_empty() => Some(Self::One(rest)),
            Some((serial, "revoke")) if !serial.is_empty() => Some(Self::Revoke(serial)),
            _ => None,
        }
    }
}

/// Where a page of the merged list ended: per inventory (issuer id), the
/// row `id` of the last certificate of it shown so far. An inventory it
/// does not name has shown nothing yet and starts at its newest.
///
/// Row ids are per CA (each SQLite index numbers its own rows), so one id
/// cannot say where a list merged from several CAs ended: the cursor keeps
/// each CA's position. Written `iss-local:42,corp-ca:7` (issuer ids are
/// `[a-z0-9-]`), the `next_cursor` of one page, the `cursor` of the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<String, i64>);

impl Cursor {
    /// Parses the text [`Cursor::to_text`] writes; `None` when it is not that.
    pub fn parse(text: &str) -> Option<Self> {
        let mut positions = BTreeMap::new();
        for entry in text.split(',') {
            let (issuer, id) = entry.split_once(':')?;
            let valid_issuer = (1..=63).contains(&issuer.len())
                && issuer.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let id: i64 = id.parse().ok()?;
            if !valid_issuer || positions.insert(issuer.to_string(), id).is_some() {
                return None;
            }
        }
        (positions.len() <= MAX_CURSOR_ENTRIES).then_some(Self(positions))
    }

    /// `issuer:id` pairs, comma-separated, by issuer id.
    pub fn to_text(&self) -> String {
        self.0.iter().map(|(issuer, id)| format!("{issuer}:{id}")).collect::<Vec<_>>().join(",")
    }
}

/// Whether certificate `a` (of inventory `a_issuer`) comes before `b` in the
/// merged list: newer `issued_at` first, then by issuer id, then the later
/// row of one CA first.
fn listed_before(a_issuer: &str, a: &StoredCertificate, b_issuer: &str, b: &StoredCertificate) -> bool {
    (b.issued_at, a_issuer, b.id) < (a.issued_at, b_issuer, a.id)
}

/// Merges each inventory's page (newest first, as its store lists them)
/// into the first `limit` of the merged list, and the cursor after them.
///
/// A merge, not a sort: each inventory contributes a prefix of its own
/// order, so its position in the cursor is exact whatever the `issued_at`
/// of its rows (a clock stepped back leaves a CA's rows out of time order;
/// they stay in its order and none is skipped). An inventory that
/// contributes nothing keeps its position from `after`.
fn merge(
    pages: Vec<(String, Vec<StoredCertificate>)>,
    after: &Cursor,
    limit: usize,
) -> (Vec<(String, StoredCertificate)>, Cursor) {
    let mut next = Cursor(
        after.0.iter().filter(|(id, _)| pages.iter().any(|(i, _)| i == *id)).map(|(k, v)| (k.clone(), *v)).collect(),
    );
    let mut pages: Vec<(String, VecDeque<StoredCertificate>)> =
        pages.into_iter().map(|(issuer, page)| (issuer, page.into())).collect();
    let mut merged = Vec::new();
    while merged.len() < limit {
        let mut best: Option<(usize, &StoredCertificate)> = None;
        for (i, (issuer, page)) in pages.iter().enumerate() {
            let Some(c) = page.front() else { continue };
            if best.is_none_or(|(b, head)| listed_before(issuer, c, &pages[b].0, head)) {
                best = Some((i, c));
            }
        }
        let Some((i, _)) = best else { break };
        let (issuer, page) = &mut pages[i];
        let Some(c) = page.pop_front() else { break };
        next.0.insert(issuer.clone(), c.id);
        merged.push((issuer.clone(), c));
    }
    (merged, next)
}

/// A serial as the API takes it: hex, optional colons, any case; leading
/// zero bytes dropped (as [`scep_issuers::x509_build::serial_hex`] writes
/// them). `None` when it is not hex or empty or, without its leading zeros,
/// longer than 20 octets (RFC 5280 §4.1.2.2).
pub fn normalize_serial(raw: &str) -> Option<(String, Vec<u8>)> {
    let hex: String = raw.chars().filter(|c| *c != ':').map(|c| c.to_ascii_lowercase()).collect();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // The length is the serial's, not the zeros' it was written with.
    let hex = hex.trim_start_matches('0');
    if hex.len() > 40 {
        return None;
    }
    let padded = if hex.len() % 2 == 1 { format!("0{hex}") } else { hex.to_string() };
    let bytes: Vec<u8> =
        (0..padded.len()).step_by(2).filter_map(|i| u8::from_str_radix(padded.get(i..i + 2)?, 16).ok()).collect();
    // Zero is well-formed hex but never a certificate's serial (RFC 5280
    // §4.1.2.2: positive): it is looked up, and not found, like any other.
    let serial = scep_issuers::x509_build::trim_serial(&bytes).to_vec();
    if serial.is_empty() {
        return Some(("00".to_string(), vec![0]));
    }
    Some((scep_issuers::x509_build::serial_hex(&serial), serial))
}

/// The serial of a path segment: percent-decoded (RFC 3986 §2.1: `%30%62`
/// is `0b`, `%3A` a colon), then [`normalize_serial`]. The query decoder
/// also reads `+` as a space; neither is hex, so both are refused alike.
fn path_serial(raw: &str) -> Option<(String, Vec<u8>)> {
    normalize_serial(&crate::query::percent_decode(raw)?)
}

/// The RFC 5280 §5.3.1 reason for its name (`keyCompromise`, ...), case as
/// the RFC writes it.
pub fn parse_reason(name: &str) -> Option<RevocationReason> {
    (0..=10u8).filter_map(RevocationReason::from_code).find(|r| r.name() == name)
}

/// The names [`parse_reason`] takes, for error messages.
fn reason_names() -> String {
    (0..=10u8).filter_map(RevocationReason::from_code).map(RevocationReason::name).collect::<Vec<_>>().join(", ")
}

/// Every issuer of the running profiles, once each (by id).
fn issuers(state: &ServiceState) -> Vec<Arc<dyn Issuer>> {
    let mut seen = HashSet::new();
    state.profiles().iter().filter(|p| seen.insert(p.issuer.id().to_string())).map(|p| Arc::clone(&p.issuer)).collect()
}

/// The issuers that keep an inventory, with their id.
fn inventories(state: &ServiceState) -> Vec<(String, LocalCa)> {
    issuers(state).iter().filter_map(|i| i.inventory().map(|ca| (i.id().to_string(), ca.clone()))).collect()
}

/// `valid`, `revoked` or `expired` at `now`.
fn status_name(c: &StoredCertificate, now: UnixTime) -> &'static str {
    match c.status {
        CertStatus::Revoked { .. } => "revoked",
        CertStatus::Valid if c.not_after < now => "expired",
        CertStatus::Valid => "valid",
    }
}

/// The JSON of one certificate record.
fn certificate_json(issuer: &str, c: &StoredCertificate, now: UnixTime) -> Value {
    let (revoked_at, reason) = match c.status {
        CertStatus::Revoked { at, reason } => (json!(at.to_rfc3339()), json!(reason.name())),
        CertStatus::Valid => (Value::Null, Value::Null),
    };
    let sans: Vec<&str> = c.sans.split(", ").filter(|s| !s.is_empty()).collect();
    json!({
        "id": c.id,
        "serial": c.serial_hex,
        "issuer_id": issuer,
        "profile": c.profile,
        "subject": c.subject,
        "subject_alt_names": sans,
        "transaction_id": c.transaction_id,
        "intune_device_id": c.intune_device,
        "issued_at": c.issued_at.to_rfc3339(),
        "not_before": c.not_before.to_rfc3339(),
        "not_after": c.not_after.to_rfc3339(),
        "days_to_expiry": (c.not_after.secs() - now.secs()).div_euclid(86_400),
        "expiry_status": expiry_status(c.not_after, now),
        "status": status_name(c, now),
        "revoked_at": revoked_at,
        "revocation_reason": reason,
        "renewal_of": c.renewal_of,
    })
}

fn bad(message: &str) -> http::Response<Full<Bytes>> {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn text_param(name: &str, v: String) -> Result<String, String> {
    if v.is_empty() || v.chars().count() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(format!("{name}: must be 1 to {MAX_TEXT} characters, no control characters"));
    }
    Ok(v)
}

/// `expires_before`: Unix seconds or an RFC 3339 date-time.
fn parse_time(v: &str) -> Option<UnixTime> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok().map(UnixTime::from_secs);
    }
    let fixed: String = v.char_indices().map(|(i, c)| if c == ' ' && i > 10 { '+' } else { c }).collect();
    UnixTime::parse_rfc3339(&fixed)
}

/// Where a page of the list starts, from the query.
#[derive(Debug, PartialEq, Eq)]
enum PageStart {
    /// At the newest certificate.
    Newest,
    /// After the previous page (`cursor`, its `next_cursor`).
    Cursor(Cursor),
    /// `before_id`, the earlier single-CA form: only rows with a smaller id.
    BeforeId(i64),
}

/// The list's query; the error is the 400 message.
fn parse_filter(query: &str, now: UnixTime) -> Result<(CertificateFilter, PageStart), String> {
    let mut f = CertificateFilter::newest(DEFAULT_LIMIT, now);
    // `cursor` carries every CA's position; `before_id`, the earlier form,
    // only one CA's: with both, `cursor` is the one that pages exactly.
    let (mut cursor, mut before_id) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(v) = crate::query::percent_decode(v).map(std::borrow::Cow::into_owned) else {
            return Err(format!("{k}: bad percent-encoding"));
        };
        match k {
            "profile" => f.profile = Some(text_param(k, v)?),
            "q" => f.text = Some(text_param(k, v)?),
            "device_id" => f.intune_device = Some(text_param(k, v)?),
            "serial" => match normalize_serial(&v) {
                Some((hex, _)) => f.serial_hex = Some(hex),
                None => return Err("serial: must be hexadecimal (colons allowed), at most 20 octets".to_string()),
            },
            "status" => match StatusFilter::parse(&v) {
                Some(s) => f.status = Some(s),
                None => return Err("status: must be valid, revoked or expired".to_string()),
            },
            "expires_before" => match parse_time(&v) {
                Some(t) => f.expires_before = Some(t),
                None => {
                    return Err(
                        "expires_before: must be an RFC 3339 date-time (2030-01-01T00:00:00Z) or Unix seconds".into()
                    );
                }
            },
            "limit" => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => f.limit = n,
                _ => return Err(format!("limit: must be a number from 1 to {MAX_LIST_LIMIT}")),
            },
            "cursor" if cursor.is_some() => return Err("cursor: give it once".to_string()),
            "before_id" if before_id.is_some() => return Err("before_id: give it once".to_string()),
            "cursor" => match Cursor::parse(&v) {
                Some(c) => cursor = Some(c),
                None => return Err("cursor: must be the next_cursor of the previous page".to_string()),
            },
            "before_id" => match v.parse::<i64>() {
                Ok(n) => before_id = Some(n),
                Err(_) => return Err("before_id: must be a number".to_string()),
            },
            other => return Err(format!("unknown parameter {other:?} ({LIST_PARAMS})")),
        }
    }
    let start = match (cursor, before_id) {
        (Some(c), _) => PageStart::Cursor(c),
        (None, Some(n)) => PageStart::BeforeId(n),
        (None, None) => PageStart::Newest,
    };
    Ok((f, start))
}

fn issuer_failed(e: &IssuerError) -> http::Response<Full<Bytes>> {
    error(StatusCode::SERVICE_UNAVAILABLE, "issuer_unavailable", &e.to_string())
}

/// `GET /certificates`: `{"certificates": [...], "next_cursor": text|null,
/// "next_before_id": id|null}`, both set when the page is full.
///
/// The list merges every inventory, newest `issued_at` first (ties by issuer
/// id, then the CA's later row first); each CA's own rows keep the order it
/// recorded them in. `cursor` (the previous page's `next_cursor`) continues
/// exactly where that page ended, with any number of CAs (see [`Cursor`]).
/// `before_id` (the previous page's `next_before_id`: the last row id) is
/// the earlier form: a row id names a position in one CA only, so it is
/// answered 400 while more than one local CA keeps an inventory.
pub async fn list(state: &ServiceState, query: &str) -> http::Response<Full<Bytes>> {
    let now = UnixTime::now();
    let (filter, start) = match parse_filter(query, now) {
        Ok(f) => f,
        Err(why) => return bad(&why),
    };
    let cas = inventories(state);
    let after = match start {
        PageStart::Newest => Cursor::default(),
        PageStart::Cursor(c) => c,
        PageStart::BeforeId(id) => match cas.as_slice() {
            [] => Cursor::default(),
            [(issuer, _)] => Cursor(BTreeMap::from([(issuer.clone(), id)])),
            _ => {
                return bad(&format!(
                    "before_id: row ids are per CA and this server lists {} local CAs: page with cursor \
                     (the next_cursor of the previous page)",
                    cas.len()
                ));
            }
        },
    };
    let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX);
    let positions = after.clone();
    let pages = blocking::unblock(move || {
        let mut pages = Vec::new();
        for (id, ca) in cas {
            let f = CertificateFilter { before_id: positions.0.get(&id).copied(), ..filter.clone() };
            let page = ca.certificates(&f)?;
            pages.push((id, page));
        }
        Ok::<_, IssuerError>(pages)
    })
    .await;
    let pages = match pages {
        Ok(p) => p,
        Err(e) => return issuer_failed(&e),
    };
    let (found, next) = merge(pages, &after, limit);
    let full = found.len() == limit;
    let next_cursor = if full { json!(next.to_text()) } else { Value::Null };
    let next_before_id = match found.last() {
        Some((_, c)) if full => json!(c.id),
        _ => Value::Null,
    };
    let list: Vec<Value> = found.iter().map(|(id, c)| certificate_json(id, c, now)).collect();
    respond(
        StatusCode::OK,
        &json!({ "certificates": list, "next_cursor": next_cursor, "next_before_id": next_before_id }),
    )
}

/// Finds a serial in the inventories.
async fn find(state: &ServiceState, serial_hex: &str) -> Result<Option<(String, StoredCertificate)>, IssuerError> {
    let cas = inventories(state);
    let filter =
        CertificateFilter { serial_hex: Some(serial_hex.to_string()), ..CertificateFilter::newest(1, UnixTime::now()) };
    blocking::unblock(move || {
        for (id, ca) in cas {
            if let Some(c) = ca.certificates(&filter)?.into_iter().next() {
                return Ok(Some((id, c)));
            }
        }
        Ok(None)
    })
    .await
}

/// `GET /certificates/{serial}`: the record, `pem`, `renewed_by` and `history`.
pub async fn one(state: &ServiceState, raw_serial: &str) -> http::Response<Full<Bytes>> {
    let Some((hex, _)) = path_serial(raw_serial) else {
        return bad("serial: must be hexadecimal (colons allowed), at most 20 octets");
    };
    let (issuer, cert) = match find(state, &hex).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&hex),
        Err(e) => return issuer_failed(&e),
    };
    let now = UnixTime::now();
    let ca = inventories(state).into_iter().find(|(id, _)| *id == issuer).map(|(_, ca)| ca);
    let successor_hex = hex.clone();
    let renewed_by = match ca {
        Some(ca) => match blocking::unblock(move || ca.renewals_of(&successor_hex)).await {
            Ok(list) => list.into_iter().map(|c| c.serial_hex).collect::<Vec<_>>(),
            Err(e) => return issuer_failed(&e),
        },
        None => Vec::new(),
    };
    let history = match state.audit() {
        Some(log) => {
            let q = AuditQuery {
                certificate: Some(hex.clone()),
                limit: MAX_HISTORY.min(MAX_QUERY_LIMIT),
                ..AuditQuery::default()
            };
            match log.query(q).await {
                Ok(events) => json!(events),
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.label(), &e.message),
            }
        }
        None => Value::Null,
    };
    let mut v = certificate_json(&issuer, &cert, now);
    if let Value::Object(m) = &mut v {
        m.insert("pem".into(), json!(pem::encode("CERTIFICATE", &cert.der)));
        m.insert("renewed_by".into(), json!(renewed_by));
        m.insert("history".into(), history);
    }
    respond(StatusCode::OK, &v)
}

fn not_found(hex: &str) -> http::Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, "unknown_serial", &format!("no certificate with serial {hex} was issued here"))
}

/// The body of the revoke action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

/// `POST /certificates/{serial}/revoke` (admin key `key`).
pub async fn revoke(state: &ServiceState, raw_serial: &str, body: &[u8], key: &str) -> http::Response<Full<Bytes>> {
    let parsed: RevokeBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return bad(&format!("body must be {{\"reason\": \"<RFC 5280 reason name>\"}}: {e}")),
    };
    let Some(reason) = parse_reason(&parsed.reason) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_reason",
            &format!("reason: {:?} is not an RFC 5280 CRLReason name ({})", parsed.reason, reason_names()),
        );
    };
    let Some((hex, serial)) = path_serial(raw_serial) else {
        return bad("serial: must be hexadecimal (colons allowed), at most 20 octets");
    };
    // The issuer that keeps this serial; else every issuer without an
    // inventory (Vault) is asked in turn.
    let record = match find(state, &hex).await {
        Ok(found) => found,
        Err(e) => return issuer_failed(&e),
    };
    let all = issuers(state);
    let candidates: Vec<&Arc<dyn Issuer>> = match &record {
        Some((id, _)) => all.iter().filter(|i| i.id() == id).collect(),
        None => all.iter().filter(|i| i.inventory().is_none()).collect(),
    };
    let now = UnixTime::now();
    let mut done = None;
    for issuer in candidates {
        match issuer.revoke(&serial, reason, now).await {
            Ok(r) => {
                done = Some((issuer.id().to_string(), r));
                break;
            }
            Err(IssuerError::UnknownSerial(_) | IssuerError::Unsupported(_)) => {}
            Err(IssuerError::AlreadyRevoked(_)) => {
                return error(
                    StatusCode::CONFLICT,
                    "already_revoked",
                    &format!("certificate {hex} is already revoked"),
                );
            }
            Err(e) => return issuer_failed(&e),
        }
    }
    let Some((issuer_id, revocation)) = done else { return not_found(&hex) };
    tracing::info!(target: "scepd::admin", key, serial = %hex, issuer = %issuer_id, reason = %reason, "certificate revoked");
    let (profile, subject) =
        record.as_ref().map_or((String::new(), None), |(_, c)| (c.profile.clone(), Some(c.subject.clone())));
    if let Some(audit) = state.audit() {
        let event = AuditEvent::revocation(
            &profile,
            &hex,
            subject,
            &issuer_id,
            format!("revoked by API key {key}, reason {reason}"),
            revocation.revoked_at,
        );
        if let Err(e) = audit.record(event).await {
            tracing::error!(target: "scepd::audit", error = %e, serial = %hex, "revocation committed but its audit event was not stored");
            state.metrics().audit_failure();
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.label(),
                &format!("certificate {hex} IS revoked, but the audit log could not record it: {e}"),
            );
        }
    }
    respond(
        StatusCode::OK,
        &json!({
            "serial": hex,
            "issuer_id": issuer_id,
            "status": "revoked",
            "revoked_at": revocation.revoked_at.to_rfc3339(),
            "revocation_reason": reason.name(),
            "revoked_by": key,
        }),
    )
}

/// `GET /charts`: `{"activity": [{"hour_unix", "enrolments", "failures"}, ...]}`
/// for the last 7 days (the GUI cuts the last 24 hours from it) and
/// `{"expiry_months": [{"month": "2027-03", "certificates": n}, ...]}`
/// (valid certificates of every inventory).
pub async fn charts(state: &ServiceState) -> http::Response<Full<Bytes>> {
    let now = UnixTime::now();
    let activity = match state.audit() {
        Some(log) => match log.hourly(now.secs() - 7 * 86_400).await {
            Ok(hours) => json!(hours),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.label(), &e.message),
        },
        None => Value::Null,
    };
    let cas = inventories(state);
    let months = blocking::unblock(move || {
        let mut months: BTreeMap<String, u64> = BTreeMap::new();
        for (_, ca) in cas {
            for (month, n) in ca.inventory_summary(now)?.valid_by_expiry_month {
                *months.entry(month).or_default() += n;
            }
        }
        Ok::<_, IssuerError>(months)
    })
    .await;
    let months = match months {
        Ok(m) => m,
        Err(e) => return issuer_failed(&e),
    };
    let months: Vec<Value> = months.into_iter().map(|(m, n)| json!({ "month": m, "certificates": n })).collect();
    respond(StatusCode::OK, &json!({ "now_unix": now.secs(), "activity": activity, "expiry_months": months }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(CertificatePath::parse(CERTIFICATES), Some(CertificatePath::List));
        assert_eq!(CertificatePath::parse("/api/v1/admin/scep/certificates/0a1b"), Some(CertificatePath::One("0a1b")));
        assert_eq!(
            CertificatePath::parse("/api/v1/admin/scep/certificates/0a1b/revoke"),
            Some(CertificatePath::Revoke("0a1b"))
        );
        for bad in [
            "/api/v1/admin/scep/certificates/",
            "/api/v1/admin/scep/certificates//revoke",
            "/api/v1/admin/scep/certificates/0a/other",
            "/api/v1/admin/scep/certificatesx",
            "/api/v1/admin/scep/events",
        ] {
            assert_eq!(CertificatePath::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn serials_normalise_like_the_audit_events() {
        assert_eq!(normalize_serial("0A:1b").unwrap().0, "0a1b");
        assert_eq!(normalize_serial("00:00:7f").unwrap(), ("7f".to_string(), vec![0x7f]));
        assert_eq!(normalize_serial("abc").unwrap().0, "0abc");
        // Zero is looked up (and never found) rather than refused as malformed.
        assert_eq!(normalize_serial("00").unwrap(), ("00".to_string(), vec![0]));
        // Leading zeros do not count towards the 20 octets (they were refused
        // past 40 hex digits in all).
        let max = "7f".repeat(20);
        assert_eq!(normalize_serial(&format!("{}{max}", "0".repeat(40))).unwrap().0, max);
        assert_eq!(normalize_serial(&"0".repeat(42)).unwrap().0, "00");
        for bad in ["", ":", "xyz", "0x12", &"1".repeat(41), &format!("00{}", "1".repeat(41))] {
            assert_eq!(normalize_serial(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_next_cursor_never_writes() {
        let c = Cursor::parse("iss-local:42,corp-ca:7").unwrap();
        assert_eq!(c.to_text(), "corp-ca:7,iss-local:42");
        assert_eq!(Cursor::parse(&c.to_text()), Some(c));
        let long = format!("{}:1", "a".repeat(64));
        let many = (0..=MAX_CURSOR_ENTRIES).map(|i| format!("ca-{i}:1")).collect::<Vec<_>>().join(",");
        for bad in ["", ":", "a:", ":1", "a:x", "A:1", "a b:1", "a:1,", "a:1,a:2", &long, &many] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    fn stored(id: i64, issued_at: i64) -> StoredCertificate {
        StoredCertificate {
            id,
            serial_hex: format!("{id:02x}"),
            profile: "p".into(),
            transaction_id: String::new(),
            subject: String::new(),
            sans: String::new(),
            not_before: UnixTime::from_secs(0),
            not_after: UnixTime::from_secs(0),
            der: Vec::new(),
            issued_at: UnixTime::from_secs(issued_at),
            renewal_of: None,
            intune_device: None,
            status: CertStatus::Valid,
        }
    }

    /// An inventory that adds nothing to a page keeps its position; one no
    /// longer configured is dropped from the cursor.
    #[test]
    fn the_merge_takes_a_prefix_of_each_inventory_and_keeps_idle_positions() {
        let after = Cursor::parse("a:9,b:4,gone:3").unwrap();
        let pages = vec![
            ("a".to_string(), vec![stored(8, 50), stored(7, 60), stored(6, 10)]),
            ("b".to_string(), vec![stored(3, 20)]),
        ];
        let (merged, next) = merge(pages.clone(), &after, 2);
        let got: Vec<(&str, i64)> = merged.iter().map(|(i, c)| (i.as_str(), c.id)).collect();
        // Row 7 is later than row 8 but comes after it: one CA's rows keep their order.
        assert_eq!(got, [("a", 8), ("a", 7)]);
        assert_eq!(next.to_text(), "a:7,b:4");
        let (merged, next) = merge(pages, &after, 10);
        let got: Vec<(&str, i64)> = merged.iter().map(|(i, c)| (i.as_str(), c.id)).collect();
        assert_eq!(got, [("a", 8), ("a", 7), ("b", 3), ("a", 6)]);
        assert_eq!(next.to_text(), "a:6,b:3");
    }

    #[test]
    fn reasons_are_rfc_5280_names() {
        assert_eq!(parse_reason("keyCompromise"), Some(RevocationReason::KeyCompromise));
        assert_eq!(parse_reason("cACompromise"), Some(RevocationReason::CaCompromise));
        assert_eq!(parse_reason("unspecified"), Some(RevocationReason::Unspecified));
        assert_eq!(parse_reason("keycompromise"), None);
        assert_eq!(parse_reason("removeFromCRL"), None);
        assert!(reason_names().contains("privilegeWithdrawn"));
    }
}
