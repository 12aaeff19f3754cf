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

use scep_engine::time::UnixTime;
use scep_engine::{Action, Engine, Outcome, Request, Response};
use scep_issuers::Issuer;

/// Handles one request with `engine`, asking `issuer` when the engine needs a
/// certificate, and returns the single response to write. `now` is read once
/// before handling and again before resuming (the issuer may take a while).
pub async fn drive<N>(engine: &Engine, issuer: &dyn Issuer, request: Request<'_>, now: N) -> Response
where
    N: Fn() -> UnixTime,
{
    drive_timed(engine, issuer, request, now).await.0
}

/// As [`drive()`], also returning the time spent in the issuer when it was
/// asked (the issuance latency metric).
pub async fn drive_timed<N>(
    engine: &Engine,
    issuer: &dyn Issuer,
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
