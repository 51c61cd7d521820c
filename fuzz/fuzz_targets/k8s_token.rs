//! Kubernetes service-account token claim parsing
//! (`sentry_runtime::validator::kubernetes::token::pod_claims`): JWS compact tokens and bare JSON claims,
//! read without verification after a TokenReview, and the token's remaining life. Any input gives
//! a claim, no claim, or an error with a short message; an accepted pod name is never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentry_runtime::validator::kubernetes::token::{pod_claims, remaining_life};

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let _ = remaining_life(&token);
    match pod_claims(&token) {
        Ok(Some(claims)) => {
            assert!(!claims.name.is_empty());
            assert!(claims.uid.as_deref() != Some(""));
        }
        Ok(None) => {}
        Err(e) => assert!(e.len() < 1024, "error message of {} bytes", e.len()),
    }
});
