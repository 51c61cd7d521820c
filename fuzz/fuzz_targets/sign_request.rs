//! The whole `SignCertificate` handling: fuzz bytes decoded as a protobuf request
//! (`prost::Message::decode`, as tonic does), then the server's own path
//! (`sentry_runtime::server::grpc::sign_certificate`: validator, CSR, identity, signing, JWT-SVIDs)
//! against a real CA. Every refusal must be the caller's fault (never `Internal`) with a short message, and every
//! certificate must carry exactly the validated identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sentry_proto::SignCertificateRequest;
use sentry_runtime::server::grpc::sign_certificate;
use sentry_core::spiffe::{SpiffeId, TrustDomain};
use x509_parser::extensions::GeneralName;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = SignCertificateRequest::decode(data) else {
        return;
    };
    let h = sentry_fuzz::harness();
    let trust_domain = if req.trust_domain.is_empty() {
        Ok(TrustDomain::public())
    } else {
        TrustDomain::parse(&req.trust_domain)
    };
    let expected = trust_domain
        .and_then(|td| SpiffeId::new(td, &req.namespace, &req.id))
        .map(|id| id.to_string());
    let result = h.runtime.block_on(sign_certificate(
        &h.ca,
        &h.validators,
        &h.control_plane,
        Some(&h.jwt),
        req,
    ));
    match result {
        Ok(resp) => {
            let pems = pem::parse_many(&resp.workload_certificate).expect("response PEM");
            let (_, leaf) =
                x509_parser::parse_x509_certificate(pems[0].contents()).expect("leaf parses");
            let sans = leaf
                .subject_alternative_name()
                .expect("SAN parses")
                .expect("SAN present");
            let uris: Vec<_> = sans
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect();
            let expected = expected.expect("a certificate was issued for an invalid identity");
            assert_eq!(uris, [expected.as_str()]);
            assert!(!leaf.is_ca());
        }
        Err(e) => {
            let status = tonic::Status::from(e);
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ),
                "unexpected status {status:?}"
            );
            // The message goes into a response header: its size is never the caller's choice.
            assert!(
                status.message().len() < 1024,
                "status message of {} bytes",
                status.message().len()
            );
        }
    }
});
