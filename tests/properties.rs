//! Property tests over the library: every issued leaf has exactly one URI SAN equal to the
//! validated identity, is never a CA, never outlives its issuer and chains to the anchors (random
//! ids, namespaces, trust domains, key types, TTLs, skews and issuer lifetimes); SPIFFE ID
//! construction accepts exactly the segments and trust domains the standard allows.

use std::time::Duration;

use proptest::prelude::*;
use rustls_pki_types::{CertificateDer, UnixTime};
use sentry_core::bundle::{self, CaParams, KeyType, ROOT_TTL};
use sentry_core::ca::{parse_csr, IssueError, Signer};
use sentry_core::spiffe::{SpiffeId, TrustDomain, MAX_ID_LEN};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

fn key_type() -> impl Strategy<Value = KeyType> {
    prop_oneof![
        Just(KeyType::Ed25519),
        Just(KeyType::EcdsaP256),
        Just(KeyType::EcdsaP384),
        Just(KeyType::Rsa2048),
    ]
}

/// A valid SPIFFE path segment (not `.` or `..`).
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,40}".prop_filter("dot segment", |s| s != "." && s != "..")
}

fn allowed_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn allowed_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

#[derive(Debug, Clone)]
struct Issue {
    trust_domain: String,
    namespace: String,
    app_id: String,
    csr_key: KeyType,
    issuer_key: KeyType,
    ttl_secs: u64,
    skew_secs: u64,
    /// Issuer lifetime (the root lives 365 days).
    issuer_lifetime_secs: u64,
}

fn issue() -> impl Strategy<Value = Issue> {
    (
        "[a-z0-9._-]{1,40}",
        segment(),
        segment(),
        key_type(),
        key_type(),
        1u64..=3 * 365 * 86_400,
        0u64..=3_600,
        120u64..=ROOT_TTL.as_secs(),
    )
        .prop_map(
            |(trust_domain, namespace, app_id, csr_key, issuer_key, ttl, skew, left)| Issue {
                trust_domain,
                namespace,
                app_id,
                csr_key,
                issuer_key,
                ttl_secs: ttl,
                skew_secs: skew,
                issuer_lifetime_secs: left,
            },
        )
}

fn check_issue(p: &Issue) -> Result<(), TestCaseError> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let td = TrustDomain::parse(&p.trust_domain).unwrap();
    let mut params = CaParams::new(td.clone(), "default", p.issuer_key, Duration::from_secs(60));
    params.issuer_ttl = Duration::from_secs(p.issuer_lifetime_secs);
    let bundle = bundle::generate(&params, now).unwrap().bundle;
    let anchors = bundle.anchors.clone();
    let issuer_der = bundle.issuer_chain[0].clone();
    let issuer_not_after = bundle.issuer_not_after;
    let signer = Signer::new(bundle).unwrap();

    let (_, csr) = sentry_client::new_csr(p.csr_key).unwrap();
    let key = parse_csr(csr.as_bytes()).unwrap();
    let id = SpiffeId::new(td, &p.namespace, &p.app_id).unwrap();
    let ttl = Duration::from_secs(p.ttl_secs);
    let skew = Duration::from_secs(p.skew_secs);
    let issued = signer.sign(&key, &id, &[], ttl, skew, now).unwrap();

    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.leaf_der).unwrap();
    // Exactly one URI SAN, equal to the identity; nothing else in the SAN.
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let expected = format!(
        "spiffe://{}/ns/{}/{}",
        p.trust_domain, p.namespace, p.app_id
    );
    prop_assert_eq!(&san.value.general_names, &vec![GeneralName::URI(&expected)]);
    prop_assert_eq!(id.to_string(), expected);
    // Never a CA.
    prop_assert!(!leaf.is_ca());
    prop_assert!(leaf.basic_constraints().unwrap().is_none());
    // Never outlives its issuer; otherwise exactly now + TTL; backdated by the skew.
    let not_after = leaf.validity().not_after.to_datetime();
    prop_assert!(not_after <= issuer_not_after);
    prop_assert_eq!(not_after, (now + ttl).min(issuer_not_after));
    prop_assert_eq!(issued.not_after, not_after);
    prop_assert_eq!(leaf.validity().not_before.to_datetime(), now - skew);
    // The requester's key, and a chain to the anchors (independent verifier: webpki).
    let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der).unwrap();
    prop_assert!(leaf.verify_signature(Some(issuer.public_key())).is_ok());
    let end_entity = webpki::EndEntityCert::try_from(&issued.leaf_der).unwrap();
    let trust: Vec<_> = anchors
        .iter()
        .map(|a| webpki::anchor_from_trusted_cert(a).unwrap())
        .collect();
    let at = UnixTime::since_unix_epoch(Duration::from_secs(now.unix_timestamp() as u64));
    let intermediates = [CertificateDer::from(issuer_der.to_vec())];
    let verified = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust,
        &intermediates,
        at,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    );
    prop_assert!(verified.is_ok(), "webpki: {:?}", verified.err());
    // Once the issuer has expired, nothing is signed.
    let later = issuer_not_after + Duration::from_secs(1);
    prop_assert!(matches!(
        signer.sign(&key, &id, &[], ttl, skew, later),
        Err(IssueError::IssuerExpired(_))
    ));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_issued_leaf_is_a_clean_svid_under_its_issuer(p in issue()) {
        check_issue(&p)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// A namespace or app id is accepted exactly when it is one non-empty segment of
    /// `[A-Za-z0-9._-]` other than `.` and `..` (so never `/`, never empty).
    #[test]
    fn segments_accepted_exactly_when_allowed(
        ns in prop_oneof![any::<String>(), "[A-Za-z0-9._/-]{0,12}", Just(".".to_owned()), Just("..".to_owned())],
        app in prop_oneof![any::<String>(), "[A-Za-z0-9._/-]{0,12}", Just(String::new())],
    ) {
        let result = SpiffeId::new(TrustDomain::public(), &ns, &app);
        prop_assert_eq!(result.is_ok(), allowed_segment(&ns) && allowed_segment(&app));
        if let Ok(id) = result {
            let text = id.to_string();
            let path = text.strip_prefix("spiffe://public/").unwrap();
            prop_assert_eq!(path.split('/').collect::<Vec<_>>(), vec!["ns", ns.as_str(), app.as_str()]);
        }
    }

    /// Paths built from several segments are never accepted as one segment.
    #[test]
    fn slashes_never_pass(parts in prop::collection::vec(segment(), 2..5)) {
        let joined = parts.join("/");
        prop_assert!(SpiffeId::new(TrustDomain::public(), &joined, "a").is_err());
        prop_assert!(SpiffeId::new(TrustDomain::public(), "ns", &joined).is_err());
    }

    /// A trust domain is accepted exactly when it is 1–255 bytes of `[a-z0-9._-]`; any upper-case
    /// letter is refused, bare or in the `spiffe://` form.
    #[test]
    fn trust_domains_accepted_exactly_when_allowed(
        td in prop_oneof![any::<String>(), "[A-Za-z0-9._-]{1,20}", "[a-z]{0,5}[A-Z][a-z]{0,5}"],
    ) {
        prop_assume!(!td.contains("://"));
        let bare = TrustDomain::parse(&td);
        prop_assert_eq!(bare.is_ok(), allowed_trust_domain(&td));
        if td.bytes().any(|b| b.is_ascii_uppercase()) {
            prop_assert!(bare.is_err());
            let prefixed = format!("spiffe://{td}");
            prop_assert!(TrustDomain::parse(&prefixed).is_err());
        }
        if let Ok(parsed) = bare {
            prop_assert_eq!(parsed.as_str(), td.as_str());
        }
    }

    /// No accepted identity is longer than the SPIFFE bound.
    #[test]
    fn ids_never_exceed_the_length_bound(ns_len in 1usize..3000, app_len in 1usize..100) {
        let ns = "n".repeat(ns_len);
        let app = "a".repeat(app_len);
        if let Ok(id) = SpiffeId::new(TrustDomain::public(), &ns, &app) {
            prop_assert!(id.to_string().len() <= MAX_ID_LEN);
        }
    }
}
