//! Request handling: GetCACaps, GetCACert and PKIOperation (RFC 8894 §3.5, §4).

use crate::config::{ConfigError, ProfileConfig};
use crate::engine::{Action, Engine, Outcome, Request, Response};
use crate::issue::{IssueOutcome, IssueRequest};
use crate::time::UnixTime;

/// Everything needed to answer after the issuer returns (owned).
#[derive(Debug)]
pub(crate) struct ReplyContext {}

pub(crate) fn validate(_config: &ProfileConfig) -> Result<(), ConfigError> {
    Ok(())
}

pub(crate) fn handle(_engine: &Engine, _request: Request<'_>, _now: UnixTime) -> Action {
    Action::Respond(Response {
        status: 501,
        content_type: "text/plain",
        body: b"not yet".to_vec(),
        outcome: Outcome::default(),
    })
}

impl Engine {
    pub(crate) fn resume(
        &self,
        _reply: ReplyContext,
        _request: IssueRequest,
        outcome: Outcome,
        _issued: IssueOutcome,
        _now: UnixTime,
    ) -> Response {
        Response { status: 501, content_type: "text/plain", body: Vec::new(), outcome }
    }
}
