//! Certificate signing requests: from PEM bytes to the requester's verified public key.
//!
//! Only the public key is taken; the subject, SANs and every requested extension are ignored, so
//! a CSR asking for `CA:true` or extra names gets neither. Weak or unusual keys are refused, and
//! so are EC keys in compressed form (Go's crypto/x509, in every daprd, cannot parse a
//! certificate carrying one). The size is checked before any parsing, the PEM must be exactly one
//! block and the DER's lengths minimal ([`crate::encoding`]).

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::asn1_rs::{Oid, Tag};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::encoding;

/// Smallest RSA modulus accepted from a requester.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bounds the verification cost of one request).
pub const MAX_RSA_BITS: usize = 8192;
/// Largest CSR accepted, in bytes of PEM, checked before any decoding: a Dapr CSR is under
/// 1 KiB and an RSA-8192 one about 3.2 KiB; parsing and hashing cost grows with the size.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// Why a CSR was refused. Every variant maps to `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Larger than [`MAX_CSR_BYTES`].
    #[error("certificate signing request of {0} bytes is too large (at most {MAX_CSR_BYTES} bytes accepted)")]
    TooLarge(usize),
    /// No PEM block, or a block of the wrong type.
    #[error("invalid certificate signing request")]
    NotPem,
    /// Text around the PEM block, or more than one block.
    #[error("invalid certificate signing request: {0}")]
    PemFraming(String),
    /// The DER is not a PKCS#10 request.
    #[error("failed to parse certificate signing request: {0}")]
    Parse(String),
    /// The request's self-signature does not verify with its own key.
    #[error("invalid signature")]
    BadSignature,
    /// The key type or size is not accepted.
    #[error("unsupported public key in certificate signing request: {0}")]
    UnsupportedKey(String),
}

/// The requester's public key, checked and ready to be certified.
#[derive(Debug, Clone)]
pub struct RequesterKey {
    alg: &'static SignatureAlgorithm,
    bits: Vec<u8>,
}

impl PublicKeyData for RequesterKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Parses a PEM CSR (`CERTIFICATE REQUEST`, or the legacy `CERTIFICATE` label), checks its key
/// type and its self-signature, and returns the public key.
pub fn parse_csr(pem_bytes: &[u8]) -> Result<RequesterKey, CsrError> {
    if pem_bytes.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(pem_bytes.len()));
    }
    if pem::parse(pem_bytes).is_err() {
        return Err(CsrError::NotPem);
    }
    let block = encoding::pem_single(pem_bytes).map_err(CsrError::PemFraming)?;
    if !matches!(block.tag(), "CERTIFICATE REQUEST" | "CERTIFICATE") {
        return Err(CsrError::NotPem);
    }
    encoding::check_der(block.contents()).map_err(|e| CsrError::Parse(format!("not DER: {e}")))?;
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Parse("trailing data".into()));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let alg = accepted_algorithm(spki)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(RequesterKey {
        alg,
        bits: spki.subject_public_key.data.to_vec(),
    })
}

fn accepted_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<&'static SignatureAlgorithm, CsrError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_SIG_ED25519 {
        return Ok(&rcgen::PKCS_ED25519);
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        // `Any::as_oid` does not check the tag: explicit curve parameters (a SEQUENCE) would
        // come out as a bogus OID holding the caller's bytes.
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .filter(|p| p.tag() == Tag::Oid)
            .and_then(|p| p.as_oid().ok());
        let (alg, coordinate) = match curve {
            Some(c) if c == OID_EC_P256 => (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
            Some(c) if c == OID_NIST_EC_P384 => (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
            Some(c) => {
                return Err(CsrError::UnsupportedKey(format!(
                    "elliptic curve {} (use P-256 or P-384)",
                    short_oid(&c)
                )))
            }
            None => {
                return Err(CsrError::UnsupportedKey(
                    "elliptic curve without a named curve".into(),
                ))
            }
        };
        return uncompressed_point(&spki.subject_public_key.data, coordinate).map(|()| alg);
    }
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrError::UnsupportedKey("malformed RSA key".into()));
        };
        let bits = modulus_bits(rsa.modulus);
        if bits < MIN_RSA_BITS {
            return Err(CsrError::UnsupportedKey(format!(
                "RSA key of {bits} bits (at least {MIN_RSA_BITS} required)"
            )));
        }
        if bits > MAX_RSA_BITS {
            return Err(CsrError::UnsupportedKey(format!(
                "RSA key of {bits} bits (at most {MAX_RSA_BITS} accepted)"
            )));
        }
        return Ok(&rcgen::PKCS_RSA_SHA256);
    }
    Err(CsrError::UnsupportedKey(format!(
        "algorithm {} (use Ed25519, ECDSA P-256/P-384 or RSA)",
        short_oid(oid)
    )))
}

/// Accepts only an uncompressed SEC 1 point (`04 || X || Y`) with `coordinate`-byte coordinates.
fn uncompressed_point(point: &[u8], coordinate: usize) -> Result<(), CsrError> {
    match point.first() {
        Some(0x04) if point.len() == 1 + 2 * coordinate => Ok(()),
        Some(0x02 | 0x03) => Err(CsrError::UnsupportedKey(
            "EC public key in compressed form (send the uncompressed point)".into(),
        )),
        _ => Err(CsrError::UnsupportedKey("malformed EC public key".into())),
    }
}

/// Longest OID text quoted back to a caller.
const MAX_OID_TEXT: usize = 64;

/// An OID from the caller as text, cut to [`MAX_OID_TEXT`] characters: it goes into the gRPC
/// status message (a header), so its size must not be the caller's choice.
fn short_oid(oid: &Oid<'_>) -> String {
    let text = oid.to_id_string();
    match text.char_indices().nth(MAX_OID_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Exact bit length of a big-endian unsigned modulus.
fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|&b| b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn csr_pem(key: &KeyPair) -> String {
        let params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_supported_keys() {
        for alg in [
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let got = parse_csr(csr_pem(&key).as_bytes()).unwrap();
            assert_eq!(got.der_bytes(), key.der_bytes());
        }
    }

    #[test]
    fn legacy_label_accepted_other_labels_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let pem_text = csr_pem(&key);
        let der = pem::parse(&pem_text).unwrap().into_contents();
        let legacy = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        parse_csr(legacy.as_bytes()).unwrap();
        let other = pem::encode(&pem::Pem::new("PUBLIC KEY", der));
        assert_eq!(parse_csr(other.as_bytes()).unwrap_err(), CsrError::NotPem);
        assert_eq!(parse_csr(b"not pem").unwrap_err(), CsrError::NotPem);
    }

    #[test]
    fn garbage_der_and_tampered_signature() {
        let junk = pem::encode(&pem::Pem::new(
            "CERTIFICATE REQUEST",
            vec![0x30, 0x03, 1, 2, 3],
        ));
        assert!(matches!(
            parse_csr(junk.as_bytes()),
            Err(CsrError::Parse(_))
        ));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut der = pem::parse(csr_pem(&key)).unwrap().into_contents();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert_eq!(
            parse_csr(tampered.as_bytes()).unwrap_err(),
            CsrError::BadSignature
        );
    }

    #[test]
    fn long_oids_are_cut() {
        let long = Oid::from(&[1u64; 200][..]).unwrap();
        let text = short_oid(&long);
        assert_eq!(text.chars().count(), MAX_OID_TEXT + 1);
        assert!(text.ends_with('…'));
        let p256 = OID_EC_P256;
        assert_eq!(short_oid(&p256), "1.2.840.10045.3.1.7");
    }

    #[test]
    fn modulus_bit_length() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[0, 0]), 0);
    }
}
