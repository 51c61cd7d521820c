//! Log set-up: level, text or JSON lines, standard output or a file. Tokens, keys and CSR bodies
//! are never passed to the logger anywhere in Sentry.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{LogLevel, LogOptions};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `--log-level`.
pub fn init(opts: &LogOptions) -> std::io::Result<()> {
    let level = match opts.level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Fatal => "error",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,tower=warn,{}",
            super::handshakes::LOG_DIRECTIVE
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match (&opts.file, opts.json) {
        (Some(path), json) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            let b = builder.with_ansi(false).with_writer(Mutex::new(file));
            if json {
                b.json().try_init()
            } else {
                b.try_init()
            }
        }
        (None, true) => builder.json().try_init(),
        (None, false) => builder.try_init(),
    };
    // A subscriber already installed (tests) is not an error.
    let _ = result;
    Ok(())
}
