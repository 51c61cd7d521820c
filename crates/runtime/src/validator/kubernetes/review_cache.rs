//! The cache of successful TokenReviews, keyed by the SHA-256 of the token (tokens are never
//! stored). A sidecar that retries, restarts or renews with the same projected token costs no API
//! call, and keeps getting certificates through an API-server outage.
//!
//! An entry lives as long as the token itself (its `exp` claim), at most [`MAX_REVIEW_TTL`]. That is
//! safe because only the token check is cached: the pod named by the token, its UID, service
//! account and annotations are checked on every request, so the token of a deleted pod is refused
//! by the pod check even while its review is cached. What the cache can hide for up to
//! [`MAX_REVIEW_TTL`] is a ServiceAccount deleted under a pod that still exists.
//!
//! Owns the entries only; who reviews, and one review per token at a time, is `in_flight`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Longest a successful review is reused, however long the token still lives; also the lifetime
/// of the review of a token without an `exp` claim (such a token has no pod claim and is refused
/// after its review anyway).
pub(super) const MAX_REVIEW_TTL: Duration = Duration::from_secs(10 * 60);
/// Most entries kept; expired entries are dropped first, then the cache is cleared.
pub(super) const CAPACITY: usize = 20_000;

/// The SHA-256 of a token.
pub(super) type Key = [u8; 32];

/// The cache key of `token`.
pub(super) fn key(token: &str) -> Key {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(digest.as_ref());
    k
}

/// Successful reviews: token hash → (service-account username, valid until).
#[derive(Default)]
pub(super) struct ReviewCache {
    entries: Mutex<HashMap<Key, (String, Instant)>>,
}

impl ReviewCache {
    /// The username of a still-valid cached review of the token with this key.
    pub(super) fn get(&self, key: &Key) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(user, _)| user.clone())
    }

    /// Remembers a successful review; `expires_in` is the token's remaining life, if known.
    pub(super) fn put(&self, key: Key, username: String, expires_in: Option<Duration>) {
        let ttl = expires_in.map_or(MAX_REVIEW_TTL, |e| e.min(MAX_REVIEW_TTL));
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (username, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "system:serviceaccount:ns:sa";

    #[test]
    fn hit_miss_and_expired_token() {
        let c = ReviewCache::default();
        assert_eq!(c.get(&key("t")), None);
        c.put(key("t"), USER.into(), None);
        assert_eq!(c.get(&key("t")).as_deref(), Some(USER));
        assert_eq!(c.get(&key("u")), None);
        c.put(key("short"), "x".into(), Some(Duration::ZERO));
        assert_eq!(
            c.get(&key("short")),
            None,
            "an expired token is never cached"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lives_as_long_as_the_token_at_most_the_cap() {
        let c = ReviewCache::default();
        c.put(key("2min"), USER.into(), Some(Duration::from_secs(120)));
        c.put(key("2h"), USER.into(), Some(Duration::from_secs(7200)));
        c.put(key("no-exp"), USER.into(), None);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(c.get(&key("2min")).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.get(&key("2min")), None, "never past the token's expiry");
        tokio::time::advance(MAX_REVIEW_TTL - Duration::from_secs(121)).await;
        assert!(c.get(&key("2h")).is_some() && c.get(&key("no-exp")).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.get(&key("2h")), None, "capped at MAX_REVIEW_TTL");
        assert_eq!(c.get(&key("no-exp")), None);
    }
}
