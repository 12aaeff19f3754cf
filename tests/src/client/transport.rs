//! SCEP over HTTP (RFC 8894 §4): GetCACaps, GetCACert and PKIOperation by
//! GET or POST, and a complete enrollment.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use scep_engine::codes::PkiStatus;
use scep_engine::oid;
use scep_engine::wire::{parse_single, tag};
use scep_engine::x509::CertificateRef;

use super::certrep::{CertRep, verify_cert_rep};
use super::error::{ClientError, Result};
use super::http::{HttpResponse, HttpUrl, request, url_encode};
use super::identity::{CsrSpec, DeviceKey, build_csr, self_signed_certificate};
use super::message::{MessageBody, MessageOptions, PkiRequest, Signer, build_pki_message};
use super::signed_data::parse_degenerate;

/// How PKIOperation is sent (RFC 8894 §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PkiMethod {
    /// POST with `Content-Type: application/x-pki-message` (needs the
    /// `POSTPKIOperation` capability).
    #[default]
    Post,
    /// GET with the base64 message, URL-encoded, in `message=`.
    Get,
}

/// The GetCACaps answer (RFC 8894 §3.5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCaps {
    /// One capability per line, as sent.
    pub capabilities: Vec<String>,
}

impl CaCaps {
    /// Parses the text body.
    pub fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        Self { capabilities: text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect() }
    }

    /// True when `cap` is advertised (case-insensitive, RFC 8894 §3.5.2).
    pub fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }
}

/// The GetCACert answer (RFC 8894 §4.2): the CA, and the RA when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertificates {
    /// Every certificate received, in order.
    pub certificates: Vec<Vec<u8>>,
    /// Index of the certificate requests are encrypted to (RA, or the CA).
    pub recipient_index: usize,
    /// Index of the CA certificate.
    pub ca_index: usize,
    /// The response Content-Type.
    pub content_type: String,
}

impl CaCertificates {
    /// The certificate to encrypt requests to: the RA (keyEncipherment, not a
    /// CA), else the CA.
    pub fn recipient(&self) -> &[u8] {
        &self.certificates[self.recipient_index]
    }

    /// The same certificates with requests encrypted to `certificates[index]`
    /// instead, e.g. another RA certificate of the NDES arrangement, or the
    /// CA to check that the server refuses it. Clients differ in which one
    /// they pick (see `scep_engine::Engine::with_encryption_ras`).
    ///
    /// # Errors
    /// When `index` is out of range.
    pub fn encrypting_to(mut self, index: usize) -> Result<Self> {
        if index >= self.certificates.len() {
            return Err(ClientError::protocol(format!(
                "GetCACert gave {} certificates, there is no #{index}",
                self.certificates.len()
            )));
        }
        self.recipient_index = index;
        Ok(self)
    }

    /// The index of the first certificate that is not a CA and whose keyUsage
    /// (when present) has digitalSignature: the RA that should sign CertReps,
    /// as PyScep and jscep pick it.
    pub fn signing_ra_index(&self) -> Option<usize> {
        self.certificates
            .iter()
            .position(|c| CertificateRef::parse(c).is_ok_and(|c| !is_ca(&c) && key_usage_allows(&c, 0).unwrap_or(true)))
    }

    /// The CA certificate.
    pub fn ca(&self) -> &[u8] {
        &self.certificates[self.ca_index]
    }

    /// True when a separate RA certificate was found.
    pub fn has_ra(&self) -> bool {
        self.recipient_index != self.ca_index
    }

    /// Parses a GetCACert body: a DER certificate
    /// (`application/x-x509-ca-cert`) or a degenerate PKCS#7
    /// (`application/x-x509-ca-ra-cert`).
    ///
    /// # Errors
    /// When the body is neither, or holds no certificate.
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Self> {
        let ct = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let certificates = if ct == "application/x-x509-ca-ra-cert" {
            parse_degenerate(body)?.certificates
        } else if ct == "application/x-x509-ca-cert" {
            CertificateRef::parse(body).map_err(ClientError::decode("CA certificate"))?;
            vec![body.to_vec()]
        } else {
            return Err(ClientError::protocol(format!("GetCACert Content-Type {content_type:?}")));
        };
        let parsed: Vec<CertificateRef<'_>> = certificates
            .iter()
            .map(|c| CertificateRef::parse(c))
            .collect::<std::result::Result<_, _>>()
            .map_err(ClientError::decode("GetCACert certificate"))?;
        if parsed.is_empty() {
            return Err(ClientError::protocol("GetCACert returned no certificate"));
        }
        let ra = parsed.iter().position(|c| !is_ca(c) && has_key_encipherment(c));
        let ca = ra
            .and_then(|i| parsed.iter().position(|c| c.subject == parsed[i].issuer && is_ca(c)))
            .or_else(|| parsed.iter().position(is_ca))
            .or_else(|| parsed.iter().position(|c| Some(c) != ra.map(|i| &parsed[i])))
            .unwrap_or(0);
        Ok(Self {
            recipient_index: ra.unwrap_or(ca),
            ca_index: ca,
            content_type: content_type.to_string(),
            certificates,
        })
    }
}

/// basicConstraints cA = TRUE (RFC 5280 §4.2.1.9).
fn is_ca(c: &CertificateRef<'_>) -> bool {
    let Ok(Some((_, value))) = c.extension(oid::BASIC_CONSTRAINTS) else { return false };
    parse_single(value)
        .ok()
        .and_then(|seq| seq.reader().optional(tag::BOOLEAN).ok().flatten())
        .is_some_and(|b| b.contents.first().is_some_and(|&v| v != 0))
}

/// keyUsage has keyEncipherment (bit 2, RFC 5280 §4.2.1.3).
/// Whether keyUsage bit `bit` is set (RFC 5280 §4.2.1.3); `None` when the
/// certificate has no (readable) keyUsage extension.
fn key_usage_allows(c: &CertificateRef<'_>, bit: u8) -> Option<bool> {
    let Ok(Some((_, value))) = c.extension(oid::KEY_USAGE) else { return None };
    let t = parse_single(value).ok().filter(|t| t.tag == tag::BIT_STRING)?;
    Some(t.contents.get(1 + usize::from(bit / 8)).is_some_and(|b| b & (0x80 >> (bit % 8)) != 0))
}

fn has_key_encipherment(c: &CertificateRef<'_>) -> bool {
    let Ok(Some((_, value))) = c.extension(oid::KEY_USAGE) else { return false };
    parse_single(value)
        .ok()
        .filter(|t| t.tag == tag::BIT_STRING)
        .and_then(|t| t.contents.get(1).copied())
        .is_some_and(|b| b & 0x20 != 0)
}

/// The result of a full enrollment.
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// The GetCACert answer used.
    pub ca: CaCertificates,
    /// The transient self-signed certificate the request was signed with.
    pub self_signed: Vec<u8>,
    /// The PKCSReq sent.
    pub request: PkiRequest,
    /// The verified reply.
    pub reply: CertRep,
}

impl Enrollment {
    /// The issued certificate (SUCCESS), else a protocol error naming the status.
    ///
    /// # Errors
    /// When the reply is not SUCCESS or holds no certificate.
    pub fn issued(&self) -> Result<&[u8]> {
        if self.reply.status != PkiStatus::SUCCESS {
            return Err(ClientError::protocol(format!(
                "enrollment ended {:?} (failInfo {:?}, {:?})",
                self.reply.status, self.reply.fail_info, self.reply.fail_info_text
            )));
        }
        self.reply.certificates.first().map(Vec::as_slice).ok_or_else(|| ClientError::protocol("no certificate"))
    }
}

/// A SCEP client bound to one server URL (e.g. `http://127.0.0.1:8080/scep/devices`).
#[derive(Clone, Debug)]
pub struct ScepClient {
    url: HttpUrl,
    /// Bound on connect, each read and each write.
    pub timeout: Duration,
}

impl ScepClient {
    /// A client for `url` (plain `http://`), with a 30 s timeout.
    ///
    /// # Errors
    /// When the URL is not `http://host[:port]/path`.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self { url: HttpUrl::parse(url)?, timeout: Duration::from_secs(30) })
    }

    /// The same client with another timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn query_path(&self, query: &str) -> String {
        let sep = if self.url.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.url.path)
    }

    /// `GET ?operation=<operation>[&message=<message, URL-encoded>]`, any status.
    ///
    /// # Errors
    /// Socket errors or a malformed response.
    pub fn get(&self, operation: &str, message: Option<&str>) -> Result<HttpResponse> {
        let mut q = format!("operation={}", url_encode(operation));
        if let Some(m) = message {
            q.push_str(&format!("&message={}", url_encode(m)));
        }
        request(&self.url, "GET", &self.query_path(&q), None, self.timeout)
    }

    /// GetCACaps (RFC 8894 §3.5.1).
    ///
    /// # Errors
    /// Transport errors or a non-200 status.
    pub fn get_ca_caps(&self) -> Result<CaCaps> {
        let r = ok(self.get("GetCACaps", None)?)?;
        Ok(CaCaps::parse(&r.body))
    }

    /// GetCACert (RFC 8894 §4.2).
    ///
    /// # Errors
    /// Transport errors, a non-200 status or an unparsable body.
    pub fn get_ca_cert(&self) -> Result<CaCertificates> {
        let r = ok(self.get("GetCACert", Some("scep-tests"))?)?;
        CaCertificates::parse(r.content_type.as_deref().unwrap_or_default(), &r.body)
    }

    /// Sends a PKIMessage (RFC 8894 §4.3) and returns the raw response (any status).
    ///
    /// # Errors
    /// Socket errors or a malformed response.
    pub fn send_pki_message(&self, der: &[u8], method: PkiMethod) -> Result<HttpResponse> {
        match method {
            PkiMethod::Post => request(
                &self.url,
                "POST",
                &self.query_path("operation=PKIOperation"),
                Some(("application/x-pki-message", der)),
                self.timeout,
            ),
            PkiMethod::Get => self.get("PKIOperation", Some(&STANDARD.encode(der))),
        }
    }

    /// Sends `request`, requires `200 application/x-pki-message`, and verifies
    /// the CertRep with `key` against the certificates of `ca`.
    ///
    /// # Errors
    /// Transport errors, an HTTP error status, or a CertRep that fails a check.
    pub fn transact(
        &self,
        request: &PkiRequest,
        key: &DeviceKey,
        ca: &CaCertificates,
        method: PkiMethod,
    ) -> Result<CertRep> {
        let r = ok(self.send_pki_message(&request.der, method)?)?;
        let ct = r.content_type.as_deref().unwrap_or_default();
        if !ct.to_ascii_lowercase().starts_with("application/x-pki-message") {
            return Err(ClientError::protocol(format!("PKIOperation reply Content-Type {ct:?}")));
        }
        verify_cert_rep(&r.body, request, key, &ca.certificates)
    }

    /// A whole first enrollment: GetCACert, self-signed certificate, CSR,
    /// PKCSReq, CertRep verification.
    ///
    /// # Errors
    /// Any step's error (a FAILURE or PENDING reply is not an error: see
    /// [`Enrollment::issued`]).
    pub fn enroll(
        &self,
        key: &DeviceKey,
        csr: &CsrSpec,
        options: &MessageOptions,
        method: PkiMethod,
    ) -> Result<Enrollment> {
        let ca = self.get_ca_cert()?;
        let self_signed = self_signed_certificate(key, &csr.subject, 1)?;
        let csr_der = build_csr(key, csr)?;
        let request = build_pki_message(
            &MessageBody::PkcsReq(csr_der),
            Signer { certificate: &self_signed, key },
            ca.recipient(),
            options,
        )?;
        let reply = self.transact(&request, key, &ca, method)?;
        Ok(Enrollment { ca, self_signed, request, reply })
    }
}

/// Passes 200 responses, turns others into an error with the body's start.
fn ok(r: HttpResponse) -> Result<HttpResponse> {
    if r.status == 200 {
        Ok(r)
    } else {
        let snippet: String = String::from_utf8_lossy(&r.body).chars().take(200).collect();
        Err(ClientError::Http(format!("status {}: {snippet}", r.status)))
    }
}
