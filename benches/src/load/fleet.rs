//! The simulated fleet: device keys cached on disk, and the PKIMessages they
//! send, pre-built before the clock starts so that the client side of a load
//! run is only socket I/O.
//!
//! Layout of the cache directory:
//! - `devices/NNNNNN.key`: one RSA-2048 PKCS#8 key per device (key generation
//!   is the expensive part; it happens once per machine);
//! - `pool-<fingerprint>.bin` + `.used`: static-challenge PKCSReq messages
//!   for one server RA certificate and one set of message options, consumed
//!   in order. Each message carries its own transactionID, so a message is
//!   sent once only (a resent transactionID would be answered from the CA's
//!   store, not issued again), and `.used` counts the consumed ones.
//!
//! Intune challenges expire, so Intune-mode messages are built per run.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use scep_engine::crypto::{ContentCipher, DigestAlg};
use scep_engine::time::UnixTime;
use scep_engine::x509::SubjectAltName;
use scep_tests::client::{
    CaCertificates, CsrSpec, DeviceKey, MessageBody, MessageOptions, MessageType, PkiRequest, Signer, SubjectName,
    build_csr, build_pki_message, hex, self_signed_certificate,
};

use super::LoadError;
use super::intune::{Connector, write_private};

/// How devices prove they may enroll.
#[derive(Debug)]
pub enum Challenge {
    /// The same static challengePassword for every device.
    Static(String),
    /// A fresh Connector-signed JWS per request.
    Intune(Connector),
    /// Intune API mode: an opaque challenge per request, `<prefix><run>-<n>`
    /// (`<run>` random per run), which only the validating service knows
    /// (the stand-in accepts every challenge with this prefix).
    Opaque {
        /// What the validating service accepts.
        prefix: String,
        /// Random per run, so that no challenge is presented twice across runs.
        run: String,
    },
}

/// One simulated device.
#[derive(Debug)]
pub struct Device {
    /// The device's key pair.
    pub key: DeviceKey,
    /// Its transient self-signed certificate (RFC 8894 §2.3).
    pub self_signed: Vec<u8>,
    /// Its common name (and, in Intune mode, its SAN DNS name).
    pub name: String,
}

/// A request ready to send, and what checks its reply.
#[derive(Debug)]
pub struct Prepared {
    /// Index into the device list.
    pub device: usize,
    /// The PKIMessage and its nonce / transactionID.
    pub request: PkiRequest,
}

/// Loads (or generates and caches) `count` device keys.
///
/// # Errors
/// File or key errors.
pub fn devices(cache: &Path, count: usize, threads: usize) -> Result<Vec<Device>, LoadError> {
    let dir = cache.join("devices");
    std::fs::create_dir_all(&dir).map_err(|e| LoadError::io(&dir, e))?;
    parallel(count, threads, |i| {
        let path = dir.join(format!("{i:06}.key"));
        let key = match std::fs::read(&path) {
            Ok(der) => DeviceKey::from_der(&der)?,
            Err(_) => {
                let key = DeviceKey::generate()?;
                write_private(&path, key.private_key_der())?;
                key
            }
        };
        let name = format!("dev-{i:06}.load.example");
        let self_signed = self_signed_certificate(&key, &SubjectName::cn(name.clone()), 2)?;
        Ok(Device { key, self_signed, name })
    })
}

/// Message options from the CLI choices.
pub fn options(cipher: ContentCipher, digest: DigestAlg) -> MessageOptions {
    MessageOptions { cipher, digest, ..MessageOptions::default() }
}

/// Builds request `n` (device `n % devices.len()`).
fn build_one(
    n: usize,
    devices: &[Device],
    ca: &CaCertificates,
    challenge: &Challenge,
    options: &MessageOptions,
) -> Result<Prepared, LoadError> {
    let device_index = n % devices.len();
    let d = &devices[device_index];
    let spec = match challenge {
        Challenge::Static(pw) => CsrSpec::new(d.name.clone(), Some(pw)),
        Challenge::Intune(c) => {
            let jws = c.mint(&d.name, &format!("load-device-{device_index}"), UnixTime::now().secs())?;
            let mut spec = CsrSpec::new(d.name.clone(), Some(&jws));
            spec.subject_alt_names = vec![SubjectAltName::Dns(d.name.clone())];
            spec
        }
        Challenge::Opaque { prefix, run } => CsrSpec::new(d.name.clone(), Some(&format!("{prefix}{run}-{n}"))),
    };
    let csr = build_csr(&d.key, &spec)?;
    // A random transactionID per request: one certificate per message.
    let mut txid = [0u8; 16];
    aws_lc_rs::rand::fill(&mut txid).map_err(|_| LoadError::Setup("no randomness".into()))?;
    let options = MessageOptions { transaction_id: Some(hex(&txid)), ..options.clone() };
    let request = build_pki_message(
        &MessageBody::PkcsReq(csr),
        Signer { certificate: &d.self_signed, key: &d.key },
        ca.recipient(),
        &options,
    )?;
    Ok(Prepared { device: device_index, request })
}

/// A pool of unsent static-challenge messages for one server and one set of options.
#[derive(Debug)]
pub struct Pool {
    path: PathBuf,
    used_path: PathBuf,
    /// Messages consumed by earlier runs.
    pub used: usize,
}

impl Pool {
    /// The pool for `ca`'s recipient, `options` and `password`.
    pub fn new(cache: &Path, ca: &CaCertificates, options: &MessageOptions, password: &str, devices: usize) -> Self {
        let mut id = Vec::new();
        id.extend_from_slice(ca.recipient());
        id.extend_from_slice(format!("{:?}|{:?}|{password}|{devices}", options.cipher, options.digest).as_bytes());
        let fp = hex(&DigestAlg::Sha256.digest(&id)[..8]);
        let path = cache.join(format!("pool-{fp}.bin"));
        let used_path = cache.join(format!("pool-{fp}.used"));
        let used = std::fs::read_to_string(&used_path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Self { path, used_path, used }
    }

    /// Records that `sent` more messages were consumed.
    ///
    /// # Errors
    /// When the counter file cannot be written.
    pub fn consume(&mut self, sent: usize) -> Result<(), LoadError> {
        self.used += sent;
        std::fs::write(&self.used_path, self.used.to_string()).map_err(|e| LoadError::io(&self.used_path, e))
    }

    /// Reads the unsent messages, building and appending more until there are `count`.
    ///
    /// # Errors
    /// File errors or message-building errors.
    pub fn take(
        &self,
        count: usize,
        devices: &[Device],
        ca: &CaCertificates,
        password: &str,
        options: &MessageOptions,
        threads: usize,
    ) -> Result<Vec<Prepared>, LoadError> {
        let mut all = match File::open(&self.path) {
            Ok(f) => read_records(BufReader::new(f), options).map_err(|e| LoadError::io(&self.path, e))?,
            Err(_) => Vec::new(),
        };
        let have = all.len().saturating_sub(self.used);
        if have < count {
            let missing = count - have;
            eprintln!("scep-load: building {missing} PKIMessages (cached in {})", self.path.display());
            let base = all.len();
            let challenge = Challenge::Static(password.to_string());
            let built = parallel(missing, threads, |i| build_one(base + i, devices, ca, &challenge, options))?;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .map_err(|e| LoadError::io(&self.path, e))?;
            let mut w = BufWriter::new(f);
            for p in &built {
                write_record(&mut w, p).map_err(|e| LoadError::io(&self.path, e))?;
            }
            w.flush().map_err(|e| LoadError::io(&self.path, e))?;
            all.extend(built);
        }
        Ok(all.into_iter().skip(self.used).take(count).collect())
    }
}

/// Builds `count` messages now (Intune mode, or no cache).
///
/// # Errors
/// Message-building errors.
pub fn build_fresh(
    count: usize,
    devices: &[Device],
    ca: &CaCertificates,
    challenge: &Challenge,
    options: &MessageOptions,
    threads: usize,
) -> Result<Vec<Prepared>, LoadError> {
    parallel(count, threads, |i| build_one(i, devices, ca, challenge, options))
}

fn write_bytes(w: &mut impl std::io::Write, b: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(b.len()).map_err(|_| std::io::Error::other("record too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(b)
}

fn write_record(w: &mut impl std::io::Write, p: &Prepared) -> std::io::Result<()> {
    let device = u32::try_from(p.device).map_err(|_| std::io::Error::other("device index too large"))?;
    w.write_all(&device.to_le_bytes())?;
    let r = &p.request;
    for field in
        [&r.der[..], r.transaction_id.as_bytes(), &r.sender_nonce, &r.signer_certificate, &r.message_data, &r.envelope]
    {
        write_bytes(w, field)?;
    }
    Ok(())
}

/// A little-endian u32, or `None` at a clean end of input (a partial value is an error).
fn read_u32(r: &mut impl std::io::Read) -> std::io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    loop {
        match r.read(&mut b[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    r.read_exact(&mut b[1..])?;
    Ok(Some(u32::from_le_bytes(b)))
}

fn read_bytes(r: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let len = read_u32(r)?.ok_or_else(|| std::io::Error::other("truncated record"))?;
    let mut v = vec![0; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

fn read_records(mut r: impl std::io::Read, options: &MessageOptions) -> std::io::Result<Vec<Prepared>> {
    let mut out = Vec::new();
    while let Some(device) = read_u32(&mut r)? {
        let der = read_bytes(&mut r)?;
        let transaction_id = String::from_utf8(read_bytes(&mut r)?).map_err(std::io::Error::other)?;
        let sender_nonce = read_bytes(&mut r)?;
        let signer_certificate = read_bytes(&mut r)?;
        let message_data = read_bytes(&mut r)?;
        let envelope = read_bytes(&mut r)?;
        let request = PkiRequest {
            der,
            message_type: MessageType::PKCS_REQ,
            options: MessageOptions { transaction_id: Some(transaction_id.clone()), ..options.clone() },
            transaction_id,
            sender_nonce,
            signer_certificate,
            message_data,
            envelope,
        };
        out.push(Prepared { device: device as usize, request });
    }
    Ok(out)
}

/// Runs `f(0..count)` on `threads` threads, keeping the order.
fn parallel<T: Send>(
    count: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<T, LoadError> + Sync,
) -> Result<Vec<T>, LoadError> {
    let threads = threads.clamp(1, count.max(1));
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || (t * chunk..((t + 1) * chunk).min(count)).map(f).collect::<Result<Vec<T>, _>>())
            })
            .collect();
        let mut out = Vec::with_capacity(count);
        for h in handles {
            out.extend(h.join().map_err(|_| LoadError::Setup("a builder thread panicked".into()))??);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let p = Prepared {
            device: 7,
            request: PkiRequest {
                der: vec![1, 2, 3],
                message_type: MessageType::PKCS_REQ,
                transaction_id: "abcd".into(),
                sender_nonce: vec![9; 16],
                signer_certificate: vec![4],
                message_data: vec![5, 6],
                envelope: vec![],
                options: MessageOptions { transaction_id: Some("abcd".into()), ..MessageOptions::default() },
            },
        };
        let mut buf = Vec::new();
        write_record(&mut buf, &p).unwrap();
        write_record(&mut buf, &p).unwrap();
        let back = read_records(&buf[..], &MessageOptions::default()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].device, 7);
        assert_eq!(back[1].request, p.request);
        buf.push(0);
        assert!(read_records(&buf[..], &MessageOptions::default()).is_err());
    }

    #[test]
    fn parallel_keeps_order() {
        let v = parallel(10, 3, |i| Ok(i * 2)).unwrap();
        assert_eq!(v, (0..10).map(|i| i * 2).collect::<Vec<_>>());
    }
}
