//! A short-lived cache of successful TokenReviews, keyed by the SHA-256 of the token (tokens are
//! never stored). A sidecar that retries, or renews with the same projected token, costs no API
//! call, and keeps getting certificates through a brief API-server outage. Only the token check
//! is cached: the pod, its UID and its annotations are still checked on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a successful review is reused (never past the token's own expiry).
pub const REVIEW_TTL: Duration = Duration::from_secs(30);
/// Most entries kept; expired entries are dropped first, then the cache is cleared.
pub const CAPACITY: usize = 20_000;

type Key = [u8; 32];

/// Successful reviews: token hash → (service-account username, valid until).
#[derive(Default)]
pub struct ReviewCache {
    entries: Mutex<HashMap<Key, (String, Instant)>>,
}

fn key(token: &str) -> Key {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(digest.as_ref());
    k
}

impl ReviewCache {
    /// The username of a still-valid cached review of `token`.
    pub fn get(&self, token: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(&key(token))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(user, _)| user.clone())
    }

    /// Remembers a successful review; `expires_in` is the token's remaining life, if known.
    pub fn put(&self, token: &str, username: String, expires_in: Option<Duration>) {
        let ttl = expires_in.map_or(REVIEW_TTL, |e| e.min(REVIEW_TTL));
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
        entries.insert(key(token), (username, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_miss_and_expiry() {
        let c = ReviewCache::default();
        assert_eq!(c.get("t"), None);
        c.put("t", "system:serviceaccount:ns:sa".into(), None);
        assert_eq!(c.get("t").as_deref(), Some("system:serviceaccount:ns:sa"));
        assert_eq!(c.get("u"), None);
        c.put("short", "x".into(), Some(Duration::ZERO));
        assert_eq!(c.get("short"), None, "an expired token is never cached");
        c.put("brief", "x".into(), Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("brief"), None);
    }
}
