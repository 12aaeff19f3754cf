//! The claim gates that need no shared state: time (4), audience (5) and CSR
//! binding (6).

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::claims::Claims;
use super::{CsrIdentity, Label};

/// Gate 4: `now + tol >= iat`, `now - tol < exp`, and the age since `iat` at
/// most the validity cap (plus the tolerance, which covers drift between the
/// Connector's clock and ours).
pub(crate) fn check_time(claims: &Claims<'_>, now: i64, tol: i64, validity: i64) -> Result<(), (Label, String)> {
    if now.saturating_add(tol) < claims.iat {
        return Err((
            Label::NotYetValid,
            format!("challenge issued at {} is in the future (now {now}, tolerance {tol}s)", claims.iat),
        ));
    }
    if now.saturating_sub(tol) >= claims.exp {
        return Err((Label::Expired, format!("challenge expired at {} (now {now}, tolerance {tol}s)", claims.exp)));
    }
    let age = now.saturating_sub(claims.iat);
    if age > validity.saturating_add(tol) {
        return Err((
            Label::Expired,
            format!("challenge is {age}s old, over the validity cap of {validity}s (tolerance {tol}s)"),
        ));
    }
    Ok(())
}

/// The last second at which [`check_time`] can still accept `claims`.
pub(crate) fn last_acceptable(claims: &Claims<'_>, tol: i64, validity: i64) -> i64 {
    claims.exp.saturating_add(tol).saturating_sub(1).min(claims.iat.saturating_add(validity).saturating_add(tol))
}

/// Gate 5: the `aud` claim must name the configured audience; a challenge
/// without `aud` fails when an audience is configured.
pub(crate) fn check_audience(claims: &Claims<'_>, want: Option<&str>) -> Result<(), String> {
    let Some(want) = want else { return Ok(()) };
    match &claims.aud {
        None => Err(format!("challenge has no aud claim; expected {want:?}")),
        Some(aud) if aud.contains(want) => Ok(()),
        Some(aud) => Err(format!("aud {} does not name {want:?}", aud.to_display())),
    }
}

fn set<'s>(values: impl Iterator<Item = &'s str>, fold_case: bool) -> BTreeSet<Cow<'s, str>> {
    values.map(|v| if fold_case { Cow::Owned(v.to_ascii_lowercase()) } else { Cow::Borrowed(v) }).collect()
}

fn compare(dimension: &str, claim: &[Cow<'_, str>], csr: &[String], fold_case: bool) -> Result<(), String> {
    let want = set(claim.iter().map(AsRef::as_ref), fold_case);
    let got = set(csr.iter().map(String::as_str), fold_case);
    if want == got {
        return Ok(());
    }
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    Err(format!(
        "{dimension} mismatch: expected {:?}, got {:?} (missing {missing:?}, unexpected {extra:?})",
        want.iter().collect::<Vec<_>>(),
        got.iter().collect::<Vec<_>>()
    ))
}

/// Gate 6: the CSR carries exactly the claim's identity. CN set == {device_name}
/// (no CN when the claim has none); dNSName, rfc822Name and UPN SAN sets equal
/// to `san_dns`, `san_rfc822`, `san_upn`. DNS names, e-mail addresses and UPNs
/// compare ASCII case-insensitively (DNS per RFC 4343; mail and UPN as
/// Exchange and Active Directory do); the CN compares exactly. Duplicates are
/// ignored (set semantics). The error names the dimension, expected and actual.
pub(crate) fn check_binding(claims: &Claims<'_>, csr: &CsrIdentity<'_>) -> Result<(), String> {
    let device: Vec<Cow<'_, str>> = claims.device_name.iter().cloned().collect();
    compare("CN (device_name)", &device, csr.common_names, false)?;
    compare("SAN DNS (san_dns)", &claims.san_dns, csr.dns, true)?;
    compare("SAN RFC822 (san_rfc822)", &claims.san_rfc822, csr.emails, true)?;
    compare("SAN UPN (san_upn)", &claims.san_upn, csr.upns, true)?;
    Ok(())
}
