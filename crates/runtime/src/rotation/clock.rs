//! What time the rotator decides by. Every decision of [`super::Rotator`] and [`super::bootstrap`]
//! (is a renewal due, has a phase's wait ended, is a bundle still valid) reads the time from a
//! [`Clock`], so a test can move time by hand. Owns nothing else: sleeping stays with the caller.

use time::OffsetDateTime;

/// The source of the current time for rotation decisions.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock: what production uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
