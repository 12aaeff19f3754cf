//! Constant-time removal of PKCS#1 v1.5 encryption padding (RFC 8017 §7.2.2
//! step 3) from the raw RSA result that `CKM_RSA_X_509` returns.
//!
//! Why scepd unpads itself: with `CKM_RSA_PKCS` the token checks the padding
//! and answers bad padding with an error code, after a token-dependent amount
//! of work. The raw mechanism always returns the k-byte block; the check below
//! touches every byte the same way whatever the block holds, and its only
//! branch is the final verdict, which the engine's implicit rejection
//! (`scep_engine::envelope`) hides: a failure continues with a random content
//! key, exactly like a wrong key would.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};

/// Minimum padding string length (RFC 8017 §7.2.1: PS is at least 8 octets).
const MIN_PS_LEN: u32 = 8;

/// Returns the message inside `em` = `0x00 || 0x02 || PS || 0x00 || M`
/// (PS ≥ 8 non-zero octets), or `None` when the block is not so formed.
///
/// Runs in time that depends only on `em.len()` up to the final verdict and
/// the copy of `M`.
pub(crate) fn unpad_pkcs1v15_type2(em: &[u8]) -> Option<Vec<u8>> {
    let Ok(k) = u32::try_from(em.len()) else { return None };
    if k < 2 + MIN_PS_LEN + 1 {
        return None; // depends on the key size only, which is public
    }
    let mut good = em.first().copied().unwrap_or(1).ct_eq(&0) & em.get(1).copied().unwrap_or(0).ct_eq(&2);
    let mut looking = Choice::from(1);
    let mut zero_index: u32 = 0;
    for (i, &b) in (0u32..).zip(em.iter()).skip(2) {
        let is_zero = b.ct_eq(&0);
        zero_index.conditional_assign(&i, looking & is_zero);
        looking &= !is_zero;
    }
    good &= !looking;
    // PS = em[2..zero_index] must be at least 8 octets: zero_index >= 10.
    good &= zero_index.ct_gt(&(2 + MIN_PS_LEN - 1));
    if bool::from(good) {
        let start = usize::try_from(zero_index).ok()?.checked_add(1)?;
        em.get(start..).map(<[u8]>::to_vec)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(k: usize, ps_len: usize, msg: &[u8]) -> Vec<u8> {
        let mut em = vec![0x00, 0x02];
        em.extend(std::iter::repeat_n(0x5a, ps_len));
        em.push(0);
        em.extend_from_slice(msg);
        assert_eq!(em.len(), k);
        em
    }

    #[test]
    fn well_formed_blocks_give_the_message() {
        let em = block(256, 256 - 3 - 32, &[7; 32]);
        assert_eq!(unpad_pkcs1v15_type2(&em).unwrap(), vec![7; 32]);
        let em = block(256, 8, &[1; 245]);
        assert_eq!(unpad_pkcs1v15_type2(&em).unwrap(), vec![1; 245]);
        // An empty message is well formed (the engine then refuses its length).
        let em = block(256, 253, &[]);
        assert_eq!(unpad_pkcs1v15_type2(&em).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let good = block(256, 256 - 3 - 24, &[3; 24]);
        let mut first = good.clone();
        first[0] = 1;
        let mut second = good.clone();
        second[1] = 1;
        let mut no_separator = good.clone();
        for b in no_separator.iter_mut().skip(2) {
            if *b == 0 {
                *b = 9;
            }
        }
        let short_ps = block(256, 7, &[1; 246]);
        for (name, em) in [("first", first), ("second", second), ("separator", no_separator), ("ps", short_ps)] {
            assert!(unpad_pkcs1v15_type2(&em).is_none(), "{name}");
        }
        assert!(unpad_pkcs1v15_type2(&[0, 2, 1, 1, 1, 1, 1, 1, 1, 0]).is_none(), "shorter than 11 octets");
    }
}
