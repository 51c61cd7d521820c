//! CSR parsing and verification (`sentry_core::ca::parse_csr`). The first byte picks the form: odd →
//! the rest is DER, wrapped in a `CERTIFICATE REQUEST` PEM block; even → the rest is sent as is.
//! A key that is accepted must also be signable (the CA never fails on an accepted CSR), and a
//! refusal's message stays short.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentry_core::ca::parse_csr;
use sentry_core::spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 1 {
        sentry_core::bundle::pem_block("CERTIFICATE REQUEST", rest).into_bytes()
    } else {
        rest.to_vec()
    };
    match parse_csr(&input) {
        Ok(key) => {
            let h = sentry_fuzz::harness();
            let id = SpiffeId::new(TrustDomain::public(), "default", "fuzz").expect("valid id");
            if let Err(e) = h.ca.sign(&key, &id, &[]) {
                panic!("accepted CSR key could not be signed: {e}");
            }
        }
        // The message is returned to the caller: its size must not be the caller's choice.
        Err(e) => assert!(
            e.to_string().len() < 1024,
            "error message of {} bytes",
            e.to_string().len()
        ),
    }
});
