//! An independent SCEP client (RFC 8894), built from the RFCs and the
//! engine's low-level building blocks (`wire`, `crypto`, `x509`) only — never
//! from the server's message code — so that it can check the server.
//!
//! Typical use:
//! ```no_run
//! use scep_tests::client::*;
//! let client = ScepClient::new("http://127.0.0.1:8080/scep/devices")?;
//! let key = DeviceKey::pregenerated(0)?;
//! let e = client.enroll(&key, &CsrSpec::new("dev-1", Some("secret")), &MessageOptions::default(), PkiMethod::Post)?;
//! let cert_der = e.issued()?;
//! # Ok::<(), ClientError>(())
//! ```

mod certrep;
mod encoding;
mod envelope;
mod error;
mod http;
mod identity;
mod message;
mod rsa_sha1;
mod signed_data;
mod transport;

pub use certrep::{CertRep, verify_cert_rep};
pub use encoding::Encoding;
pub use envelope::{OpenedEnvelope, build_envelope, open_envelope};
pub use error::{ClientError, Result};
pub use http::{HttpResponse, HttpUrl, request as http_request, url_encode};
pub use identity::{CsrSpec, DeviceKey, SubjectName, build_csr, hex, is_printable, self_signed_certificate};
pub use message::{MessageBody, MessageOptions, PkiRequest, SignatureOid, Signer, build_pki_message};
pub use signed_data::{Degenerate, is_strict_der, parse_degenerate};
pub use transport::{CaCaps, CaCertificates, Enrollment, PkiMethod, ScepClient};

pub use scep_engine::codes::{FailInfo, MessageType, PkiStatus};
pub use scep_engine::crypto::{ContentCipher, DigestAlg};
pub use scep_engine::x509::SubjectAltName;

#[cfg(test)]
mod tests;
