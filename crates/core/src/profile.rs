//! Certificate profiles: what a root, an issuer and a workload (leaf) certificate contain.
//! Matches Dapr v1.18 (§4.1–§4.3 of the behaviour contract). Only the CSR's public key ever
//! reaches a leaf; nothing else a requester sends is copied.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::spiffe::{SpiffeId, TrustDomain};

/// A uniformly random, positive 128-bit serial number from the system CSPRNG.
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // aws-lc-rs' system RNG does not fail on supported platforms; an all-zero serial would still
    // be syntactically valid, so a failure here cannot produce a malformed certificate.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    SerialNumber::from_slice(&bytes)
}

/// Root: `O=<trust domain>`, CA without path length limit, KU digitalSignature + keyCertSign.
pub fn root_params(
    td: &TrustDomain,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, td.as_str());
    p.serial_number = Some(random_serial());
    p.not_before = not_before;
    p.not_after = not_after;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    p
}

/// Issuer: `O=spiffe://<td>/ns/<namespace>/dapr-sentry`, CA, KU digitalSignature + keyCertSign +
/// cRLSign, AKI = root SKI.
pub fn issuer_params(
    td: &TrustDomain,
    namespace: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(
        DnType::OrganizationName,
        format!("spiffe://{td}/ns/{namespace}/dapr-sentry"),
    );
    p.serial_number = Some(random_serial());
    p.not_before = not_before;
    p.not_after = not_after;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.use_authority_key_identifier_extension = true;
    p
}

/// Workload leaf: empty subject, one critical URI SAN (+ control-plane DNS SANs), KU
/// digitalSignature (critical), EKU serverAuth + clientAuth, not a CA, AKI, random serial.
pub fn leaf_params(
    id: &SpiffeId,
    dns_names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.serial_number = Some(random_serial());
    p.not_before = not_before;
    p.not_after = not_after;
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    let mut sans = Vec::with_capacity(1 + dns_names.len());
    sans.push(SanType::URI(id.to_string().try_into()?));
    for name in dns_names {
        sans.push(SanType::DnsName(name.as_str().try_into()?));
    }
    p.subject_alt_names = sans;
    Ok(p)
}
