//! The live progress line on standard error, shown only when it is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::Live;

/// Starts redrawing the progress line every half second until the run stops; `None` when
/// standard error is not a terminal.
pub(crate) fn spawn(live: Arc<Live>, start: Instant) -> Option<JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (mut last_ok, mut last_at) = (0u64, start);
        loop {
            tick.tick().await;
            let stopped = live.stop.load(Ordering::Relaxed);
            let ok = live.ok.load(Ordering::Relaxed);
            let errors = live.errors.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-9);
            (last_ok, last_at) = (ok, now);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K{:>6.1}s  ok {ok:>9}  errors {errors:>7}  {rate:>8.0}/s",
                now.duration_since(start).as_secs_f64()
            );
            if stopped {
                let _ = writeln!(err);
                return;
            }
        }
    }))
}
