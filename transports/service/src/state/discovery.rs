//! The discovery answers of a profile, computed once.
//!
//! GetCACaps (RFC 8894 §3.5.1) and GetCACert (§4.2) are answered from the
//! profile's configuration alone: not from the request (GetCACert's `message`
//! may be absent, empty or anything), not from the clock, not from any
//! state. So when a profile is built, the engine answers each once and the
//! service keeps the bytes; every later GET shares them ([`Bytes`] clones
//! share one buffer). The engine stays the only place that decides what the
//! answers say; this module only remembers them.
//!
//! A fleet polls these operations far more often than it enrolls, which is
//! why the service answers them synchronously, without the request future
//! or the engine call ([`crate::ScepService`]).

use bytes::Bytes;
use scep_engine::config::ConfigError;
use scep_engine::{Action, Engine, Message, Method, Operation, Outcome, Request, UnixTime};

/// One ready answer: what the engine returned, with its body shareable.
#[derive(Clone, Debug)]
pub struct ReadyAnswer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
    /// The engine's outcome (profile, operation, label) for metrics and audit.
    pub outcome: Outcome,
}

/// The answers to GetCACaps and GetCACert of one profile.
#[derive(Clone, Debug)]
pub struct DiscoveryAnswers {
    caps: ReadyAnswer,
    ca_cert: ReadyAnswer,
}

impl DiscoveryAnswers {
    /// Asks `engine` for both answers (at `now`, which they do not depend on).
    ///
    /// # Errors
    /// When the engine does not answer a discovery operation directly (an
    /// engine that would need an issuer or the request for one).
    pub fn new(engine: &Engine, now: UnixTime) -> Result<Self, ConfigError> {
        let ask = |op: Operation| {
            let request = Request { method: Method::Get, operation: op.name(), message: Message::None };
            match engine.handle(request, now) {
                Action::Respond(r) => Ok(ReadyAnswer {
                    status: r.status,
                    content_type: r.content_type,
                    body: Bytes::from(r.body),
                    outcome: r.outcome,
                }),
                _ => Err(ConfigError(format!(
                    "profile[{}]: the engine does not answer {} by itself",
                    engine.config().name,
                    op.name()
                ))),
            }
        };
        Ok(Self { caps: ask(Operation::GetCaCaps)?, ca_cert: ask(Operation::GetCaCert)? })
    }

    /// The ready answer to `op`, when it is a discovery operation kept here.
    pub fn get(&self, op: Operation) -> Option<&ReadyAnswer> {
        match op {
            Operation::GetCaCaps => Some(&self.caps),
            Operation::GetCaCert => Some(&self.ca_cert),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, section};
    use crate::wiring::profile::BuildContext;

    /// The kept answers are the engine's live answers, byte for byte, for any
    /// `message` and at any time.
    #[test]
    fn ready_answers_are_the_engines_answers() {
        let dir = TestDir::new();
        let p = section(&dir, "corp").build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        for (op, message) in [
            (Operation::GetCaCaps, Message::None),
            (Operation::GetCaCert, Message::None),
            (Operation::GetCaCert, Message::Query("some-ca-identifier")),
        ] {
            let later = UnixTime::from_secs(dir.now().secs() + 86_400);
            let live = match p.engine.handle(Request { method: Method::Get, operation: op.name(), message }, later) {
                Action::Respond(r) => r,
                other => panic!("{op:?}: {other:?}"),
            };
            let kept = p.discovery.get(op).unwrap();
            assert_eq!(kept.status, live.status, "{op:?}");
            assert_eq!(kept.content_type, live.content_type, "{op:?}");
            assert_eq!(kept.body[..], live.body[..], "{op:?}");
            assert_eq!(kept.outcome, live.outcome, "{op:?}");
        }
        assert!(p.discovery.get(Operation::PkiOperation).is_none());
        assert!(p.discovery.get(Operation::GetNextCaCert).is_none());
    }
}
