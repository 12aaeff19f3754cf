//! DER or BER output for the outer layers of a request.
//!
//! Some clients (jscep/BouncyCastle, Apple) send BER: indefinite lengths
//! (X.690 §8.1.3.6) and constructed OCTET STRINGs split into chunks
//! (X.690 §8.7.3.2). The client can imitate them so the server's BER path is
//! exercised; DER is the default.

use scep_engine::wire::{Writer, tag};

/// How the outer structures of a request are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Strict DER (definite, minimal lengths).
    #[default]
    Der,
    /// BER like jscep: indefinite lengths on the outer structures, and the
    /// eContent / encryptedContent OCTET STRINGs chunked into pieces of at most
    /// this many bytes.
    Ber {
        /// Maximum chunk size of a constructed OCTET STRING (at least 1).
        chunk: usize,
    },
}

impl Encoding {
    /// BER with 1000-byte chunks (BouncyCastle's default stream buffer is similar).
    pub const BER: Self = Self::Ber { chunk: 1000 };

    /// Writes a constructed value: definite (DER) or indefinite (BER).
    pub(crate) fn constructed(self, w: &mut Writer, tag_byte: u8, f: impl FnOnce(&mut Writer)) {
        match self {
            Self::Der => {
                w.nested(tag_byte, f);
            }
            Self::Ber { .. } => {
                w.raw(&[tag_byte, 0x80]);
                f(w);
                w.raw(&[0, 0]);
            }
        }
    }

    /// Writes an OCTET STRING (or an implicitly tagged one when
    /// `primitive_tag` is context-specific): primitive in DER, constructed and
    /// chunked in BER.
    pub(crate) fn octets(self, w: &mut Writer, primitive_tag: u8, data: &[u8]) {
        match self {
            Self::Der => {
                w.tlv(primitive_tag, data);
            }
            Self::Ber { chunk } => {
                w.raw(&[primitive_tag | 0x20, 0x80]);
                for piece in data.chunks(chunk.max(1)) {
                    w.tlv(tag::OCTET_STRING, piece);
                }
                w.raw(&[0, 0]);
            }
        }
    }
}
