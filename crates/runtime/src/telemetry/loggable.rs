//! Untrusted text (a request's fields, an API server's message) made safe for a log line:
//! control characters escaped and cut to a bounded length, so it cannot forge lines or flood the
//! log. Owns only that rule; what goes into a line is the caller's.

/// Longest prefix of an untrusted string that goes into a log line.
pub const LOG_FIELD_MAX: usize = 80;

/// `s` with control characters escaped, cut to [`LOG_FIELD_MAX`] characters (`…` marks a cut).
pub fn loggable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(LOG_FIELD_MAX)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().nth(LOG_FIELD_MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_escapes_and_truncates() {
        assert_eq!(loggable("my-app"), "my-app");
        assert_eq!(loggable("a\nINFO forged"), "a\\nINFO forged");
        let long = "x".repeat(5 * 1024 * 1024);
        let out = loggable(&long);
        assert_eq!(out.chars().count(), LOG_FIELD_MAX + 1);
        assert!(out.ends_with('…'));
    }
}
