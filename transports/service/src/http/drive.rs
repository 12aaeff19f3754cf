//! The driving loop shared by every transport.
//!
//! ```text
//! match engine.handle(request, now) {
//!     Respond(r) => write r,
//!     Issue(p)   => write p.resume(issuer.handle(p.request(), now).await, now),
//! }
//! ```
//!
//! [`PendingIssue::resume`](scep_engine::PendingIssue::resume) consumes the
//! pending request, so every request gets exactly one answer.
//!
//! On a profile with one-time challenges the engine hands the presented
//! challenge over ([`Authorization::OneTimeChallenge`]); it is consumed in the
//! [`ChallengeStore`] *before* the issuer is asked, so a refused challenge
//! issues nothing (signed CertRep FAILURE badRequest, RFC 8894 §3.3.2.2,
//! labelled `challenge_unknown`, `challenge_used`, `challenge_expired` or
//! `challenge_binding_mismatch`).
//!
//! On a profile in Intune API mode the engine hands the challenge, the
//! decrypted PKCS#10 and the transactionID over
//! ([`Authorization::IntuneApiChallenge`]); see [`crate::intune::api`] for the
//! order: local single use (`replay`), `validateRequest` (anything but
//! `Success`: badRequest `intune_rejected`, nothing issued), the issuer, then
//! `successNotification` before the certificate is returned (a certificate
//! whose notification failed is revoked through the issuer and refused as
//! `intune_notification_failed`), or `failureNotification` when the issuer
//! refused.
//!
//! On a profile with a compliance gate (`intune_compliance_check`, gate 9,
//! [`crate::intune::compliance`]) every enrolment and renewal is checked
//! after every other gate (in API mode: after `validateRequest`) and before
//! the issuer; a device not known to be compliant gets a CertRep FAILURE
//! badRequest labelled `compliance_failed` and nothing is issued (in API
//! mode Intune is sent a `failureNotification`). The check does IO, so the
//! engine hands the request out for it, as for the other IO gates.

use std::sync::Arc;

use scep_engine::issue::{Authorization, EnrollRequest, IssueRequest, RenewRequest};
use scep_engine::time::UnixTime;
use scep_engine::{Action, Engine, FailInfo, Outcome, PendingIssue, Request, Response};
use scep_issuers::{IssueOutcome, Issuer};

use crate::intune::api::{IntuneApi, IssuedFacts};
use crate::intune::compliance::{ComplianceGate, Verdict as ComplianceVerdict};

use crate::state::metrics::{ChallengeEvent, Metrics};
use crate::store::challenges::{ChallengeStore, Consumption, Presentation, Refusal};
use crate::store::protection::{IntuneUse, NonceUse, Verdict};

/// The durable protection state an Intune-authorised enrolment is checked
/// against after the engine's in-memory checks ([`crate::store::protection`]).
#[derive(Clone, Copy)]
pub struct DurableProtection<'a> {
    /// The store (SQLite or the shared PostgreSQL database).
    pub store: &'a Arc<dyn scep_store::ProtectionStore>,
    /// The profile's Intune validator (its rate limit and counters).
    pub intune: Option<&'a scep_engine::intune::IntuneValidator>,
}

/// Where one-time challenges are consumed and counted.
#[derive(Clone, Copy)]
pub struct OneTimeChallenges<'a> {
    /// The durable store.
    pub store: &'a dyn ChallengeStore,
    /// The metrics (`scepd_challenges_total`).
    pub metrics: &'a Metrics,
}

/// Handles one request with `engine`, asking `issuer` when the engine needs a
/// certificate, and returns the single response to write. `now` is read once
/// before handling and again before resuming (the issuer may take a while).
pub async fn drive<N>(engine: &Engine, issuer: &dyn Issuer, request: Request<'_>, now: N) -> Response
where
    N: Fn() -> UnixTime,
{
    drive_timed(engine, issuer, None, request, now).await.0
}

/// As [`drive_timed`], without an Intune API setup (a request on a profile in
/// Intune API mode is then refused).
pub async fn drive_timed<N>(
    engine: &Engine,
    issuer: &dyn Issuer,
    challenges: Option<OneTimeChallenges<'_>>,
    request: Request<'_>,
    now: N,
) -> (Response, Option<std::time::Duration>)
where
    N: Fn() -> UnixTime,
{
    drive_with(engine, issuer, challenges, IntuneHooks::default(), request, now).await
}

/// A profile's Intune parts that need IO outside the engine.
#[derive(Clone, Copy, Default)]
pub struct IntuneHooks<'a> {
    /// The Intune API setup (`intune_mode = "api"`).
    pub api: Option<&'a IntuneApi>,
    /// The compliance gate (gate 9).
    pub compliance: Option<&'a Arc<ComplianceGate>>,
    /// The durable replay and rate-limit state the Intune checks end in
    /// (without it, only the engine's in-memory checks run).
    pub protection: Option<DurableProtection<'a>>,
}

/// As [`drive()`], consuming one-time challenges in `challenges` (without a
/// store, a request presenting one is refused), having Intune validate
/// requests on a profile in Intune API mode through `intune.api`, claiming
/// Intune Connector nonces and counting devices in `intune.protection`,
/// checking device compliance through `intune.compliance`, and also
/// returning the time spent in the issuer when it was asked (the issuance
/// latency metric).
pub async fn drive_with<N>(
    engine: &Engine,
    issuer: &dyn Issuer,
    challenges: Option<OneTimeChallenges<'_>>,
    intune: IntuneHooks<'_>,
    request: Request<'_>,
    now: N,
) -> (Response, Option<std::time::Duration>)
where
    N: Fn() -> UnixTime,
{
    let response = match engine.handle(request, now()) {
        Action::Respond(response) => response,
        // Boxed: only enrollments carry the issuer's state, so the futures of
        // the many quick answers (discovery, refusals) stay small.
        Action::Issue(pending) => {
            return Box::pin(async move {
                let pending = match pending.one_time_challenge() {
                    None => pending,
                    Some(enrol) => {
                        let presented = presentation(enrol);
                        match consume(pending, presented, challenges, issuer.answers_resends_durably(), now()).await {
                            Ok(pending) => pending,
                            Err(refused) => return (refused, None),
                        }
                    }
                };
                let pending = match (intune.protection, intune_use(&pending, intune.protection)) {
                    (Some(protection), Some(check)) => match protect(pending, protection, check, now()).await {
                        Ok(pending) => pending,
                        Err(refused) => return (refused, None),
                    },
                    _ => pending,
                };
                if pending.intune_api_challenge().is_some() {
                    return issue_with_intune_api(pending, issuer, intune, &now).await;
                }
                let pending = match check_compliance(pending, intune.compliance, &now).await {
                    Ok(pending) => pending,
                    Err(refused) => return (refused, None),
                };
                let started = std::time::Instant::now();
                let outcome = issuer.handle(pending.request(), now()).await;
                let spent = started.elapsed();
                let mut response = pending.resume(outcome, now());
                response.outcome.issuer = Some(issuer.id().to_string());
                (response, Some(spent))
            })
            .await;
        }
        // A future engine action this transport does not know: answer, never hang.
        _ => Response {
            status: 500,
            content_type: "text/plain; charset=utf-8",
            body: b"internal error: unsupported engine action\n".to_vec(),
            outcome: Outcome {
                profile: engine.config().name.clone(),
                label: "unsupported_action",
                ..Outcome::default()
            },
        },
    };
    (response, None)
}

/// The Intune API path (issue 15): single use, validateRequest, issuer,
/// then the notification (see the module documentation).
async fn issue_with_intune_api<N>(
    pending: PendingIssue,
    issuer: &dyn Issuer,
    intune: IntuneHooks<'_>,
    now: &N,
) -> (Response, Option<std::time::Duration>)
where
    N: Fn() -> UnixTime,
{
    let Some(enrol) = pending.intune_api_challenge() else {
        return (
            pending.refuse(FailInfo::BAD_REQUEST, "intune_api_unavailable", "no Intune API challenge", now()),
            None,
        );
    };
    let Authorization::IntuneApiChallenge { challenge } = &enrol.authorization else {
        return (
            pending.refuse(FailInfo::BAD_REQUEST, "intune_api_unavailable", "no Intune API challenge", now()),
            None,
        );
    };
    let (challenge, transaction_id, csr_der) =
        (challenge.expose().to_string(), enrol.transaction_id.clone(), enrol.csr_der.clone());
    let profile = pending.outcome().profile.clone();
    let Some(api) = intune.api else {
        tracing::error!(profile, "Intune API challenge presented but the profile has no Intune API client");
        let detail = "this profile is in Intune API mode but has no Intune API client";
        return (pending.refuse(FailInfo::BAD_REQUEST, "intune_api_unavailable", detail, now()), None);
    };
    if let Err((label, detail)) = api.admit(&challenge, now()) {
        tracing::warn!(target: "scepd::intune", profile, transaction_id, label, "Intune API challenge refused locally");
        return (pending.refuse(FailInfo::BAD_REQUEST, label, detail, now()), None);
    }
    if let Err(failure) = api.validate(&challenge, &transaction_id, &csr_der).await {
        tracing::warn!(
            target: "scepd::intune", profile, transaction_id, label = failure.label,
            code = failure.code.as_deref().unwrap_or(""), detail = %failure.detail, "Intune validateRequest: not issued"
        );
        return (pending.refuse(FailInfo::BAD_REQUEST, failure.label, failure.detail, now()), None);
    }
    let pending = pending.with_detail("Intune validateRequest: Success");
    let pending = match check_compliance(pending, intune.compliance, now).await {
        Ok(pending) => pending,
        Err(refused) => {
            let why = refused.outcome.detail.clone().unwrap_or_else(|| "device not compliant".into());
            if let Err(f) = api.notify_failure(&transaction_id, &csr_der, &why).await {
                tracing::warn!(target: "scepd::intune", profile, transaction_id, detail = %f.detail, "Intune failureNotification failed");
            }
            return (refused, None);
        }
    };
    let started = std::time::Instant::now();
    let outcome = issuer.handle(pending.request(), now()).await;
    let spent = started.elapsed();
    let issuer_id = issuer.id().to_string();
    let finish = |mut r: Response| {
        r.outcome.issuer = Some(issuer_id.clone());
        (r, Some(spent))
    };
    match &outcome {
        IssueOutcome::Issued { certificate, .. } => {
            let facts = match IssuedFacts::of(certificate) {
                Ok(f) => f,
                Err(e) => {
                    let _ = api.notify_failure(&transaction_id, &csr_der, &e).await;
                    return finish(pending.refuse(FailInfo::BAD_REQUEST, "issuer_failed", e, now()));
                }
            };
            if api.client.settings().return_before_notification {
                api.notify_success_detached(transaction_id, csr_der, facts.clone());
                let pending = pending.with_detail(format!(
                    "Intune validateRequest: Success; successNotification sent without waiting; serial {}",
                    facts.serial
                ));
                return finish(pending.resume(outcome, now()));
            }
            match api.notify_success(&transaction_id, &csr_der, &facts).await {
                Ok(()) => {
                    let pending = pending.with_detail(format!(
                        "Intune validateRequest and successNotification: Success; serial {} thumbprint {}",
                        facts.serial, facts.thumbprint
                    ));
                    finish(pending.resume(outcome, now()))
                }
                Err(failure) => {
                    let revoked = api.revoke_undelivered(&facts, now()).await;
                    tracing::error!(
                        target: "scepd::intune", profile, transaction_id, detail = %failure.detail, revoked,
                        "Intune successNotification failed: certificate not delivered"
                    );
                    let detail = format!("{}; {revoked}", failure.detail);
                    finish(pending.refuse(FailInfo::BAD_REQUEST, "intune_notification_failed", detail, now()))
                }
            }
        }
        IssueOutcome::Pending => finish(pending.resume(outcome, now())),
        other => {
            let reason = match other {
                IssueOutcome::Rejected { reason, .. }
                | IssueOutcome::RejectedAs { reason, .. }
                | IssueOutcome::Unavailable { reason } => reason.clone(),
                _ => "the issuer gave no certificate".to_string(),
            };
            if let Err(f) = api.notify_failure(&transaction_id, &csr_der, &reason).await {
                tracing::warn!(target: "scepd::intune", profile, transaction_id, detail = %f.detail, "Intune failureNotification failed");
            }
            finish(pending.resume(outcome, now()))
        }
    }
}

/// Gate 9: with a compliance gate, an enrolment or renewal goes on only for a
/// device the gate allows; `Err` is the signed refusal (`compliance_failed`,
/// badRequest). Other requests (polls, GetCert, GetCRL) are not gated.
async fn check_compliance<N>(
    pending: PendingIssue,
    gate: Option<&Arc<ComplianceGate>>,
    now: &N,
) -> Result<PendingIssue, Response>
where
    N: Fn() -> UnixTime,
{
    let Some(gate) = gate else { return Ok(pending) };
    let (IssueRequest::Enroll(enrol) | IssueRequest::Renew(RenewRequest { enroll: enrol, .. })) = pending.request()
    else {
        return Ok(pending);
    };
    match gate.check(enrol).await {
        ComplianceVerdict::Allow(detail) => {
            let detail = match &pending.outcome().detail {
                Some(before) => format!("{before}; {detail}"),
                None => detail,
            };
            Ok(pending.with_detail(detail))
        }
        ComplianceVerdict::Refuse(detail) => {
            tracing::warn!(target: "scepd::intune", profile = %pending.outcome().profile,
                transaction_id = %enrol.transaction_id, detail = %detail, "compliance gate: not issued");
            Err(pending.refuse(FailInfo::BAD_REQUEST, "compliance_failed", detail, now()))
        }
    }
}

/// What the durable store must check for an enrolment the engine's Intune
/// checks admitted (a Connector challenge, or a renewal by certificate on an
/// Intune profile).
fn intune_use(pending: &PendingIssue, protection: Option<DurableProtection<'_>>) -> Option<IntuneUse> {
    let enrol = pending.intune_challenge()?;
    let limit = protection.and_then(|p| p.intune).map_or(0, |v| v.settings().per_device_rate_limit_24h);
    let (nonce, subject, issuer) = match &enrol.authorization {
        Authorization::Intune { subject, issuer, nonce, replay_scope, replay_until } => (
            Some(NonceUse { scope: replay_scope.clone(), nonce: nonce.clone(), until: *replay_until }),
            subject.clone(),
            issuer.clone(),
        ),
        Authorization::ExistingCertificate { intune_rate_subject: Some(subject), .. } => {
            (None, subject.clone(), scep_engine::intune::CERTIFICATE_RENEWAL_ISSUER.to_string())
        }
        _ => return None,
    };
    Some(IntuneUse {
        profile: enrol.profile.clone(),
        nonce,
        subject,
        issuer,
        limit,
        window_secs: scep_engine::intune::RATE_WINDOW_SECS,
    })
}

/// Claims the nonce and counts the device in the durable store: `Ok` with
/// the request to issue, or `Err` with the answer (a signed refusal, or 503
/// when the store does not answer: never a certificate on local state alone).
async fn protect(
    pending: PendingIssue,
    protection: DurableProtection<'_>,
    check: IntuneUse,
    now: UnixTime,
) -> Result<PendingIssue, Response> {
    let profile = check.profile.clone();
    let challenge = check.nonce.is_some();
    match crate::store::protection::check_intune(protection.store.clone(), check, now).await {
        Verdict::Admitted => Ok(pending),
        Verdict::Refused { label, fail_info, detail } => {
            if let Some(validator) = protection.intune {
                // A challenge was counted `success` by the gates; a renewal by
                // certificate was not counted yet.
                if challenge {
                    validator.counters().overturn_success(label);
                } else {
                    validator.counters().count_rejection(label);
                }
            }
            Err(pending.refuse(fail_info, label.as_str(), detail, now))
        }
        Verdict::Unavailable(why) => {
            tracing::error!(target: "scepd::store", profile, error = %why, "protection store unavailable: answering 503");
            let mut outcome = pending.outcome().clone();
            outcome.label = "store_unavailable";
            outcome.detail = Some(format!("Intune nonce and rate-limit store unavailable: {why}"));
            Err(Response {
                status: 503,
                content_type: "text/plain; charset=utf-8",
                body: b"service unavailable: the shared store cannot be reached; retry later\n".to_vec(),
                outcome,
            })
        }
    }
}

fn presentation(enrol: &EnrollRequest) -> Option<Presentation> {
    let Authorization::OneTimeChallenge { challenge, common_names } = &enrol.authorization else {
        return None;
    };
    Some(Presentation {
        profile: enrol.profile.clone(),
        challenge: challenge.clone(),
        common_names: common_names.clone(),
        subject_alt_names: enrol.subject_alt_names.iter().map(ToString::to_string).collect(),
        transaction_id: enrol.transaction_id.clone(),
    })
}

/// Consumes the presented one-time challenge: `Ok` with the request to issue,
/// or `Err` with the signed refusal.
async fn consume(
    pending: PendingIssue,
    presented: Option<Presentation>,
    challenges: Option<OneTimeChallenges<'_>>,
    resends_answered_durably: bool,
    now: UnixTime,
) -> Result<PendingIssue, Response> {
    let (Some(presented), Some(challenges)) = (presented, challenges) else {
        tracing::error!(profile = %pending.outcome().profile, "one-time challenge presented but no challenge store is configured");
        return Err(pending.refuse(
            FailInfo::BAD_REQUEST,
            "challenge_store_unavailable",
            "one-time challenges need the challenge store, which this service does not have",
            now,
        ));
    };
    let profile = presented.profile.clone();
    match challenges.store.consume(presented, now).await {
        Ok(Consumption::Consumed { id }) => {
            challenges.metrics.challenge(&profile, ChallengeEvent::Used);
            tracing::info!(target: "scepd::challenges", profile, id, "one-time challenge used");
            Ok(pending.with_detail(format!("one-time challenge #{id} used")))
        }
        // A resend reaches the issuer only when the issuer answers it from a
        // durable record: another issuer could sign a second certificate.
        Ok(Consumption::Resent { id }) if resends_answered_durably => {
            tracing::info!(target: "scepd::challenges", profile, id, "one-time challenge presented again by the transaction that used it: a resend");
            Ok(pending.with_detail(format!(
                "one-time challenge #{id} presented again by the transactionID that used it (a resend)"
            )))
        }
        Ok(Consumption::Resent { id }) => {
            challenges.metrics.challenge(&profile, ChallengeEvent::Refused);
            let refusal = Refusal::Used { id };
            Err(pending.refuse(FailInfo::BAD_REQUEST, refusal.label(), refusal.detail(), now))
        }
        Ok(Consumption::Refused(refusal)) => {
            challenges.metrics.challenge(&profile, ChallengeEvent::Refused);
            Err(pending.refuse(FailInfo::BAD_REQUEST, refusal.label(), refusal.detail(), now))
        }
        Err(e) => {
            tracing::error!(target: "scepd::challenges", profile, error = %e, "one-time challenge store failed: refusing");
            Err(pending.refuse(
                FailInfo::BAD_REQUEST,
                "challenge_store_unavailable",
                format!("the one-time challenge store failed: {e}"),
                now,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scep_engine::{Message, Method};

    use crate::testutil::{TestDir, section};
    use crate::wiring::profile::BuildContext;

    #[test]
    fn a_respond_action_is_the_answer() {
        let dir = TestDir::new();
        let p = section(&dir, "p").build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        let req = Request { method: Method::Get, operation: "GetCACaps", message: Message::None };
        let direct = match p.engine.handle(req, dir.now()) {
            Action::Respond(r) => r,
            other => panic!("GetCACaps must not need the issuer: {other:?}"),
        };
        let driven = futures_lite::future::block_on(drive(&p.engine, &*p.issuer, req, || dir.now()));
        assert_eq!(driven.status, direct.status);
        assert_eq!(driven.body, direct.body);
        assert_eq!(driven.content_type, direct.content_type);
    }
}
