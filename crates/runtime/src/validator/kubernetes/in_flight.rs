//! One TokenReview in flight per token. Concurrent requests with the same token (a start storm's
//! retries: daprd gives up on a try after 3 s and asks again) wait for the review already running
//! instead of sending another. The review runs in its own task, so it completes and fills the
//! review cache even when every caller has hung up, and the retry that follows is a cache hit.
//!
//! Flights are keyed by the token's SHA-256, as the cache is. At most [`MAX_IN_FLIGHT`] run
//! detached; beyond that a request reviews its token itself (cancelled with the request, as any
//! other API call), so hostile traffic cannot pile up background reviews. A flight's outcome,
//! success or refusal, goes to the callers that joined it; only successes are cached.
//!
//! Owns coalescing only; the TokenReview itself is the reviewer given to [`Reviews::new`], and
//! the cache's lifetime rules are `review_cache`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::review_cache::{self, Key, ReviewCache};
use super::token;
use crate::validator::ValidationError;

/// Most reviews running detached at once (as many as the default `--max-in-flight-requests`).
pub(super) const MAX_IN_FLIGHT: usize = 1024;

/// A review's outcome: the service-account username, or why the token was refused.
pub(super) type Outcome = Result<String, ValidationError>;

/// Sends one TokenReview for a token.
pub(super) type Reviewer = Box<dyn Fn(String) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// The outcome of a flight, `None` until it lands.
type Flight = watch::Receiver<Option<Outcome>>;

/// Cached and coalesced token reviews.
pub(super) struct Reviews(Arc<Shared>);

struct Shared {
    reviewer: Reviewer,
    cache: ReviewCache,
    flights: Mutex<HashMap<Key, Flight>>,
}

/// Removes a flight from the map when its task ends, even by a panic.
struct Landing<'a> {
    shared: &'a Shared,
    key: Key,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.shared.flights().remove(&self.key);
    }
}

impl Reviews {
    /// Reviews tokens with `reviewer`.
    pub(super) fn new(reviewer: Reviewer) -> Self {
        Self(Arc::new(Shared {
            reviewer,
            cache: ReviewCache::default(),
            flights: Mutex::default(),
        }))
    }

    /// The token's service-account username: cached, from the review in flight, or reviewed now.
    pub(super) async fn username(&self, token: &str) -> Outcome {
        let key = review_cache::key(token);
        if let Some(username) = self.0.cache.get(&key) {
            return Ok(username);
        }
        let flight = {
            let mut flights = self.0.flights();
            // Again under the lock: a flight that just landed is in the cache, not in the map.
            if let Some(username) = self.0.cache.get(&key) {
                return Ok(username);
            }
            match flights.get(&key) {
                Some(flight) => Some(flight.clone()),
                None if flights.len() >= MAX_IN_FLIGHT => None,
                None => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(key, rx.clone());
                    tokio::spawn(Arc::clone(&self.0).fly(key, token.to_owned(), tx));
                    Some(rx)
                }
            }
        };
        match flight {
            Some(mut flight) => {
                let landed = flight.wait_for(Option::is_some).await;
                landed
                    .ok()
                    .and_then(|outcome| outcome.clone())
                    .unwrap_or_else(|| {
                        Err(ValidationError::Denied(
                            "token review failed: the review ended without an answer".into(),
                        ))
                    })
            }
            None => {
                debug!(
                    max = MAX_IN_FLIGHT,
                    "token reviews in flight at their limit; reviewing directly"
                );
                self.0.review(key, token.to_owned()).await
            }
        }
    }

    /// Reviews running detached now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.0.flights().len()
    }
}

impl Shared {
    fn flights(&self) -> MutexGuard<'_, HashMap<Key, Flight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reviews the token and caches a success until the token expires (capped by the cache).
    async fn review(&self, key: Key, token: String) -> Outcome {
        let expires_in = token::remaining_life(&token);
        let started = Instant::now();
        let username = (self.reviewer)(token).await?;
        let expires_in = expires_in.map(|e| e.saturating_sub(started.elapsed()));
        self.cache.put(key, username.clone(), expires_in);
        Ok(username)
    }

    /// A detached review: cached first, then out of the map, then its outcome to the waiters.
    async fn fly(self: Arc<Self>, key: Key, token: String, tx: watch::Sender<Option<Outcome>>) {
        let landing = Landing { shared: &self, key };
        let outcome = self.review(key, token).await;
        drop(landing);
        tx.send_replace(Some(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures::FutureExt;

    const USER: &str = "system:serviceaccount:ns:sa";
    /// How long the fake API server takes to answer a review.
    const SLOW: Duration = Duration::from_secs(5);
    /// daprd's try timeout.
    const TRY: Duration = Duration::from_secs(3);

    /// Reviews that take [`SLOW`] and succeed unless the token starts with "bad"; counts calls.
    fn fake() -> (Reviews, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let reviews = Reviews::new(Box::new(move |token: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(SLOW).await;
                if token.starts_with("bad") {
                    Err(ValidationError::Denied("authentication failed".into()))
                } else {
                    Ok(USER.to_owned())
                }
            }
            .boxed()
        }));
        (reviews, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_validations_of_one_token_send_one_review() {
        let (reviews, calls) = fake();
        let all = futures::future::join_all((0..100).map(|_| reviews.username("t"))).await;
        assert!(all.iter().all(|o| o.as_deref() == Ok(USER)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(reviews.in_flight(), 0, "a landed flight leaves the map");
        assert_eq!(reviews.username("t").await.as_deref(), Ok(USER));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "then a cache hit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_hangs_up_does_not_lose_the_review() {
        let (reviews, calls) = fake();
        // daprd's first try gives up after 3 s of a 5 s review; its retry joins the same flight.
        assert!(tokio::time::timeout(TRY, reviews.username("t"))
            .await
            .is_err());
        assert_eq!(reviews.in_flight(), 1);
        let started = Instant::now();
        assert_eq!(reviews.username("t").await.as_deref(), Ok(USER));
        assert_eq!(
            started.elapsed(),
            SLOW - TRY,
            "the retry waited for the first review"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Every caller gone: the review still lands in the cache.
        assert!(tokio::time::timeout(TRY, reviews.username("u"))
            .await
            .is_err());
        tokio::time::sleep(SLOW).await;
        assert_eq!(reviews.in_flight(), 0);
        let started = Instant::now();
        assert_eq!(reviews.username("u").await.as_deref(), Ok(USER));
        assert_eq!(started.elapsed(), Duration::ZERO, "a cache hit");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_goes_to_its_flight_only() {
        let (reviews, calls) = fake();
        let (a, b) = tokio::join!(reviews.username("bad"), reviews.username("bad"));
        assert!(a.is_err() && a == b);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(reviews.username("bad").await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a refusal is not cached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_review_that_panics_answers_its_waiters_and_leaves_the_map() {
        let reviews = Reviews::new(Box::new(|_| {
            async {
                tokio::time::sleep(SLOW).await;
                panic!("reviewer bug")
            }
            .boxed()
        }));
        let (a, b) = tokio::join!(reviews.username("t"), reviews.username("t"));
        assert!(a.is_err() && b.is_err());
        assert_eq!(reviews.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_cap_requests_review_directly() {
        let (reviews, calls) = fake();
        // Callers of MAX_IN_FLIGHT distinct tokens hang up, leaving their reviews in flight.
        for i in 0..MAX_IN_FLIGHT {
            let hung_up = reviews.username(&format!("t{i}")).now_or_never();
            assert!(hung_up.is_none());
        }
        assert_eq!(reviews.in_flight(), MAX_IN_FLIGHT);
        // Two requests with one more token: no flight to share, each reviews it itself.
        let (a, b) = tokio::join!(reviews.username("extra"), reviews.username("extra"));
        assert!(a.as_deref() == Ok(USER) && b.as_deref() == Ok(USER));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), MAX_IN_FLIGHT + 2);
        assert_eq!(
            reviews.in_flight(),
            0,
            "the detached reviews landed meanwhile"
        );
        // The map never grew past the cap, and a direct review's success is cached too.
        assert_eq!(reviews.username("extra").await.as_deref(), Ok(USER));
        assert_eq!(calls.load(Ordering::SeqCst), MAX_IN_FLIGHT + 2);
        // A direct review whose caller hangs up is cancelled with it.
        for i in 0..MAX_IN_FLIGHT {
            assert!(reviews.username(&format!("v{i}")).now_or_never().is_none());
        }
        assert!(reviews.username("gone").now_or_never().is_none());
        tokio::time::sleep(SLOW * 2).await;
        assert_eq!(reviews.in_flight(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 2 * MAX_IN_FLIGHT + 3);
        reviews.username("gone").await.ok();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2 * MAX_IN_FLIGHT + 4,
            "it was not cached"
        );
    }
}
