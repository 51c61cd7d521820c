//! Bundle parsing and verification (`sentry_core::bundle::verify`) with three fuzzed inputs (anchors,
//! issuer chain, issuer key, split at `sentry_fuzz::SEPARATOR`) at a fixed time. A bundle that
//! verifies must also make a working signer, as it would at start-up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentry_core::ca::Signer;

fuzz_target!(|data: &[u8]| {
    let [anchors, chain, key] = sentry_fuzz::split::<3>(data);
    if let Ok(bundle) = sentry_core::bundle::verify(anchors, chain, key, sentry_fuzz::fixed_now()) {
        assert!(!bundle.anchors.is_empty() && !bundle.issuer_chain.is_empty());
        // Signer::new may refuse an unusual issuer, but must not panic.
        let _ = Signer::new(bundle);
    }
});
