//! A private key in a token: [`Pkcs11Key`].

use super::module::{Lent, Module, is_gone};
use super::padding::unpad_pkcs1v15_type2;
use super::{KeyUri, PinSource, Pkcs11Error, Pkcs11Options, TokenSelector};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use scep_engine::crypto::provider::{KeyKind, PrivateKey};
use scep_engine::crypto::{DigestAlg, EcCurve, KeyError, ecdsa_fixed_to_der, ecdsa_hash_to_order_len};
use scep_engine::oid;
use scep_engine::wire::{Writer, parse_single, tag};
use std::sync::{Arc, Mutex};

/// How the key unwraps PKCS#1 v1.5 key transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unwrap {
    /// `CKM_RSA_X_509` and the constant-time check in `padding`.
    Raw,
    /// `CKM_RSA_PKCS`: the token checks the padding.
    TokenPadding,
}

/// A private key held in a PKCS#11 token, used through pooled sessions.
pub struct Pkcs11Key {
    module: Arc<Module>,
    selector: TokenSelector,
    pin: PinSource,
    uri: KeyUri,
    kind: KeyKind,
    spki_der: Vec<u8>,
    unwrap: Unwrap,
    /// The RSA modulus (big-endian, no leading zeros); empty for EC keys.
    modulus: Vec<u8>,
    /// The object handle and the module generation it belongs to.
    handle: Mutex<(u64, ObjectHandle)>,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key").field("uri", &self.uri.describe()).field("kind", &self.kind).finish()
    }
}

fn failed(what: &str, e: &CkError) -> Pkcs11Error {
    if is_gone(e) {
        Pkcs11Error::Unavailable(format!("{what}: {e}"))
    } else {
        Pkcs11Error::Failed(format!("{what}: {e}"))
    }
}

impl Pkcs11Key {
    /// Opens the private key `uri` names: loads the module (the URI's
    /// `module-path`, else `options.module_path`), logs in with the URI's
    /// `pin-source` (else `options.pin`), finds exactly one private key with
    /// the URI's label/id and reads its public half.
    ///
    /// # Errors
    /// [`Pkcs11Error::Config`] when no module or PIN is given,
    /// [`Pkcs11Error::Pin`] for an unreadable or refused PIN,
    /// [`Pkcs11Error::NotFound`] when no single key (or token) matches,
    /// [`Pkcs11Error::Unavailable`] when the token is not present.
    pub fn open(uri: &KeyUri, options: &Pkcs11Options) -> Result<Self, Pkcs11Error> {
        let module_path = uri.module_path.as_ref().or(options.module_path.as_ref()).ok_or_else(|| {
            Pkcs11Error::Config(format!(
                "{}: no PKCS#11 library: add module-path=<library> to the URI or set pkcs11.module_path",
                uri.describe()
            ))
        })?;
        let pin = match (&uri.pin_source, &options.pin) {
            (Some(p), _) => PinSource::File(p.clone()),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(Pkcs11Error::Config(format!(
                    "{}: no PIN source: set pkcs11.pin_file or pkcs11.pin_env, or add pin-source=<file> to the URI",
                    uri.describe()
                )));
            }
        };
        let module = Module::get(module_path, options.max_sessions)?;
        let selector = TokenSelector::from_uri(uri);
        let lent = module.borrow(&selector, &pin)?;
        let opened = Self::inspect(&lent, uri);
        let gone = match &opened {
            Err((e, true)) => Some(e.to_string()),
            _ => None,
        };
        let mechanisms = match &opened {
            Ok(_) => module.mechanisms(lent.slot),
            Err(_) => Vec::new(),
        };
        let generation = lent.generation();
        module.give_back(lent, gone);
        let (handle, kind, spki_der, modulus) = opened.map_err(|(e, _)| e)?;
        let unwrap = if mechanisms.contains(&MechanismType::RSA_X_509) {
            Unwrap::Raw
        } else {
            if kind.is_rsa() {
                tracing::warn!(target: "scepd::pkcs11", key = %uri.describe(),
                    "the token lacks CKM_RSA_X_509: key transport uses CKM_RSA_PKCS, whose padding check runs in the token");
            }
            Unwrap::TokenPadding
        };
        Ok(Self {
            module,
            selector,
            pin,
            uri: uri.clone(),
            kind,
            spki_der,
            unwrap,
            modulus,
            handle: Mutex::new((generation, handle)),
        })
    }

    /// Finds the key and builds its SubjectPublicKeyInfo.
    #[allow(clippy::type_complexity)]
    fn inspect(lent: &Lent, uri: &KeyUri) -> Result<(ObjectHandle, KeyKind, Vec<u8>, Vec<u8>), (Pkcs11Error, bool)> {
        let session = lent.session().map_err(|e| (e, false))?;
        let ck = |what: &str| {
            let what = format!("{}: {what}", uri.describe());
            move |e: CkError| (failed(&what, &e), is_gone(&e))
        };
        let handle = find_key(session, uri, ObjectClass::PRIVATE_KEY).map_err(|e| match e {
            Found::Error(e) => ck("C_FindObjects")(e),
            other => (other.into_error(uri, "private key"), false),
        })?;
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::Extractable,
                ],
            )
            .map_err(ck("C_GetAttributeValue"))?;
        let mut key_type = None;
        let (mut modulus, mut exponent, mut ec_params) = (None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::PublicExponent(e) => exponent = Some(e),
                Attribute::EcParams(p) => ec_params = Some(p),
                Attribute::Extractable(true) => tracing::warn!(target: "scepd::pkcs11", key = %uri.describe(),
                    "the key is marked extractable (CKA_EXTRACTABLE): generate it non-extractable"),
                _ => {}
            }
        }
        let config = |why: &str| (Pkcs11Error::Config(format!("{}: {why}", uri.describe())), false);
        match key_type {
            Some(KeyType::RSA) => {
                let (Some(n), Some(e)) = (modulus, exponent) else {
                    return Err(config("the RSA key shows no CKA_MODULUS / CKA_PUBLIC_EXPONENT"));
                };
                let modulus_len = n.iter().skip_while(|&&b| b == 0).count();
                if modulus_len < 256 {
                    return Err(config(&format!("RSA key of {} bits: at least 2048 are required", modulus_len * 8)));
                }
                let spki = rsa_spki(&n, &e);
                let n = n.iter().copied().skip_while(|&b| b == 0).collect();
                Ok((handle, KeyKind::Rsa { modulus_bits: modulus_len * 8 }, spki, n))
            }
            Some(KeyType::EC) => {
                let params = ec_params.ok_or_else(|| config("the EC key shows no CKA_EC_PARAMS"))?;
                let curve_oid = parse_single(&params)
                    .ok()
                    .filter(|t| t.tag == tag::OID)
                    .map(|t| t.contents)
                    .ok_or_else(|| config("CKA_EC_PARAMS is not a named curve"))?;
                let curve = match curve_oid {
                    oid::SECP256R1 => EcCurve::P256,
                    oid::SECP384R1 => EcCurve::P384,
                    _ => return Err(config("EC key on a curve other than P-256 or P-384")),
                };
                let public = find_key(session, uri, ObjectClass::PUBLIC_KEY).map_err(|e| match e {
                    Found::Error(e) => ck("C_FindObjects")(e),
                    other => (other.into_error(uri, "public key (an EC key's point is read from it)"), false),
                })?;
                let point = session
                    .get_attributes(public, &[AttributeType::EcPoint])
                    .map_err(ck("C_GetAttributeValue"))?
                    .into_iter()
                    .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
                    .ok_or_else(|| config("the public key shows no CKA_EC_POINT"))?;
                let point = uncompressed_point(&point, curve)
                    .ok_or_else(|| config("CKA_EC_POINT is not an uncompressed point"))?;
                Ok((handle, KeyKind::Ec(curve), ec_spki(curve_oid, &point), Vec::new()))
            }
            _ => Err(config("not an RSA or EC private key")),
        }
    }

    /// The key's algorithm and size.
    pub const fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The SubjectPublicKeyInfo DER (built from the token's public attributes).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key's URI, for logs and errors (never a PIN).
    pub fn describe(&self) -> String {
        self.uri.describe()
    }

    /// How many operations on this key's library failed because the token
    /// was gone (a rising count while a request ran means that request's
    /// failure was the token's, not the client's).
    pub fn unavailability_count(&self) -> u64 {
        self.module.failures()
    }

    /// Sessions the key's token currently has open (at most
    /// [`Pkcs11Options::max_sessions`]).
    pub fn open_sessions(&self) -> usize {
        self.module.open_sessions(&self.selector)
    }

    /// Why the token is currently unusable, if it is.
    pub fn unavailable(&self) -> Option<String> {
        self.module.broken()
    }

    /// Runs `op` with a pooled session and the key's handle (found again
    /// after a re-initialisation).
    fn run<T>(
        &self,
        what: &str,
        op: impl FnOnce(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, Pkcs11Error> {
        let lent = self.module.borrow(&self.selector, &self.pin)?;
        let result = (|| {
            let session = lent.session().map_err(|e| (e, false))?;
            let handle = {
                let mut cached = self.handle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if cached.0 != lent.generation() {
                    let h = find_key(session, &self.uri, ObjectClass::PRIVATE_KEY).map_err(|e| match e {
                        Found::Error(e) => (failed(&format!("{}: C_FindObjects", self.describe()), &e), is_gone(&e)),
                        // The key vanished from a token that answers: gone for us.
                        other => {
                            (Pkcs11Error::Unavailable(other.into_error(&self.uri, "private key").to_string()), true)
                        }
                    })?;
                    *cached = (lent.generation(), h);
                }
                cached.1
            };
            op(session, handle).map_err(|e| (failed(&format!("{}: {what}", self.describe()), &e), is_gone(&e)))
        })();
        let gone = match &result {
            Err((e, true)) => Some(e.to_string()),
            _ => None,
        };
        self.module.give_back(lent, gone);
        result.map_err(|(e, _)| e)
    }

    /// Signs `message` hashed with `digest` (SHA-1 is raised to SHA-256, as
    /// [`DigestAlg::for_reply`]): RSA PKCS#1 v1.5 (RFC 8017 §8.2) or a DER
    /// `ECDSA-Sig-Value` (RFC 5753 §2.1.1, RFC 5758 §3.2).
    ///
    /// # Errors
    /// [`Pkcs11Error::Unavailable`] when the token is gone or busy,
    /// [`Pkcs11Error::Failed`] when it refuses.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let digest = digest.for_reply();
        let hash = digest.digest(message);
        match self.kind {
            KeyKind::Rsa { .. } => {
                // RFC 8017 §9.2 step 2: DigestInfo ::= SEQUENCE { digestAlgorithm, digest }.
                let mut w = Writer::with_capacity(hash.len() + 24);
                w.sequence(|w| {
                    w.sequence(|w| {
                        w.oid(digest.oid()).null();
                    });
                    w.octet_string(&hash);
                });
                let info = w.into_vec();
                self.run("C_Sign (CKM_RSA_PKCS)", |s, k| s.sign(&Mechanism::RsaPkcs, k, &info))
            }
            KeyKind::Ec(curve) => {
                // FIPS 186-4 §6.4: the leftmost order-length bits of the hash.
                let e = ecdsa_hash_to_order_len(&hash, curve);
                let raw = self.run("C_Sign (CKM_ECDSA)", |s, k| s.sign(&Mechanism::Ecdsa, k, &e))?;
                if raw.len() != 2 * e.len() {
                    return Err(Pkcs11Error::Failed(format!(
                        "{}: CKM_ECDSA returned {} bytes, not {}",
                        self.describe(),
                        raw.len(),
                        2 * e.len()
                    )));
                }
                ecdsa_fixed_to_der(&raw)
                    .ok_or_else(|| Pkcs11Error::Failed(format!("{}: empty ECDSA signature", self.describe())))
            }
        }
    }

    /// Unwraps a PKCS#1 v1.5 encrypted content key (RFC 5652 §6.2.1,
    /// RFC 8017 §7.2.2). `Ok(None)` for any ciphertext that does not decrypt
    /// to a well-formed block, without saying why (the engine continues
    /// with a random key: implicit rejection).
    ///
    /// # Errors
    /// [`Pkcs11Error::Unavailable`] when the token is gone or busy (not a
    /// property of the ciphertext: no oracle), [`Pkcs11Error::Failed`] when
    /// the token refuses for a reason unrelated to the ciphertext. An ECDSA
    /// key gives `Ok(None)`.
    pub fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, Pkcs11Error> {
        let KeyKind::Rsa { modulus_bits } = self.kind else {
            return Ok(None); // an ECDSA key receives no key transport
        };
        let modulus_len = modulus_bits / 8;
        // RFC 8017 §7.2.2 step 1 and §5.1.2 step 1: the length, and c < n,
        // are properties of public values; raw RSA on any other c succeeds.
        if ciphertext.len() != modulus_len || ciphertext >= self.modulus.as_slice() {
            return Ok(None);
        }
        let out = match self.unwrap {
            Unwrap::Raw => self.run("C_Decrypt (CKM_RSA_X_509)", |s, k| {
                match s.decrypt(&Mechanism::RsaX509, k, ciphertext) {
                    // The ciphertext is not below the modulus: public.
                    Err(CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _)) => Ok(None),
                    Ok(mut em) => {
                        // Some tokens drop leading zero octets of the block.
                        if em.len() < modulus_len {
                            let mut padded = vec![0u8; modulus_len - em.len()];
                            padded.append(&mut em);
                            em = padded;
                        }
                        Ok(unpad_pkcs1v15_type2(&em))
                    }
                    Err(e) => Err(e),
                }
            }),
            Unwrap::TokenPadding => self.run("C_Decrypt (CKM_RSA_PKCS)", |s, k| {
                match s.decrypt(&Mechanism::RsaPkcs, k, ciphertext) {
                    Ok(m) => Ok(Some(m)),
                    Err(e) if is_gone(&e) => Err(e),
                    // Bad padding and every other refusal look alike.
                    Err(_) => Ok(None),
                }
            }),
        }?;
        Ok(out)
    }
}

impl From<Pkcs11Error> for KeyError {
    fn from(e: Pkcs11Error) -> Self {
        if e.is_unavailable() { Self::unavailable(e.to_string()) } else { Self::new(e.to_string()) }
    }
}

/// The key as the engine and the issuers use every key (`Arc<dyn PrivateKey>`).
impl PrivateKey for Pkcs11Key {
    fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    fn kind(&self) -> KeyKind {
        self.kind
    }

    fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(Self::sign(self, digest, message)?)
    }

    fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        Ok(Self::decrypt_pkcs1v15(self, ciphertext)?)
    }
}

const fn order_len(curve: EcCurve) -> usize {
    match curve {
        EcCurve::P256 => 32,
        EcCurve::P384 => 48,
    }
}

/// The outcome of looking a key up when it is not exactly one object.
enum Found {
    None,
    Many(usize),
    Error(CkError),
}

impl Found {
    fn into_error(self, uri: &KeyUri, what: &str) -> Pkcs11Error {
        match self {
            Self::None => {
                Pkcs11Error::NotFound(format!("{}: no {what} with this label/id in the token", uri.describe()))
            }
            Self::Many(n) => Pkcs11Error::NotFound(format!(
                "{}: {n} objects match: name the {what} by both object= and id=",
                uri.describe()
            )),
            Self::Error(e) => failed(&uri.describe(), &e),
        }
    }
}

fn find_key(session: &Session, uri: &KeyUri, class: ObjectClass) -> Result<ObjectHandle, Found> {
    let mut template = vec![Attribute::Class(class)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session.find_objects(&template).map_err(Found::Error)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Found::None),
        many => Err(Found::Many(many.len())),
    }
}

/// RFC 3279 §2.3.1: rsaEncryption with NULL parameters, RSAPublicKey.
fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut key = Writer::with_capacity(modulus.len() + 16);
    key.sequence(|w| {
        w.unsigned_integer(modulus).unsigned_integer(exponent);
    });
    let key = key.into_vec();
    let mut w = Writer::with_capacity(key.len() + 32);
    w.sequence(|w| {
        w.sequence(|w| {
            w.oid(oid::RSA_ENCRYPTION).null();
        });
        w.bit_string(&key);
    });
    w.into_vec()
}

/// RFC 5480 §2: id-ecPublicKey with the named curve, the uncompressed point.
fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(point.len() + 32);
    w.sequence(|w| {
        w.sequence(|w| {
            w.oid(oid::EC_PUBLIC_KEY).oid(curve_oid);
        });
        w.bit_string(point);
    });
    w.into_vec()
}

/// CKA_EC_POINT is a DER OCTET STRING holding the point (PKCS#11 v2.40
/// §2.3.3); some tokens return the bare point.
fn uncompressed_point(value: &[u8], curve: EcCurve) -> Option<Vec<u8>> {
    let len = 2 * order_len(curve) + 1;
    if value.len() == len && value.first() == Some(&0x04) {
        return Some(value.to_vec());
    }
    let t = parse_single(value).ok().filter(|t| t.tag == tag::OCTET_STRING)?;
    (t.contents.len() == len && t.contents.first() == Some(&0x04)).then(|| t.contents.to_vec())
}
