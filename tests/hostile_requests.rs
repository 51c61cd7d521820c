//! Hostile requests over real TLS: oversize messages, CSRs that are not what they claim, CSRs that
//! ask for more than a workload may have, weak and unsupported keys, bytes that are not UTF-8,
//! control characters, absurd sizes and unknown validators. Each gets a clean gRPC status (or,
//! where Dapr's contract accepts the request, a certificate with nothing but the validated
//! identity); the next good request on the same connection succeeds; at the end the metrics count
//! exactly the good requests and the credentials directory is untouched.

mod common;

use common::*;
use prost::Message;
use sentry_core::bundle::KeyType;
use sentry_proto::{SignCertificateRequest, SignCertificateResponse};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};

/// gRPC's default maximum message size, which Sentry keeps.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// `SignCertificateRequest` with every string field as raw bytes, to send what prost's typed
/// encoder never would (invalid UTF-8).
#[derive(Clone, PartialEq, prost::Message)]
struct RawRequest {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    token: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    trust_domain: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    namespace: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    certificate_signing_request: Vec<u8>,
}

/// A message whose field 6 (`token_validator`, an enum) arrives with the wrong wire type.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(bytes = "vec", tag = "6")]
    token_validator: Vec<u8>,
}

enum Payload {
    Typed(SignCertificateRequest),
    Raw(Vec<u8>),
}

enum Expect {
    /// Refused by the handler with this code and message.
    Refused(Code, &'static str),
    /// Refused before the handler runs (decoding, size limit).
    RefusedEarly(&'static [Code], &'static str),
    /// Issued, with exactly this URI SAN and nothing the CSR asked for.
    Issued(&'static str),
}

struct Case {
    name: &'static str,
    payload: Payload,
    expect: Expect,
}

fn good() -> SignCertificateRequest {
    request("myapp", "default", KeyType::Ed25519)
}

fn with(f: impl FnOnce(&mut SignCertificateRequest)) -> Payload {
    let mut r = good();
    f(&mut r);
    Payload::Typed(r)
}

fn raw(f: impl FnOnce(&mut RawRequest)) -> Payload {
    let g = good();
    let mut r = RawRequest {
        id: g.id.into_bytes(),
        token: Vec::new(),
        trust_domain: Vec::new(),
        namespace: g.namespace.into_bytes(),
        certificate_signing_request: g.certificate_signing_request,
    };
    f(&mut r);
    Payload::Raw(r.encode_to_vec())
}

fn csr_der(pem_bytes: &[u8]) -> Vec<u8> {
    pem::parse(pem_bytes).unwrap().into_contents()
}

fn csr_pem(der: &[u8]) -> Vec<u8> {
    sentry_core::bundle::pem_block("CERTIFICATE REQUEST", der).into_bytes()
}

/// A CSR carrying key A's public key but signed by key B.
fn mismatched_signature_csr() -> Vec<u8> {
    let (_, a) = sentry_client::new_csr(KeyType::Ed25519).unwrap();
    let (_, b) = sentry_client::new_csr(KeyType::Ed25519).unwrap();
    let spki = |der: &[u8]| {
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap();
        csr.certification_request_info.subject_pki.raw.to_vec()
    };
    use x509_parser::prelude::FromDer;
    let (a_der, mut b_der) = (csr_der(a.as_bytes()), csr_der(b.as_bytes()));
    let (a_spki, b_spki) = (spki(&a_der), spki(&b_der));
    assert_eq!(a_spki.len(), b_spki.len());
    let at = b_der
        .windows(b_spki.len())
        .position(|w| w == b_spki.as_slice())
        .unwrap();
    b_der[at..at + a_spki.len()].copy_from_slice(&a_spki);
    csr_pem(&b_der)
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A hand-made CSR whose key algorithm is `alg` (an AlgorithmIdentifier's contents).
fn csr_with_algorithm(alg: &[u8]) -> Vec<u8> {
    let spki = der(0x30, &[der(0x30, alg), der(0x03, &[0, 1, 2, 3])].concat());
    let info = der(
        0x30,
        &[der(0x02, &[0]), der(0x30, &[]), spki, der(0xa0, &[])].concat(),
    );
    let ed25519 = der(0x30, &der(0x06, &[0x2b, 0x65, 0x70]));
    csr_pem(&der(0x30, &[info, ed25519, der(0x03, &[0; 65])].concat()))
}

/// An OID of about `n` arcs: 1.2.1.1.1…
fn huge_oid(n: usize) -> Vec<u8> {
    der(0x06, &[[0x2a].as_slice(), &vec![0x01; n]].concat())
}

const ED25519: &str = "openssl genpkey -algorithm ed25519 -out k.pem";

fn cases(anchors: &[u8]) -> Vec<Case> {
    use Expect::*;
    let mut v = Vec::new();
    let mut case = |name, payload, expect| {
        v.push(Case {
            name,
            payload,
            expect,
        })
    };

    // Size limits.
    case(
        "request beyond the 4 MiB message limit",
        with(|r| r.certificate_signing_request = vec![b'A'; MAX_MESSAGE + 1024]),
        RefusedEarly(&[Code::ResourceExhausted], "message length too large"),
    );
    case(
        "token just under the message limit (insecure ignores tokens)",
        with(|r| r.token = "t".repeat(MAX_MESSAGE - 8 * 1024)),
        Issued("spiffe://public/ns/default/myapp"),
    );
    case(
        "id just under the message limit",
        with(|r| r.id = "i".repeat(MAX_MESSAGE - 8 * 1024)),
        Refused(
            Code::PermissionDenied,
            "app ID must be 64 characters or less",
        ),
    );
    case(
        "namespace just under the message limit",
        with(|r| r.namespace = "n".repeat(MAX_MESSAGE - 8 * 1024)),
        Refused(Code::InvalidArgument, "SPIFFE ID is longer than 2048 bytes"),
    );
    case(
        "trust domain just under the message limit",
        with(|r| r.trust_domain = "t".repeat(MAX_MESSAGE - 8 * 1024)),
        Refused(Code::PermissionDenied, "trust domain is too long"),
    );
    case(
        "65-byte id",
        with(|r| r.id = "a".repeat(65)),
        Refused(
            Code::PermissionDenied,
            "app ID must be 64 characters or less",
        ),
    );
    case(
        "3 MiB of base64 in a CSR PEM block",
        with(|r| {
            let mut pem_text = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
            for _ in 0..(3 * 1024 * 1024 / 65) {
                pem_text.extend_from_slice(&[b'A'; 64]);
                pem_text.push(b'\n');
            }
            pem_text.extend_from_slice(b"-----END CERTIFICATE REQUEST-----\n");
            r.certificate_signing_request = pem_text;
        }),
        Refused(
            Code::InvalidArgument,
            "certificate signing request of 3145745 bytes is too large (at most 8192 bytes",
        ),
    );

    // CSRs that are not what they claim to be.
    case(
        "CSR that is someone else's certificate (the trust anchor)",
        with(|r| r.certificate_signing_request = anchors.to_vec()),
        Refused(
            Code::InvalidArgument,
            "failed to parse certificate signing request",
        ),
    );
    case(
        "CSR whose signature does not match its key",
        with(|r| r.certificate_signing_request = mismatched_signature_csr()),
        Refused(Code::InvalidArgument, "invalid signature"),
    );
    case(
        "CSR with trailing bytes after the DER",
        with(|r| {
            let mut der = csr_der(&r.certificate_signing_request);
            der.push(0);
            r.certificate_signing_request = csr_pem(&der);
        }),
        Refused(
            Code::InvalidArgument,
            "failed to parse certificate signing request",
        ),
    );

    // CSRs asking for more than a workload certificate.
    case(
        "CSR requesting CA:true, extra URI/DNS/IP/email SANs, name constraints, key usages, a subject",
        with(|r| {
            r.certificate_signing_request = openssl_csr(
                ED25519,
                "-subj '/CN=admin/O=system:masters' \
                 -addext 'basicConstraints=critical,CA:TRUE,pathlen:3' \
                 -addext 'subjectAltName=URI:spiffe://public/ns/kube-system/admin,DNS:evil.example,DNS:*.svc,IP:127.0.0.1,email:a@example.org' \
                 -addext 'nameConstraints=critical,permitted;DNS:evil.example' \
                 -addext 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature' \
                 -addext 'extendedKeyUsage=codeSigning,OCSPSigning'",
            )
        }),
        Issued("spiffe://public/ns/default/myapp"),
    );

    case(
        "CSR whose key algorithm is a 4 000-arc OID",
        with(|r| r.certificate_signing_request = csr_with_algorithm(&huge_oid(4_000))),
        Refused(Code::InvalidArgument, "unsupported public key"),
    );
    case(
        "EC key whose curve is a 4 000-arc OID",
        with(|r| {
            let ec_public_key = der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
            r.certificate_signing_request =
                csr_with_algorithm(&[ec_public_key, huge_oid(4_000)].concat())
        }),
        Refused(Code::InvalidArgument, "elliptic curve"),
    );

    // Unsupported and weak keys.
    for (name, make_key, msg) in [
        (
            "RSA-1024 key",
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out k.pem",
            "RSA key of 1024 bits",
        ),
        (
            "P-521 key",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out k.pem",
            "elliptic curve",
        ),
        (
            "secp256k1 key",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 -out k.pem",
            "elliptic curve",
        ),
        (
            "P-256 key with explicit curve parameters",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:explicit -out k.pem",
            "without a named curve",
        ),
        (
            "DSA key",
            "openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:1024 -out p.pem; openssl genpkey -paramfile p.pem -out k.pem",
            "unsupported public key",
        ),
        (
            "Ed448 key",
            "openssl genpkey -algorithm ed448 -out k.pem",
            "unsupported public key",
        ),
        (
            "RSA-PSS key",
            "openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:2048 -out k.pem",
            "unsupported public key",
        ),
    ] {
        let csr = openssl_csr(make_key, "-subj /");
        case(
            name,
            with(|r| r.certificate_signing_request = csr),
            Refused(Code::InvalidArgument, msg),
        );
    }

    // Unknown validator numbers.
    for n in [-1, 4, 99, i32::MAX, i32::MIN] {
        case(
            "unknown validator number",
            with(|r| r.token_validator = n),
            Refused(
                Code::InvalidArgument,
                "the requested validator is not enabled",
            ),
        );
    }

    // Control characters (valid UTF-8).
    case(
        "NUL and BEL in the id",
        with(|r| r.id = "my\u{0}app\u{7}".into()),
        Refused(Code::InvalidArgument, "path segment characters are limited"),
    );
    case(
        "newline in the namespace (log forging)",
        with(|r| r.namespace = "default\nINFO forged line".into()),
        Refused(Code::InvalidArgument, "path segment characters are limited"),
    );
    case(
        "DEL in the trust domain",
        with(|r| r.trust_domain = "example.org\u{7f}".into()),
        Refused(
            Code::PermissionDenied,
            "trust domain characters are limited",
        ),
    );
    case(
        "dot-dot-slash path in the id",
        with(|r| r.id = "../../admin".into()),
        Refused(
            Code::PermissionDenied,
            "parameter app-id cannot contain dots",
        ),
    );
    case(
        "slashes in the id",
        with(|r| r.id = "a/b/admin".into()),
        Refused(Code::InvalidArgument, "path segment characters are limited"),
    );
    case(
        "right-to-left override in the id",
        with(|r| r.id = "app\u{202e}nimda".into()),
        Refused(Code::InvalidArgument, "path segment characters are limited"),
    );

    // Bytes that are not UTF-8, and malformed protobuf: refused while decoding.
    for (name, payload) in [
        (
            "invalid UTF-8 in the id",
            raw(|r| r.id = vec![b'a', 0xff, 0xfe]),
        ),
        (
            "invalid UTF-8 in the token",
            raw(|r| r.token = vec![0xc3, 0x28]),
        ),
        (
            "invalid UTF-8 in the trust domain",
            raw(|r| r.trust_domain = vec![0xed, 0xa0, 0x80]),
        ),
        (
            "invalid UTF-8 in the namespace",
            raw(|r| r.namespace = vec![0x80]),
        ),
        (
            "token_validator with the wrong wire type",
            Payload::Raw(
                WrongWireType {
                    token_validator: vec![1, 2, 3],
                }
                .encode_to_vec(),
            ),
        ),
        ("truncated protobuf", Payload::Raw(vec![0x0a, 0x7f, b'a'])),
    ] {
        case(
            name,
            payload,
            RefusedEarly(&[Code::Internal], "failed to decode Protobuf message"),
        );
    }
    v
}

/// Sends already-encoded protobuf bytes as a `SignCertificate` request.
async fn call_raw(channel: Channel, body: Vec<u8>) -> Result<SignCertificateResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static("/dapr.proto.sentry.v1.CA/SignCertificate");
    let codec = tonic_prost::ProstCodec::<RawBytes, SignCertificateResponse>::default();
    grpc.unary(tonic::Request::new(RawBytes(body)), path, codec)
        .await
        .map(|r| r.into_inner())
}

/// A "message" whose wire encoding is the given bytes, verbatim.
#[derive(Debug, Clone, Default, PartialEq)]
struct RawBytes(Vec<u8>);

impl Message for RawBytes {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever encoded; decoding skips everything.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The leaf carries exactly `uri`, is not a CA, and has only the workload profile's extensions;
/// it is signed by the issuer that follows it.
fn assert_clean_leaf(resp: &SignCertificateResponse, uri: &str, name: &str) {
    let chain = pem_certs(&resp.workload_certificate);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    leaf.verify_signature(Some(issuer.public_key()))
        .unwrap_or_else(|e| panic!("{name}: leaf not signed by issuer: {e}"));
    assert!(!leaf.is_ca(), "{name}");
    assert!(leaf.basic_constraints().unwrap().is_none(), "{name}");
    assert_eq!(leaf.subject().iter().count(), 0, "{name}: subject");
    let allowed = [
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_EXTENDED_KEY_USAGE,
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
    ];
    for ext in leaf.extensions() {
        assert!(allowed.contains(&ext.oid), "{name}: extension {}", ext.oid);
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                assert_eq!(san.general_names, [GeneralName::URI(uri)], "{name}");
            }
            ParsedExtension::KeyUsage(ku) => {
                assert!(ku.digital_signature(), "{name}");
                assert!(!ku.key_cert_sign() && !ku.crl_sign(), "{name}");
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.server_auth && eku.client_auth, "{name}");
                assert!(!eku.code_signing && !eku.ocsp_signing, "{name}");
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clean_statuses_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let creds_before = snapshot(&s.creds());
    let channel = channel(&s).await;
    let mut client = sentry_proto::ca_client::CaClient::new(channel.clone());
    let (mut issued, mut handled) = (0u64, 0u64);
    for case in cases(&s.anchors()) {
        let name = case.name;
        let result = match case.payload {
            Payload::Typed(req) => client.sign_certificate(req).await.map(|r| r.into_inner()),
            Payload::Raw(bytes) => call_raw(channel.clone(), bytes).await,
        };
        if let Err(status) = &result {
            assert!(
                status.message().len() < 1024,
                "{name}: status message of {} bytes",
                status.message().len()
            );
        }
        match case.expect {
            Expect::Refused(code, msg) => {
                let err = result.expect_err(name);
                assert_eq!(err.code(), code, "{name}: {err:?}");
                assert!(err.message().contains(msg), "{name}: {:?}", err.message());
                handled += 1;
            }
            Expect::RefusedEarly(codes, msg) => {
                let err = result.expect_err(name);
                assert!(codes.contains(&err.code()), "{name}: {err:?}");
                assert!(err.message().contains(msg), "{name}: {:?}", err.message());
            }
            Expect::Issued(uri) => {
                let resp = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert_clean_leaf(&resp, uri, name);
                issued += 1;
                handled += 1;
            }
        }
        // The next good request on the same connection succeeds.
        let resp = client
            .sign_certificate(good())
            .await
            .unwrap_or_else(|e| panic!("good request after {name}: {e:?}"))
            .into_inner();
        assert_clean_leaf(&resp, "spiffe://public/ns/default/myapp", name);
        issued += 1;
        handled += 1;
    }
    let metrics = s.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_success_total"),
        issued,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_request_received_total"),
        handled,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_failure_total"),
        handled - issued,
        "{metrics}"
    );
    assert_eq!(snapshot(&s.creds()), creds_before, "credentials changed");
    assert_eq!(http_get(s.healthz, "/healthz").map(|(c, _)| c), Some(200));
    let log = s.log_text();
    assert!(!log.contains("\nINFO forged line"), "log line forged");
    assert!(
        log.lines().all(|l| l.len() < 4096),
        "a request string was logged unbounded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_audiences_cannot_inflate_the_response() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().arg("--jwt-enabled"));
    let mut client = sentry_proto::ca_client::CaClient::new(channel(&s).await);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "one audience just under the message limit",
            vec!["a".repeat(MAX_MESSAGE - 64 * 1024)],
            "JWT audience of",
        ),
        (
            "a million copies of one audience",
            vec!["a".to_owned(); 1_000_000],
            "too many JWT audiences",
        ),
        (
            "8 distinct audiences beside the trust domain",
            (0..8).map(|i| format!("aud-{i}")).collect(),
            "too many JWT audiences",
        ),
    ];
    let mut issued = 0;
    for (name, audiences, msg) in cases {
        let mut req = good();
        req.jwt_audiences = audiences;
        let err = client.sign_certificate(req).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(msg), "{name}: {:?}", err.message());
        let mut req = good();
        req.jwt_audiences = vec!["spiffe://public/ns/default/other".into()];
        let resp = client
            .sign_certificate(req)
            .await
            .unwrap_or_else(|e| panic!("good request after {name}: {e:?}"))
            .into_inner();
        assert!(resp.jwt.is_some(), "{name}: no JWT");
        assert_eq!(resp.per_audience_jwts.len(), 2, "{name}");
        issued += 1;
    }
    let metrics = s.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_success_total"),
        issued,
        "{metrics}"
    );
}
