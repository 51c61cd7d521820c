//! Verification of a supplied trust bundle, check by check as Dapr's sentry does it (and a little
//! stricter: every certificate must be valid now, path-length limits are honoured).

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use super::{certs_to_pem, keys, Bundle, BundleError, BundlePart};

/// Parses and verifies anchors, issuer chain and issuer key, as of `now`, check by check in
/// Dapr's order (the first failing check names the problem).
pub fn verify(
    anchors_pem: &[u8],
    chain_pem: &[u8],
    key_pem: &[u8],
    now: OffsetDateTime,
) -> Result<Bundle, BundleError> {
    use BundlePart::*;
    let anchors = parse_certs(anchors_pem).map_err(|p| BundleError::new(Anchors, p))?;
    let mut chain = parse_certs(chain_pem).map_err(|p| BundleError::new(IssuerChain, p))?;
    let key_text =
        std::str::from_utf8(key_pem).map_err(|_| BundleError::new(IssuerKey, "not a PEM text"))?;
    let key = keys::parse_private_key(key_text).map_err(|p| BundleError::new(IssuerKey, p))?;
    let at = ASN1Time::from_timestamp(now.unix_timestamp())
        .map_err(|_| BundleError::new(Anchors, "clock out of range"))?;

    let anchors_not_after = check_anchors(&anchors)?;
    drop_trailing_root(&mut chain)?;
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|d| parse_cert(d))
        .collect::<Result<_, _>>()
        .map_err(|p| BundleError::new(IssuerChain, p))?;
    check_links(&parsed)?;
    let issuer = &parsed[0];
    check_can_sign(issuer)?;
    if keys::public_key_bits(&key) != issuer.public_key().subject_public_key.data.as_ref() {
        return Err(BundleError::new(
            IssuerKey,
            "issuer key does not match issuer certificate",
        ));
    }
    let anchor = anchor_of(&anchors, &parsed[parsed.len() - 1])?;
    let path: Vec<&X509Certificate<'_>> = parsed.iter().chain(std::iter::once(&anchor)).collect();
    check_valid_for_servers(&path, at)?;
    check_path_lengths(&path)?;

    let issuer_not_after = issuer.validity().not_after.to_datetime();
    drop(parsed);
    Ok(Bundle {
        anchors_pem: certs_to_pem(&anchors),
        anchors,
        issuer_chain_pem: certs_to_pem(&chain),
        issuer_chain: chain,
        issuer_key_pem: key_text.to_owned(),
        issuer_not_after,
        anchors_not_after,
    })
}

/// Every anchor must be a self-signed CA; returns when the first of them expires.
fn check_anchors(anchors: &[CertificateDer<'static>]) -> Result<OffsetDateTime, BundleError> {
    let mut anchors_not_after = None::<OffsetDateTime>;
    for der in anchors {
        let cert = parse_cert(der).map_err(|p| BundleError::new(BundlePart::Anchors, p))?;
        if !is_self_signed(&cert) || !is_ca(&cert) {
            return Err(BundleError::new(
                BundlePart::Anchors,
                format!(
                    "certificate in trust anchor is not self-signed: {}",
                    cert.subject()
                ),
            ));
        }
        let na = cert.validity().not_after.to_datetime();
        anchors_not_after = Some(anchors_not_after.map_or(na, |a| a.min(na)));
    }
    anchors_not_after.ok_or_else(|| BundleError::new(BundlePart::Anchors, "no certificates found"))
}

/// A self-signed root appended to a longer issuer chain is dropped (the anchors hold it).
fn drop_trailing_root(chain: &mut Vec<CertificateDer<'static>>) -> Result<(), BundleError> {
    if chain.len() > 1 {
        let last = parse_cert(&chain[chain.len() - 1])
            .map_err(|p| BundleError::new(BundlePart::IssuerChain, p))?;
        if is_self_signed(&last) {
            chain.pop();
        }
    }
    Ok(())
}

/// Each chain certificate must be signed by the next.
fn check_links(chain: &[X509Certificate<'_>]) -> Result<(), BundleError> {
    for pair in chain.windows(2) {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw()
            || pair[0]
                .verify_signature(Some(pair[1].public_key()))
                .is_err()
        {
            return Err(BundleError::new(
                BundlePart::IssuerChain,
                format!(
                    "certificate chain is not valid: {} is not signed by {}",
                    pair[0].subject(),
                    pair[1].subject()
                ),
            ));
        }
    }
    Ok(())
}

/// The issuer must be a CA allowed to sign certificates.
fn check_can_sign(issuer: &X509Certificate<'_>) -> Result<(), BundleError> {
    if !is_ca(issuer) {
        return Err(BundleError::new(
            BundlePart::IssuerChain,
            "intermediate certificate is not valid for signing (not a CA)",
        ));
    }
    if let Ok(Some(ku)) = issuer.key_usage() {
        if !ku.value.key_cert_sign() {
            return Err(BundleError::new(
                BundlePart::IssuerChain,
                "intermediate certificate is not valid for signing (no keyCertSign)",
            ));
        }
    }
    Ok(())
}

/// The anchor that signed `top`, the chain's last certificate.
fn anchor_of<'a>(
    anchors: &'a [CertificateDer<'static>],
    top: &X509Certificate<'_>,
) -> Result<X509Certificate<'a>, BundleError> {
    anchors
        .iter()
        .filter_map(|d| parse_cert(d).ok())
        .find(|a| {
            top.issuer().as_raw() == a.subject().as_raw()
                && top.verify_signature(Some(a.public_key())).is_ok()
        })
        .ok_or_else(|| {
            BundleError::new(
                BundlePart::IssuerChain,
                "issuer chain does not belong to trust anchors: no trust anchor signed it",
            )
        })
}

/// Every certificate of the path must be valid at `at` and allow server authentication.
fn check_valid_for_servers(path: &[&X509Certificate<'_>], at: ASN1Time) -> Result<(), BundleError> {
    for cert in path {
        if !cert.validity().is_valid_at(at) {
            return Err(BundleError::new(
                BundlePart::IssuerChain,
                format!(
                    "issuer chain does not belong to trust anchors: certificate {} is expired or not yet valid (valid {} to {})",
                    cert.subject(),
                    cert.validity().not_before,
                    cert.validity().not_after
                ),
            ));
        }
        if !permits_server_auth(cert) {
            return Err(BundleError::new(
                BundlePart::IssuerChain,
                format!("issuer chain does not belong to trust anchors: {} restricts extended key usage", cert.subject()),
            ));
        }
    }
    Ok(())
}

/// pathLenConstraint: a CA at depth d of the path (issuer = 0) may have at most its limit of CAs
/// below it.
fn check_path_lengths(path: &[&X509Certificate<'_>]) -> Result<(), BundleError> {
    for (depth, cert) in path.iter().enumerate() {
        if let Ok(Some(bc)) = cert.basic_constraints() {
            if let Some(limit) = bc.value.path_len_constraint {
                if (depth as u64) > u64::from(limit) {
                    return Err(BundleError::new(
                        BundlePart::IssuerChain,
                        format!(
                            "issuer chain violates the path length limit of {}",
                            cert.subject()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Decodes every `CERTIFICATE` block up to the first block of another type; the text must be
/// PEM blocks and whitespace only ([`crate::encoding::pem_blocks`]).
fn parse_certs(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if !pem_bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err("no certificates found".into());
    }
    let blocks = crate::encoding::pem_blocks(pem_bytes)?;
    let certs: Vec<_> = blocks
        .into_iter()
        .take_while(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err("no certificates found".into());
    }
    for der in &certs {
        parse_cert(der)?;
    }
    Ok(certs)
}

fn parse_cert<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    crate::encoding::check_der(der).map_err(|e| format!("failed to parse certificate: {e}"))?;
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing data after certificate".into()),
        Err(e) => Err(format!("failed to parse certificate: {e}")),
    }
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn permits_server_auth(cert: &X509Certificate<'_>) -> bool {
    match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.any || eku.value.server_auth,
        Ok(None) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{generate, KeyType};
    use crate::spiffe::TrustDomain;
    use std::time::Duration;

    fn fresh() -> Bundle {
        let now = OffsetDateTime::now_utc();
        let params = crate::bundle::CaParams::new(
            TrustDomain::public(),
            "default",
            KeyType::Ed25519,
            Duration::from_secs(60),
        );
        generate(&params, now).unwrap().bundle
    }

    #[test]
    fn generated_bundle_verifies_and_root_appended_is_stripped() {
        let b = fresh();
        let now = OffsetDateTime::now_utc();
        let with_root = format!("{}{}", b.issuer_chain_pem, b.anchors_pem);
        let again = verify(
            b.anchors_pem.as_bytes(),
            with_root.as_bytes(),
            b.issuer_key_pem.as_bytes(),
            now,
        )
        .unwrap();
        assert_eq!(again.issuer_chain.len(), 1);
        assert_eq!(again.anchors_pem, b.anchors_pem);
    }

    #[test]
    fn refuses_foreign_key_and_foreign_anchor() {
        let a = fresh();
        let b = fresh();
        let now = OffsetDateTime::now_utc();
        let err = verify(
            a.anchors_pem.as_bytes(),
            a.issuer_chain_pem.as_bytes(),
            b.issuer_key_pem.as_bytes(),
            now,
        )
        .unwrap_err();
        assert_eq!(err.part, BundlePart::IssuerKey);
        let err = verify(
            b.anchors_pem.as_bytes(),
            a.issuer_chain_pem.as_bytes(),
            a.issuer_key_pem.as_bytes(),
            now,
        )
        .unwrap_err();
        assert!(
            err.problem.contains("does not belong to trust anchors"),
            "{err}"
        );
        let both = format!("{}{}", b.anchors_pem, a.anchors_pem);
        verify(
            both.as_bytes(),
            a.issuer_chain_pem.as_bytes(),
            a.issuer_key_pem.as_bytes(),
            now,
        )
        .unwrap();
    }

    #[test]
    fn refuses_expired_and_non_root_anchor() {
        let a = fresh();
        let later = OffsetDateTime::now_utc() + Duration::from_secs(400 * 86400);
        let err = verify(
            a.anchors_pem.as_bytes(),
            a.issuer_chain_pem.as_bytes(),
            a.issuer_key_pem.as_bytes(),
            later,
        )
        .unwrap_err();
        assert!(err.problem.contains("expired"), "{err}");
        let now = OffsetDateTime::now_utc();
        let err = verify(
            a.issuer_chain_pem.as_bytes(),
            a.issuer_chain_pem.as_bytes(),
            a.issuer_key_pem.as_bytes(),
            now,
        )
        .unwrap_err();
        assert_eq!(err.part, BundlePart::Anchors);
        let err = verify(
            b"",
            a.issuer_chain_pem.as_bytes(),
            a.issuer_key_pem.as_bytes(),
            now,
        )
        .unwrap_err();
        assert_eq!(err.problem, "no certificates found");
    }
}
