//! Shared pieces of the fuzz targets: the fixed clock, a CA to sign with, how one fuzz input is
//! split into several byte strings, and the seed inputs each target starts from.
//!
//! Owns nothing of Sentry itself: every target drives the library's public entry points.

use std::sync::OnceLock;
use std::time::Duration;

use prost::Message;
use sentry_core::bundle::jwt::{generate_jwt, JwtKeySettings};
use sentry_core::bundle::{self, Bundle, CaParams, KeyType};
use sentry_core::ca::jwt::{JwtIssuer, JwtSettings};
use sentry_core::ca::{Lifetimes, Signer};
use sentry_runtime::authority::Ca;
use sentry_runtime::validator::ValidatorSet;
use sentry_core::jose::Algorithm;
use sentry_proto::SignCertificateRequest;
use sentry_runtime::server::grpc::ControlPlane;
use sentry_core::spiffe::TrustDomain;
use sentry_runtime::validator::jwks::KeySet;
use sentry_runtime::validator::{ValidatorKind, Validators};
use time::OffsetDateTime;

/// Separator between the parts of a multi-part input (bundle: anchors, chain, key).
pub const SEPARATOR: &[u8] = b"\n--8<--\n";

/// The fixed "now" of the bundle target, so that a finding replays the same way on any day.
pub fn fixed_now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Splits `data` into exactly `N` parts at [`SEPARATOR`] (missing parts are empty; the last
/// part keeps any further separators).
pub fn split<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut parts = [&data[..0]; N];
    let mut rest = data;
    for (i, part) in parts.iter_mut().enumerate() {
        if i + 1 == N {
            *part = rest;
            break;
        }
        match find(rest, SEPARATOR) {
            Some(at) => {
                *part = &rest[..at];
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => {
                *part = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Everything the request path needs, built once per fuzzing process.
pub struct Harness {
    /// The CA (Ed25519 issuer, 24 h TTL).
    pub ca: Ca,
    /// Validators as in standalone mode (insecure, default).
    pub validators: Validators,
    /// Sentry's namespace and cluster domain.
    pub control_plane: ControlPlane,
    /// JWT-SVID issuer (ES256), as with `--jwt-enabled`.
    pub jwt: JwtIssuer,
    /// The issuer's public keys, as the `jwks` validator would load them.
    pub jwks: KeySet,
    /// The same keys as JWKS JSON.
    pub jwt_jwks_json: String,
    /// A current-thread runtime to drive the async handler.
    pub runtime: tokio::runtime::Runtime,
}

/// The process-wide harness.
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let bundle = generated_bundle(OffsetDateTime::now_utc());
        let signer = Signer::new(bundle).expect("fixture: signer");
        let jwt_bundle = generate_jwt(&JwtKeySettings {
            algorithm: Algorithm::ES256,
            key_id: None,
        })
        .expect("fixture: JWT key");
        Harness {
            ca: Ca::new(
                signer,
                Lifetimes {
                    ttl: Duration::from_secs(24 * 3600),
                    allowed_clock_skew: Duration::from_secs(15 * 60),
                },
            ),
            validators: Validators::new(
                ValidatorSet {
                    enabled: vec![ValidatorKind::Insecure],
                    default: Some(ValidatorKind::Insecure),
                    jwks: None,
                },
                None,
            ),
            control_plane: ControlPlane {
                namespace: "dapr-system".into(),
                cluster_domain: "cluster.local".into(),
            },
            jwks: KeySet::from_json(jwt_bundle.jwks_json.as_bytes()).expect("fixture: JWKS"),
            jwt_jwks_json: jwt_bundle.jwks_json.clone(),
            jwt: JwtIssuer::new(
                &jwt_bundle,
                JwtSettings {
                    issuer: None,
                    ttl: Duration::from_secs(3600),
                    allowed_clock_skew: Duration::from_secs(15 * 60),
                },
            ),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("fixture: runtime"),
        }
    })
}

/// A freshly generated Ed25519 bundle valid at `now`.
pub fn generated_bundle(now: OffsetDateTime) -> Bundle {
    let params = CaParams::new(
        TrustDomain::public(),
        "default",
        KeyType::Ed25519,
        Duration::from_secs(60),
    );
    bundle::generate(&params, now)
        .expect("fixture: bundle")
        .bundle
}

/// Seed inputs for the `csr` target: PEM CSRs of every accepted key type, and their DER.
pub fn csr_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for kt in [
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
    ] {
        let (_, pem_text) = sentry_client::new_csr(kt).expect("seed: csr");
        let der = pem::parse(&pem_text).expect("seed: pem").into_contents();
        let mut wrapped = vec![1u8];
        wrapped.extend_from_slice(&der);
        let mut plain = vec![0u8];
        plain.extend_from_slice(pem_text.as_bytes());
        seeds.push(plain);
        seeds.push(wrapped);
    }
    seeds
}

/// Seed inputs for the `bundle` target: a valid bundle at [`fixed_now`], with and without a
/// trailing root in the chain.
pub fn bundle_seeds() -> Vec<Vec<u8>> {
    let b = generated_bundle(fixed_now());
    let join = |chain: &str| {
        [
            b.anchors_pem.as_bytes(),
            chain.as_bytes(),
            b.issuer_key_pem.as_bytes(),
        ]
        .join(SEPARATOR)
    };
    vec![
        join(&b.issuer_chain_pem),
        join(&format!("{}{}", b.issuer_chain_pem, b.anchors_pem)),
    ]
}

/// Seed inputs for the `sign_request` target: encoded requests as daprd and the control plane
/// send them.
pub fn request_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let cases = [
        ("myapp", "default", "", KeyType::Ed25519, 0),
        ("dapr-scheduler", "dapr-system", "", KeyType::EcdsaP256, 1),
        (
            "dapr-injector",
            "dapr-system",
            "localhost",
            KeyType::Rsa2048,
            0,
        ),
        ("app_1", "ns-2", "example.org", KeyType::EcdsaP384, 1),
    ];
    for (id, namespace, td, kt, validator) in cases {
        let (_, csr) = sentry_client::new_csr(kt).expect("seed: csr");
        let req = SignCertificateRequest {
            id: id.into(),
            namespace: namespace.into(),
            trust_domain: td.into(),
            token: "a-token".into(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: validator,
            jwt_audiences: vec!["aud".into()],
        };
        seeds.push(req.encode_to_vec());
    }
    seeds
}

/// Seed inputs for the `k8s_token` target: a bare JSON claims object (as Dapr's tests send) and
/// a JWS compact token shaped like a bound service-account token.
pub fn token_seeds() -> Vec<Vec<u8>> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = r#"{"aud":["spiffe://localhost/ns/default/dapr-sentry"],"exp":1800003600,"iat":1800000000,"iss":"https://kubernetes.default.svc","kubernetes.io":{"namespace":"default","pod":{"name":"myapp-7d9f","uid":"0b5e8c3a-1f2d-4c6b-9a7e-3d2c1b0a9f8e"},"serviceaccount":{"name":"default","uid":"5f1e"}},"nbf":1800000000,"sub":"system:serviceaccount:default:default"}"#;
    vec![
        br#"{"kubernetes.io":{"pod":{"name":"mypod"}}}"#.to_vec(),
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(claims)
        )
        .into_bytes(),
    ]
}

/// The audience a `jwks` token must carry (Sentry's SPIFFE ID) and the subject the fuzz tokens
/// are checked against.
pub const JWKS_AUDIENCE: &str = "spiffe://localhost/ns/default/dapr-sentry";
/// See [`JWKS_AUDIENCE`].
pub const JWKS_SUBJECT: &str = "spiffe://public/ns/default/myapp";

/// Seed inputs for the `jwks_token` target: a token the harness issued (valid for the harness's
/// keys), alone (mode 0) and with its JWKS (mode 1).
pub fn jwks_seeds() -> Vec<Vec<u8>> {
    let h = harness();
    let id =
        sentry_core::spiffe::SpiffeId::new(TrustDomain::public(), "default", "myapp").expect("seed: id");
    let svids = h
        .jwt
        .issue(&id, &[JWKS_AUDIENCE.to_owned()], OffsetDateTime::now_utc())
        .expect("seed: JWT");
    let mut alone = vec![0u8];
    alone.extend_from_slice(svids.jwt.as_bytes());
    let jwks = h.jwt_jwks_json.as_bytes();
    let mut with_keys = vec![1u8];
    with_keys.extend_from_slice(&[jwks, svids.jwt.as_bytes()].join(SEPARATOR));
    vec![alone, with_keys]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pads_and_keeps_rest() {
        let data = [b"a".as_slice(), b"b", b"c", b"d"].join(SEPARATOR);
        let [a, b, c] = split::<3>(&data);
        assert_eq!((a, b), (&b"a"[..], &b"b"[..]));
        assert_eq!(c, [b"c".as_slice(), b"d"].join(SEPARATOR).as_slice());
        let [x, y, z] = split::<3>(b"only");
        assert_eq!((x, y, z), (&b"only"[..], &b""[..], &b""[..]));
    }
}
