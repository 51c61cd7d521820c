//! Key material of the trust bundle: key algorithms for a generated CA, private-key PEM parsing
//! (PKCS#8 v1 or v2, SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`), and the encoding Sentry
//! writes: PKCS#8 v1 `PRIVATE KEY`, as Go's `x509.MarshalPKCS8PrivateKey` does.

use aws_lc_rs::signature::Ed25519KeyPair;
use rcgen::{KeyPair, PublicKeyData};

/// Key algorithm of a generated root and issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum KeyType {
    /// Ed25519 (Dapr ≥ 1.18 default).
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256 (Dapr ≤ 1.17).
    #[cfg_attr(feature = "clap", value(name = "ecdsa-p256"))]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    #[cfg_attr(feature = "clap", value(name = "ecdsa-p384"))]
    EcdsaP384,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    #[cfg_attr(feature = "clap", value(name = "rsa-2048"))]
    Rsa2048,
}

impl KeyType {
    /// Generates a fresh key pair of this type.
    pub fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// PEM label of a PKCS#8 private key.
pub(crate) const PKCS8_LABEL: &str = "PRIVATE KEY";

/// Parses the private key (PKCS#8, SEC1 or PKCS#1) that is the one PEM block of `pem_text`.
pub fn parse_private_key(pem_text: &str) -> Result<KeyPair, String> {
    let block = crate::encoding::pem_single(pem_text.as_bytes())?;
    if !block.tag().ends_with("PRIVATE KEY") {
        return Err("no PRIVATE KEY PEM block found".to_owned());
    }
    if block.tag().contains("ENCRYPTED") {
        return Err("encrypted private keys are not supported".to_owned());
    }
    KeyPair::try_from(block.contents())
        .map_err(|_| format!("unsupported or malformed private key ({})", block.tag()))
}

/// PKCS#8 v1 PEM of a key pair (what Sentry writes for keys it generates).
pub fn to_pkcs8_pem(key: &KeyPair) -> String {
    super::pem_block(PKCS8_LABEL, &pkcs8_v1(key))
}

/// RFC 5208 `PrivateKeyInfo` DER. aws-lc-rs generates Ed25519 keys as RFC 5958 v2 (with the
/// public key), which OpenSSL 3.0's `openssl pkey` refuses; ECDSA and RSA keys already are v1.
fn pkcs8_v1(key: &KeyPair) -> Vec<u8> {
    let der = key.serialized_der();
    if key.algorithm() == &rcgen::PKCS_ED25519 {
        let v1 = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .ok()
            .and_then(|k| k.to_pkcs8v1().ok());
        if let Some(v1) = v1 {
            return v1.as_ref().to_vec();
        }
    }
    der.to_vec()
}

/// The raw public key bytes (the SubjectPublicKeyInfo bit string) of a key pair.
pub fn public_key_bits(key: &KeyPair) -> &[u8] {
    key.der_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PrivateKeyInfo.version` is the first INTEGER: 0 for v1, 1 for v2.
    fn pkcs8_version(pem_text: &str) -> u8 {
        let der = pem::parse(pem_text).unwrap().into_contents();
        let start = if der[1] & 0x80 != 0 {
            2 + (der[1] & 0x7f) as usize
        } else {
            2
        };
        assert_eq!(&der[start..start + 2], [0x02, 0x01], "version INTEGER");
        der[start + 2]
    }

    #[test]
    fn every_key_type_is_written_as_pkcs8_v1_and_round_trips() {
        for kt in [
            KeyType::Ed25519,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa2048,
        ] {
            let key = kt.generate().unwrap();
            let pem_text = to_pkcs8_pem(&key);
            assert!(
                pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{kt:?}"
            );
            assert_eq!(pkcs8_version(&pem_text), 0, "{kt:?}");
            let back = parse_private_key(&pem_text).unwrap();
            assert_eq!(public_key_bits(&back), public_key_bits(&key), "{kt:?}");
        }
    }

    #[test]
    fn pkcs8_v2_ed25519_still_loads() {
        let key = KeyType::Ed25519.generate().unwrap();
        let v2 = super::super::pem_block(PKCS8_LABEL, key.serialized_der());
        assert_eq!(pkcs8_version(&v2), 1);
        let back = parse_private_key(&v2).unwrap();
        assert_eq!(public_key_bits(&back), public_key_bits(&key));
        assert_eq!(to_pkcs8_pem(&back), to_pkcs8_pem(&key));
    }

    #[test]
    fn refuses_non_keys() {
        assert!(parse_private_key("garbage").is_err());
        let cert = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(parse_private_key(&cert).is_err());
        let junk = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert!(parse_private_key(&junk).is_err());
    }
}
