//! The keyed fingerprint of the replay cache and the rate limiter: two
//! independently keyed SipHash-2-4 values (Aumasson and Bernstein, "SipHash:
//! a fast short-input PRF", 2012) over length-prefixed parts.
//!
//! Both tables need the same property from their key: with a secret key, no
//! one can aim entries at one neighbourhood of the table or at another entry's
//! fingerprint. A PRF gives that; SipHash is one built for exactly this job
//! (hash-flooding resistance for short inputs) and costs tens of nanoseconds,
//! where an HMAC-SHA256 costs a few hundred. Two 64-bit outputs under
//! independent keys give the tables 128 bits to split into slot, tag and
//! check value.

/// A secret key for [`KeyedHash::hash`]: four 64-bit words (two SipHash keys).
#[derive(Clone)]
pub(crate) struct KeyedHash {
    keys: [(u64, u64); 2],
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(..)")
    }
}

impl KeyedHash {
    /// A key from 32 secret random bytes.
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&key[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Self { keys: [(word(0), word(1)), (word(2), word(3))] }
    }

    /// Two 64-bit values for `parts`, each part prefixed with its length (so
    /// `("ab", "c")` and `("a", "bc")` differ).
    pub(crate) fn hash(&self, parts: &[&str]) -> [u64; 2] {
        self.keys.map(|(k0, k1)| {
            let mut h = SipHash24::new(k0, k1);
            for part in parts {
                h.write(&(part.len() as u64).to_le_bytes());
                h.write(part.as_bytes());
            }
            h.finish()
        })
    }
}

/// SipHash-2-4 with a 64-bit output, fed incrementally.
struct SipHash24 {
    v: [u64; 4],
    /// Bytes of the current, unfinished 8-byte word.
    tail: u64,
    ntail: u32,
    length: u64,
}

impl SipHash24 {
    const fn new(k0: u64, k1: u64) -> Self {
        Self {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        Self::round(&mut self.v);
        Self::round(&mut self.v);
        self.v[0] ^= m;
    }

    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        // Complete a pending partial word first.
        while self.ntail != 0 && !bytes.is_empty() {
            self.tail |= u64::from(bytes[0]) << (8 * self.ntail);
            self.ntail += 1;
            bytes = &bytes[1..];
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
        if bytes.is_empty() {
            return;
        }
        // Whole words straight from the input (the partial word is empty here).
        let mut words = bytes.chunks_exact(8);
        for word in words.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.compress(u64::from_le_bytes(w));
        }
        // Keep the rest (fewer than 8 bytes).
        for (i, &b) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(b) << (8 * i);
        }
        self.ntail = u32::try_from(words.remainder().len()).unwrap_or(0);
    }

    fn finish(mut self) -> u64 {
        let last = ((self.length & 0xff) << 56) | self.tail;
        self.compress(last);
        self.v[2] ^= 0xff;
        for _ in 0..4 {
            Self::round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference implementation's first test vector: key 00..0f, empty
    /// message (the paper's appendix; `vectors.h`, SipHash-2-4, 64-bit).
    #[test]
    fn reference_vector() {
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(SipHash24::new(k0, k1).finish(), 0x726f_db47_dd0e_0e31);
    }

    /// Against the standard library's SipHash-2-4 (kept, deprecated, as
    /// `std::hash::SipHasher`) for every length across two word boundaries,
    /// in one write and byte by byte.
    #[test]
    #[allow(deprecated)]
    fn matches_the_standard_librarys_siphash_2_4() {
        use std::hash::Hasher as _;
        let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let data: Vec<u8> = (0u8..20).collect();
        for len in 0..data.len() {
            let mut oracle = std::hash::SipHasher::new_with_keys(k0, k1);
            oracle.write(&data[..len]);
            let mut whole = SipHash24::new(k0, k1);
            whole.write(&data[..len]);
            let mut split = SipHash24::new(k0, k1);
            data[..len].iter().for_each(|b| split.write(&[*b]));
            let want = oracle.finish();
            assert_eq!(whole.finish(), want, "len {len}");
            assert_eq!(split.finish(), want, "len {len}, byte by byte");
        }
    }

    #[test]
    fn parts_are_framed_and_keys_matter() {
        let mut key = [0u8; 32];
        key.iter_mut().enumerate().for_each(|(i, b)| *b = u8::try_from(i).unwrap());
        let k = KeyedHash::new(&key);
        assert_ne!(k.hash(&["ab", "c"]), k.hash(&["a", "bc"]));
        assert_eq!(k.hash(&["ab", "c"]), k.hash(&["ab", "c"]));
        let [a, b] = k.hash(&["x"]);
        assert_ne!(a, b, "two independent keys");
        key[0] ^= 1;
        assert_ne!(KeyedHash::new(&key).hash(&["x"]), k.hash(&["x"]));
    }
}
