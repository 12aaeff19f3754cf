//! The whole Engine::handle: the first input byte picks the request shape
//! (POST body, GET query, other operations), the rest is the message. Any
//! PendingIssue is resumed with a fixed issued certificate, so the CertRep
//! SUCCESS path (sealing to the requester, signing) runs as well.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scep_engine::{Action, IssueOutcome, Message, Method, Request};
use scep_fuzz::{CAPTURE_TIME, engine, recipient_cert};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text;
    let request = match selector % 4 {
        0 | 1 => Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(rest) },
        2 => {
            let Ok(t) = std::str::from_utf8(rest) else { return };
            text = t;
            Request { method: Method::Get, operation: "PKIOperation", message: Message::Query(text) }
        }
        _ => {
            let Ok(t) = std::str::from_utf8(rest) else { return };
            text = t;
            Request { method: Method::Get, operation: text, message: Message::None }
        }
    };
    let response = match engine().handle(request, CAPTURE_TIME) {
        Action::Respond(r) => r,
        Action::Issue(pending) => {
            let outcome = match selector / 4 % 4 {
                0 | 1 => IssueOutcome::Issued {
                    certificate: recipient_cert().to_vec(),
                    chain: vec![recipient_cert().to_vec()],
                },
                2 => IssueOutcome::Pending,
                _ => IssueOutcome::Rejected { fail_info: scep_engine::FailInfo::BAD_REQUEST, reason: "fuzz".into() },
            };
            pending.resume(outcome, CAPTURE_TIME)
        }
        _ => return,
    };
    assert!(response.status == 200 || (400..600).contains(&response.status), "status {}", response.status);
});
