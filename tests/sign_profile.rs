//! A sidecar's first certificate over a real TLS socket: the server's SPIFFE identity, every field
//! of the workload profile, the chain, and independent verification by openssl and Go crypto/x509.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ::time::OffsetDateTime;
use common::*;
use sentry_core::bundle::KeyType;
use x509_parser::prelude::*;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

/// Checks the §4.1 leaf profile; returns the leaf's NotAfter.
fn assert_leaf_profile(
    leaf_der: &[u8],
    issuer_der: &[u8],
    id: &str,
    dns: &[&str],
) -> OffsetDateTime {
    let leaf = parse(leaf_der);
    let issuer = parse(issuer_der);
    assert_eq!(leaf.version(), X509Version::V3);
    assert!(
        leaf.subject().iter().next().is_none(),
        "subject must be empty"
    );
    assert_eq!(leaf.issuer().as_raw(), issuer.subject().as_raw());
    let serial = leaf.raw_serial();
    assert!(
        serial.len() <= 17 && !serial.is_empty() && serial[0] & 0x80 == 0,
        "positive ≤128-bit serial"
    );
    let mut seen = std::collections::BTreeSet::new();
    for ext in leaf.extensions() {
        assert!(
            seen.insert(ext.oid.to_id_string()),
            "duplicate extension {}",
            ext.oid
        );
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                assert!(ext.critical, "SAN must be critical with an empty subject");
                let uris: Vec<_> = san
                    .general_names
                    .iter()
                    .filter_map(|n| {
                        if let GeneralName::URI(u) = n {
                            Some(*u)
                        } else {
                            None
                        }
                    })
                    .collect();
                let names: Vec<_> = san
                    .general_names
                    .iter()
                    .filter_map(|n| {
                        if let GeneralName::DNSName(d) = n {
                            Some(*d)
                        } else {
                            None
                        }
                    })
                    .collect();
                assert_eq!(uris, [id]);
                assert_eq!(names, dns);
                assert_eq!(san.general_names.len(), 1 + dns.len());
            }
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical);
                assert!(ku.digital_signature());
                assert_eq!(ku.flags, 1, "digitalSignature only");
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(!ext.critical);
                assert!(eku.server_auth && eku.client_auth);
                assert!(
                    !eku.any
                        && !eku.code_signing
                        && !eku.email_protection
                        && !eku.time_stamping
                        && !eku.ocsp_signing
                        && eku.other.is_empty()
                );
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                let ski = issuer
                    .extensions()
                    .iter()
                    .find_map(|e| match e.parsed_extension() {
                        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                        _ => None,
                    });
                assert_eq!(aki.key_identifier.as_ref().map(|k| k.0.to_vec()), ski);
            }
            other => panic!("unexpected extension {}: {other:?}", ext.oid),
        }
    }
    for needed in ["2.5.29.17", "2.5.29.15", "2.5.29.37", "2.5.29.35"] {
        assert!(seen.contains(needed), "missing extension {needed}");
    }
    assert!(
        leaf.basic_constraints().unwrap().is_none(),
        "no basic constraints"
    );
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("signed by the issuer");
    leaf.validity().not_after.to_datetime()
}

#[tokio::test]
async fn first_certificate_has_the_dapr_profile_and_verifies_independently() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());

    // The server proves the SPIFFE identity clients authorise; any other ID is refused.
    let chain = server_chain(s.grpc).await;
    assert_eq!(
        x509_uris(&chain[0]),
        ["spiffe://localhost/ns/default/dapr-sentry"]
    );
    assert!(chain.len() == 2, "serving chain: leaf + issuer");
    assert!(s
        .client_for("spiffe://localhost/ns/default/someone-else")
        .await
        .is_err());

    let started = OffsetDateTime::now_utc();
    let resp = sign(&s, request("myapp", "default", KeyType::Ed25519))
        .await
        .unwrap();
    let certs = pem_certs(&resp.workload_certificate);
    assert_eq!(certs.len(), 2, "leaf + issuer, no root");
    let issuer_file = pem_certs(&std::fs::read(s.creds().join("issuer.crt")).unwrap());
    assert_eq!(certs[1], issuer_file[0]);
    assert_eq!(
        resp.trust_chain_certificates.len(),
        1,
        "one element with all anchors"
    );
    assert_eq!(resp.trust_chain_certificates[0], s.anchors());
    assert!(resp.jwt.is_none() && resp.per_audience_jwts.is_empty());

    let not_after = assert_leaf_profile(
        &certs[0],
        &certs[1],
        "spiffe://public/ns/default/myapp",
        &[],
    );
    assert_eq!(
        resp.valid_until.unwrap().seconds,
        not_after.unix_timestamp()
    );
    let leaf = parse(&certs[0]);
    let nb = leaf.validity().not_before.to_datetime();
    let ttl = not_after - started;
    assert!(
        (ttl - ::time::Duration::hours(24)).abs() < ::time::Duration::seconds(10),
        "ttl {ttl}"
    );
    let skew = started - nb;
    assert!(
        (skew - ::time::Duration::minutes(15)).abs() < ::time::Duration::seconds(10),
        "skew {skew}"
    );
    assert_eq!(
        leaf.signature_algorithm.algorithm.to_id_string(),
        "1.3.101.112",
        "Ed25519 issuer signs with Ed25519"
    );

    // Independent verifiers: openssl and Go's crypto/x509.
    let dir = tmp.path();
    std::fs::write(
        dir.join("leaf.pem"),
        sentry_core::bundle::pem_block("CERTIFICATE", &certs[0]),
    )
    .unwrap();
    std::fs::write(dir.join("chain.pem"), &resp.workload_certificate).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(s.creds().join("ca.crt"))
            .arg("-untrusted")
            .arg(s.creds().join("issuer.crt"))
            .arg(dir.join("leaf.pem")),
    );
    assert!(out.contains(": OK"), "{out}");
    let out = go_verify(
        &s.creds().join("ca.crt"),
        &dir.join("chain.pem"),
        "spiffe://public/ns/default/myapp",
    );
    assert!(
        out.starts_with("OK spiffe://public/ns/default/myapp Ed25519"),
        "{out}"
    );
    let err = go_verify_err(
        &s.creds().join("ca.crt"),
        &dir.join("chain.pem"),
        "spiffe://public/ns/default/other",
    );
    assert!(err.contains("URI SANs"), "{err}");
}

fn x509_uris(der: &[u8]) -> Vec<String> {
    sentry_client::uri_sans(der).unwrap()
}

fn go_verify_err(anchors: &Path, chain: &Path, id: &str) -> String {
    let out = Command::new(go_verifier())
        .arg(anchors)
        .arg(chain)
        .arg(id)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn every_accepted_key_type_is_certified_and_csr_contents_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    for kt in [
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
    ] {
        let resp = sign(&s, request("app", "ns1", kt)).await.unwrap();
        let certs = pem_certs(&resp.workload_certificate);
        assert_leaf_profile(&certs[0], &certs[1], "spiffe://public/ns/ns1/app", &[]);
    }
    // A CSR asking for CA:true, extra SANs and a subject gets none of them.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://public/ns/kube-system/admin".try_into().unwrap(),
    ));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let mut req = request("app", "ns1", KeyType::Ed25519);
    req.certificate_signing_request = csr.into_bytes();
    let resp = sign(&s, req).await.unwrap();
    let certs = pem_certs(&resp.workload_certificate);
    assert_leaf_profile(&certs[0], &certs[1], "spiffe://public/ns/ns1/app", &[]);
    assert!(parse(&certs[0]).subject().iter().next().is_none());
    // The requested trust domain is honoured by the insecure validator.
    let mut req = request("app", "ns1", KeyType::Ed25519);
    req.trust_domain = "example.org".into();
    let resp = sign(&s, req).await.unwrap();
    let certs = pem_certs(&resp.workload_certificate);
    assert_leaf_profile(&certs[0], &certs[1], "spiffe://example.org/ns/ns1/app", &[]);
}

#[tokio::test]
async fn control_plane_services_get_their_dns_names() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default()
            .env("NAMESPACE", "dapr-system")
            .arg("--trust-domain")
            .arg("cluster.local"),
    );
    let client_id = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";
    let tls = std::sync::Arc::new(sentry_client::tls_config(&s.anchors(), client_id).unwrap());
    let mut client = sentry_client::connect(s.grpc, tls).await.unwrap();
    let cases: [(&str, Vec<String>); 4] = [
        ("dapr-injector", vec!["dapr-sidecar-injector.dapr-system.svc".into()]),
        ("dapr-operator", vec!["dapr-webhook.dapr-system.svc".into()]),
        ("dapr-scheduler", (0..3).map(|i| format!("dapr-scheduler-server-{i}.dapr-scheduler-server.dapr-system.svc.cluster.local")).collect()),
        ("dapr-placement", vec![]),
    ];
    for (id, dns) in cases {
        let mut req = request(id, "dapr-system", KeyType::Rsa2048);
        req.trust_domain = "cluster.local".into();
        let resp = client.sign_certificate(req).await.unwrap().into_inner();
        let certs = pem_certs(&resp.workload_certificate);
        let dns_refs: Vec<&str> = dns.iter().map(String::as_str).collect();
        assert_leaf_profile(
            &certs[0],
            &certs[1],
            &format!("spiffe://cluster.local/ns/dapr-system/{id}"),
            &dns_refs,
        );
    }
    // Outside Sentry's namespace the same id gets no DNS names.
    let resp = client
        .sign_certificate(request("dapr-injector", "default", KeyType::Ed25519))
        .await
        .unwrap()
        .into_inner();
    let certs = pem_certs(&resp.workload_certificate);
    assert_leaf_profile(
        &certs[0],
        &certs[1],
        "spiffe://public/ns/default/dapr-injector",
        &[],
    );
    // The issuer generated in this namespace names it.
    let issuer = pem_certs(&std::fs::read(s.creds().join("issuer.crt")).unwrap());
    assert_eq!(
        parse(&issuer[0]).subject().to_string(),
        "O=spiffe://cluster.local/ns/dapr-system/dapr-sentry"
    );
}

#[tokio::test]
async fn config_file_sets_ttl_and_skew() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().env("SENTRY_TEST_TTL", "1h").config(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: ${SENTRY_TEST_TTL}\n    allowedClockSkew: 2m\n",
    ));
    let started = OffsetDateTime::now_utc();
    let resp = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
    let leaf_der = pem_certs(&resp.workload_certificate).remove(0);
    let leaf = parse(&leaf_der);
    let ttl = leaf.validity().not_after.to_datetime() - started;
    assert!(
        (ttl - ::time::Duration::hours(1)).abs() < ::time::Duration::seconds(10),
        "{ttl}"
    );
    let skew = started - leaf.validity().not_before.to_datetime();
    assert!(
        (skew - ::time::Duration::minutes(2)).abs() < ::time::Duration::seconds(10),
        "{skew}"
    );
}

#[tokio::test]
async fn leaf_never_outlives_its_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    // Root valid a year; issuer expiring in one hour.
    let now = OffsetDateTime::now_utc();
    let td = sentry_core::spiffe::TrustDomain::parse("localhost").unwrap();
    let root_key = KeyType::EcdsaP256.generate().unwrap();
    let root_params = sentry_core::profile::root_params(
        &td,
        now - Duration::from_secs(60),
        now + Duration::from_secs(365 * 86400),
    );
    let root = root_params.self_signed(&root_key).unwrap();
    let issuer_key = KeyType::EcdsaP256.generate().unwrap();
    let issuer = sentry_core::profile::issuer_params(
        &td,
        "default",
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )
    .signed_by(&issuer_key, &rcgen::Issuer::new(root_params, &root_key))
    .unwrap();
    let creds = tmp.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("ca.crt"), root.pem()).unwrap();
    std::fs::write(creds.join("issuer.crt"), issuer.pem()).unwrap();
    std::fs::write(creds.join("issuer.key"), issuer_key.serialize_pem()).unwrap();
    // Key files must not be readable by group or others (0600, as Sentry and Dapr write them).
    std::fs::set_permissions(
        creds.join("issuer.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().mtls("24h", "15m"));
    let resp = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
    let certs = pem_certs(&resp.workload_certificate);
    let issuer_na = parse(&certs[1]).validity().not_after.to_datetime();
    let leaf_na = parse(&certs[0]).validity().not_after.to_datetime();
    assert_eq!(
        leaf_na, issuer_na,
        "leaf NotAfter capped at issuer NotAfter"
    );
    assert_eq!(
        resp.valid_until.unwrap().seconds,
        issuer_na.unix_timestamp()
    );
    // The serving certificate is capped the same way.
    let chain = server_chain(s.grpc).await;
    assert!(parse(&chain[0]).validity().not_after.to_datetime() <= issuer_na);
}

#[tokio::test]
async fn serving_certificate_is_renewed_at_half_life_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().mtls("4s", "0s"));
    let first = server_chain(s.grpc).await;
    let first_leaf = parse(&first[0]);
    let life = first_leaf.validity().not_after.to_datetime()
        - first_leaf.validity().not_before.to_datetime();
    assert!(life <= ::time::Duration::seconds(4));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let second = server_chain(s.grpc).await;
    assert_ne!(
        first[0], second[0],
        "a new serving certificate after half its life"
    );
    assert_eq!(
        x509_uris(&second[0]),
        ["spiffe://localhost/ns/default/dapr-sentry"]
    );
    // Same process: requests keep working over a new connection.
    sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
    assert!(s
        .log_text()
        .contains("Renewed Sentry's serving certificate"));
}
