//! SCEP wire codes as open newtypes (RFC 8894 §3.2.1.2 – §3.2.1.4).
//!
//! Each is generated from one table of (name, value, description), so an
//! unknown value received on the wire is still representable and printable.

macro_rules! wire_code {
    ($(#[$doc:meta])* $name:ident($repr:ty) { $( $(#[$vdoc:meta])* $konst:ident = $value:expr, $label:literal; )* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$vdoc])* pub const $konst: Self = Self($value); )*

            /// The RFC name of this code, or `None` for a value the RFC does not define.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($label), )*
                    _ => None,
                }
            }

            /// The decimal string form used inside SCEP PrintableString attributes.
            pub fn to_decimal(self) -> String {
                self.0.to_string()
            }

            /// Parses the decimal PrintableString form carried in SCEP attributes.
            pub fn from_decimal(s: &[u8]) -> Option<Self> {
                let s = std::str::from_utf8(s).ok()?;
                s.trim().parse::<$repr>().ok().map(Self)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_code! {
    /// `messageType` (RFC 8894 §3.2.1.2).
    MessageType(u16) {
        /// Response to a certificate or CRL request.
        CERT_REP = 3, "CertRep";
        /// Certificate renewal request (RFC 8894 §3.3.1.2).
        RENEWAL_REQ = 17, "RenewalReq";
        /// PKCS#10 certificate request.
        PKCS_REQ = 19, "PKCSReq";
        /// Certificate polling in manual enrolment (GetCertInitial).
        CERT_POLL = 20, "CertPoll";
        /// Retrieve a certificate.
        GET_CERT = 21, "GetCert";
        /// Retrieve a CRL.
        GET_CRL = 22, "GetCRL";
    }
}

wire_code! {
    /// `pkiStatus` (RFC 8894 §3.2.1.3).
    PkiStatus(u8) {
        /// Request granted.
        SUCCESS = 0, "SUCCESS";
        /// Request rejected.
        FAILURE = 2, "FAILURE";
        /// Request pending for manual approval.
        PENDING = 3, "PENDING";
    }
}

wire_code! {
    /// `failInfo` (RFC 8894 §3.2.1.4).
    FailInfo(u8) {
        /// Unrecognized or unsupported algorithm.
        BAD_ALG = 0, "badAlg";
        /// Integrity check (meaning signature verification of the CMS message) failed.
        BAD_MESSAGE_CHECK = 1, "badMessageCheck";
        /// Transaction not permitted or supported.
        BAD_REQUEST = 2, "badRequest";
        /// The signingTime attribute from the CMS authenticatedAttributes was not sufficiently close to the system time.
        BAD_TIME = 3, "badTime";
        /// No certificate could be identified matching the provided criteria.
        BAD_CERT_ID = 4, "badCertID";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_decimal_forms() {
        assert_eq!(MessageType::from_decimal(b"19"), Some(MessageType::PKCS_REQ));
        assert_eq!(MessageType::PKCS_REQ.name(), Some("PKCSReq"));
        assert_eq!(format!("{:?}", MessageType(99)), "MessageType(99)");
        assert_eq!(FailInfo::BAD_CERT_ID.to_decimal(), "4");
        assert_eq!(PkiStatus::from_decimal(b"x"), None);
    }
}
