//! Key material of the trust bundle: key algorithms for a generated CA, and private-key PEM
//! parsing (PKCS#8, SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`).

use clap::ValueEnum;
use rcgen::{KeyPair, PublicKeyData};

/// Key algorithm of a generated root and issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyType {
    /// Ed25519 (Dapr ≥ 1.18 default).
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256 (Dapr ≤ 1.17).
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    /// RSA 2048-bit, PKCS#1 v1.5 with SHA-256.
    #[value(name = "rsa-2048")]
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
pub const PKCS8_LABEL: &str = "PRIVATE KEY";

/// Parses the private key (PKCS#8, SEC1 or PKCS#1) that is the one PEM block of `pem_text`.
pub fn parse_private_key(pem_text: &str) -> Result<KeyPair, String> {
    let block = super::encoding::pem_single(pem_text.as_bytes())?;
    if !block.tag().ends_with("PRIVATE KEY") {
        return Err("no PRIVATE KEY PEM block found".to_owned());
    }
    if block.tag().contains("ENCRYPTED") {
        return Err("encrypted private keys are not supported".to_owned());
    }
    KeyPair::try_from(block.contents())
        .map_err(|_| format!("unsupported or malformed private key ({})", block.tag()))
}

/// PKCS#8 PEM of a key pair (what Sentry writes for keys it generates).
pub fn to_pkcs8_pem(key: &KeyPair) -> String {
    super::pem_block(PKCS8_LABEL, key.serialized_der())
}

/// The raw public key bytes (the SubjectPublicKeyInfo bit string) of a key pair.
pub fn public_key_bits(key: &KeyPair) -> &[u8] {
    key.der_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_round_trips_through_pem() {
        for kt in [
            KeyType::Ed25519,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa2048,
        ] {
            let key = kt.generate().unwrap();
            let pem_text = to_pkcs8_pem(&key);
            let back = parse_private_key(&pem_text).unwrap();
            assert_eq!(public_key_bits(&back), public_key_bits(&key), "{kt:?}");
        }
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
