//! Shared by the hostile_* tests: what a running Sentry holds (open descriptors, CPU time, log
//! bytes, all read from /proc and its log file) and a good client that keeps requesting while an
//! attack runs.

use std::time::{Duration, Instant};

use sentry_core::bundle::KeyType;

use super::{http_get, request, sign, Sentry};

/// A good request's deadline.
pub(crate) const GOOD_DEADLINE: Duration = Duration::from_secs(2);

/// Open file descriptors of a process.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // /proc reports in USER_HZ, which is 100 on every Linux.
    ticks * 10
}

/// Bytes written to the log so far.
pub(crate) fn log_bytes(s: &Sentry) -> u64 {
    std::fs::metadata(&s.log).map(|m| m.len()).unwrap_or(0)
}

/// What the good client saw.
#[derive(Debug, Default)]
pub(crate) struct GoodRun {
    /// Certificates issued within the deadline.
    pub signed: usize,
    /// `/healthz` answers that were 200.
    pub healthy: usize,
    /// Every failure, described.
    pub failures: Vec<String>,
    /// Most descriptors Sentry held at any sample.
    pub max_fds: usize,
}

/// Signs and checks `/healthz` in turn for `duration`, each sign bounded by [`GOOD_DEADLINE`],
/// sampling Sentry's open descriptors on the way.
pub(crate) async fn keep_requesting(s: &Sentry, duration: Duration) -> GoodRun {
    let mut run = GoodRun::default();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        match tokio::time::timeout(
            GOOD_DEADLINE,
            sign(s, request("good", "default", KeyType::Ed25519)),
        )
        .await
        {
            Ok(Ok(_)) => run.signed += 1,
            Ok(Err(e)) => run.failures.push(format!("sign: {e:?}")),
            Err(_) => run.failures.push("sign: deadline exceeded".into()),
        }
        let addr = s.healthz;
        match tokio::task::spawn_blocking(move || http_get(addr, "/healthz")).await {
            Ok(Some((200, _))) => run.healthy += 1,
            other => run.failures.push(format!("healthz: {other:?}")),
        }
        run.max_fds = run.max_fds.max(open_fds(s.child.id()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run
}

/// Every good request succeeded, and there were some.
pub(crate) fn assert_all_good(run: &GoodRun, attack: &str) {
    assert!(
        run.failures.is_empty(),
        "{attack}: good requests failed: {:?}",
        run.failures
    );
    assert!(
        run.signed > 0 && run.healthy > 0,
        "{attack}: no good request ran: {run:?}"
    );
}

/// A log line without its ANSI colour sequences (`ESC [ … m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sum of every `count=N` in the log lines containing `marker`.
pub(crate) fn summed_counts(log: &str, marker: &str) -> u64 {
    log.lines()
        .map(plain)
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = l.split_once("count=")?.1;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
