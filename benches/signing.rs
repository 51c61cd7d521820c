//! The crypto bound of one core: CSR parse + signature check, leaf build + sign, PEM encoding, and
//! the whole request pipeline without the network (CSR → key → leaf → PEM chain → protobuf
//! answer). `1 / pipeline time` is the most one core can sign; docs/PERFORMANCE.md compares the
//! served rate against it. Run: `taskset -c 1 cargo bench --bench signing`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use sentry_core::bundle::{self, KeyType};
use sentry_core::ca::{parse_csr, Signer};
use sentry_core::spiffe::{SpiffeId, TrustDomain};
use sentry_proto::SignCertificateResponse;
use time::OffsetDateTime;

const TTL: Duration = Duration::from_secs(24 * 3600);
const SKEW: Duration = Duration::from_secs(15 * 60);

fn signer() -> Signer {
    let td = TrustDomain::parse("localhost").expect("trust domain");
    let params = bundle::CaParams::new(td, "default", KeyType::Ed25519, SKEW);
    let generated = bundle::generate(&params, OffsetDateTime::now_utc()).expect("bundle");
    Signer::new(generated.bundle).expect("signer")
}

fn csr(key: KeyType) -> Vec<u8> {
    sentry_client::new_csr(key).expect("csr").1.into_bytes()
}

/// What the gRPC handler does for one request once the validator has approved it.
fn pipeline(signer: &Signer, csr: &[u8]) -> Vec<u8> {
    let key = parse_csr(csr).expect("csr");
    let id = SpiffeId::new(TrustDomain::public(), "default", "myapp").expect("id");
    let issued = signer
        .sign(&key, &id, &[], TTL, SKEW, OffsetDateTime::now_utc())
        .expect("sign");
    SignCertificateResponse {
        workload_certificate: issued.chain_pem.into_bytes(),
        trust_chain_certificates: vec![signer.bundle().anchors_pem.clone().into_bytes()],
        valid_until: Some(prost_types::Timestamp {
            seconds: issued.not_after.unix_timestamp(),
            nanos: 0,
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn benches(c: &mut Criterion) {
    let signer = signer();
    let id = SpiffeId::new(TrustDomain::public(), "default", "myapp").expect("id");
    for (name, key) in [("ed25519", KeyType::Ed25519), ("p256", KeyType::EcdsaP256)] {
        let csr = csr(key);
        let requester = parse_csr(&csr).expect("csr");
        let mut g = c.benchmark_group(format!("csr-{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("parse+verify", |b| b.iter(|| parse_csr(black_box(&csr))));
        g.bench_function("leaf build+sign", |b| {
            b.iter(|| {
                signer.sign(
                    black_box(&requester),
                    &id,
                    &[],
                    TTL,
                    SKEW,
                    OffsetDateTime::now_utc(),
                )
            })
        });
        g.bench_function("pipeline", |b| {
            b.iter(|| pipeline(&signer, black_box(&csr)))
        });
        g.finish();
    }
    let leaf = signer
        .sign(
            &parse_csr(&csr(KeyType::Ed25519)).expect("csr"),
            &id,
            &[],
            TTL,
            SKEW,
            OffsetDateTime::now_utc(),
        )
        .expect("sign")
        .leaf_der;
    c.bench_function("pem encode leaf", |b| {
        b.iter(|| bundle::pem_block("CERTIFICATE", black_box(&leaf)))
    });
}

criterion_group!(signing, benches);
criterion_main!(signing);
