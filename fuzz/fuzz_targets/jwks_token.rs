//! The `jwks` validator's token check (`sentry_runtime::validator::jwks::verify_token`), which reads
//! tokens from anyone before any signature is known good. First byte even: the rest is a token
//! checked against the harness's keys; odd: the rest is a JWKS and a token (split at
//! `sentry_fuzz::SEPARATOR`), the JWKS parsed by `KeySet::from_json`. Nothing panics, and
//! refusals carry short messages (they become the status and a log line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentry_runtime::validator::jwks::{verify_token, KeySet};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let h = sentry_fuzz::harness();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let check = |token: &[u8], keys: &KeySet| {
        let token = String::from_utf8_lossy(token);
        let result = verify_token(
            &token,
            keys,
            sentry_fuzz::JWKS_AUDIENCE,
            sentry_fuzz::JWKS_SUBJECT,
            now,
        );
        if let Err(e) = result {
            let msg = e.to_string();
            assert!(msg.len() < 1024, "error message of {} bytes", msg.len());
        }
    };
    if mode & 1 == 0 {
        check(rest, &h.jwks);
    } else {
        let [jwks, token] = sentry_fuzz::split::<2>(rest);
        match KeySet::from_json(jwks) {
            Ok(keys) => check(token, &keys),
            Err(e) => assert!(e.len() < 1024, "JWKS error of {} bytes", e.len()),
        }
    }
});
