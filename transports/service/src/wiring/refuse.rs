//! The `issuer = "none"` issuer: a profile that serves its CA certificates
//! (GetCACaps, GetCACert) but issues nothing.
//!
//! Useful to stage an RA before its CA is connected, and as the issuer of
//! transport tests. Every issue request becomes a CertRep FAILURE with failInfo
//! badRequest (RFC 8894 §3.3.2.2).

use scep_engine::FailInfo;
use scep_engine::time::UnixTime;
use scep_issuers::{BoxFuture, IssueOutcome, IssueRequest, Issuer};

/// An issuer that refuses every request.
#[derive(Clone, Debug)]
pub struct RefusingIssuer {
    id: String,
}

impl RefusingIssuer {
    /// An issuer named `id` in audit events.
    pub fn new(id: String) -> Self {
        Self { id }
    }
}

impl Issuer for RefusingIssuer {
    fn id(&self) -> &str {
        &self.id
    }

    /// Empty: the profile's `ca_chain` file provides the chain.
    fn ca_chain(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }

    fn handle<'a>(&'a self, _request: &'a IssueRequest, _now: UnixTime) -> BoxFuture<'a, IssueOutcome> {
        Box::pin(std::future::ready(IssueOutcome::Rejected {
            fail_info: FailInfo::BAD_REQUEST,
            reason: format!("profile issuer {:?} is configured as \"none\": issuance disabled", self.id),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scep_engine::issue::CertLookup;

    #[test]
    fn refuses_with_bad_request() {
        let i = RefusingIssuer::new("none-p".into());
        let req = IssueRequest::GetCrl(CertLookup { profile: "p".into(), issuer_der: vec![], serial: vec![1] });
        let out = futures_lite::future::block_on(i.handle(&req, UnixTime::from_secs(0)));
        assert!(matches!(out, IssueOutcome::Rejected { fail_info: FailInfo::BAD_REQUEST, .. }), "{out:?}");
        assert!(i.ca_chain().is_empty());
        assert_eq!(i.id(), "none-p");
    }
}
