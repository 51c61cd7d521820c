//! The log line of a failing Pod or Configuration watch (or re-list), so that an RBAC mistake
//! shows as `watch pods: 403 Forbidden: …` and not only as "not ready". A line names the verb,
//! the resource and the API server's answer (code, reason and its message, the message bounded by
//! [`loggable`]); one is written at most every [`REPEAT_EVERY`] per watch, counting the failures
//! it stands for, so a flapping watch cannot flood the log. Owns only the line: the watch and its
//! retries are `cache`'s.

use std::time::{Duration, Instant};

use kube::runtime::watcher;

use crate::k8s::K8sError;
use crate::telemetry::loggable::loggable;

/// Shortest time between two lines about one watch.
pub(super) const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// What failed: the verb (`list`, `watch`) and the API server's answer, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    verb: &'static str,
    answer: String,
}

impl Failure {
    /// A watcher's error; `None` for the one `cache` handles itself (no resourceVersion).
    pub(super) fn of_watch(err: &watcher::Error) -> Option<Self> {
        let (verb, answer) = match err {
            watcher::Error::InitialListFailed(e) => ("list", client_answer(e)),
            watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
                ("watch", client_answer(e))
            }
            watcher::Error::WatchError(status) => ("watch", status_answer(status)),
            watcher::Error::NoResourceVersion => return None,
        };
        Some(Self { verb, answer })
    }

    /// A failed re-list.
    pub(super) fn of_list(err: &K8sError) -> Self {
        let answer = match err {
            K8sError::Api(e) => client_answer(e),
            other => loggable(&other.to_string()),
        };
        Self {
            verb: "list",
            answer,
        }
    }
}

fn client_answer(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status_answer(status),
        other => loggable(&other.to_string()),
    }
}

fn status_answer(status: &kube::core::Status) -> String {
    let mut out = format!("{} {}", status.code, loggable(&status.reason));
    if !status.message.is_empty() {
        out.push_str(": ");
        out.push_str(&loggable(&status.message));
    }
    out
}

/// The failures of one watch, and when one was last logged.
pub(super) struct WatchErrors {
    resource: &'static str,
    last_line: Option<Instant>,
    unlogged: u64,
}

impl WatchErrors {
    /// No failure yet of the watch of `resource` (`pods`, `configurations.dapr.io`).
    pub(super) fn new(resource: &'static str) -> Self {
        Self {
            resource,
            last_line: None,
            unlogged: 0,
        }
    }

    /// Logs `failure` (with the failures not logged since the last line), unless a line about
    /// this watch was written less than [`REPEAT_EVERY`] ago.
    pub(super) fn report(&mut self, failure: &Failure) {
        if let Some(line) = self.line_at(failure, Instant::now()) {
            tracing::warn!(
                failures = line.failures,
                "{line}; the Kubernetes validator's cache is not being updated"
            );
        }
    }

    fn line_at(&mut self, failure: &Failure, now: Instant) -> Option<Line> {
        self.unlogged += 1;
        if self
            .last_line
            .is_some_and(|at| now.saturating_duration_since(at) < REPEAT_EVERY)
        {
            return None;
        }
        self.last_line = Some(now);
        let failures = std::mem::take(&mut self.unlogged);
        Some(Line {
            text: format!("{} {}: {}", failure.verb, self.resource, failure.answer),
            failures,
        })
    }
}

/// One line to log: the failure and how many failures since the last line it stands for.
#[derive(Debug)]
struct Line {
    text: String,
    failures: u64,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(message: &str) -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: message.into(),
            ..Default::default()
        })))
    }

    #[test]
    fn names_verb_resource_and_answer_bounded() {
        let failure = Failure::of_watch(&forbidden("pods is forbidden")).unwrap();
        let line = WatchErrors::new("pods")
            .line_at(&failure, Instant::now())
            .unwrap();
        assert_eq!(line.text, "watch pods: 403 Forbidden: pods is forbidden");
        assert_eq!(line.failures, 1);
        let long = Failure::of_watch(&forbidden(&"x\n".repeat(100_000))).unwrap();
        let line = WatchErrors::new("pods")
            .line_at(&long, Instant::now())
            .unwrap();
        assert!(line.text.len() < 300, "{}", line.text.len());
        assert!(!line.text.contains('\n'));
        assert!(Failure::of_watch(&watcher::Error::NoResourceVersion).is_none());
        let timeout = Failure::of_list(&K8sError::Timeout);
        assert_eq!(timeout.verb, "list");
    }

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let mut errors = WatchErrors::new("pods");
        let failure = Failure::of_watch(&forbidden("no")).unwrap();
        let start = Instant::now();
        assert!(errors.line_at(&failure, start).is_some());
        for s in 1..60 {
            let at = start + Duration::from_secs(s);
            assert!(errors.line_at(&failure, at).is_none(), "{s}s");
        }
        let line = errors.line_at(&failure, start + REPEAT_EVERY).unwrap();
        assert_eq!(line.failures, 60);
    }
}
