//! `sentry`: the Dapr Sentry certificate authority. Parses flags (Dapr's names), resolves the
//! configuration, and runs the server until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use sentry::cli::{Command, CommandLine};
use sentry::config::{log_options, normalize_args};
use sentry_runtime::telemetry::logging;

#[cfg(target_env = "musl")]
mod allocator;
#[cfg(all(target_arch = "x86_64", any(test, target_env = "musl")))]
mod mem_copy;

fn operator(args: sentry::cli::CaArgs) -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(sentry::cli::run(args)));
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    allocator::configure();
    let CommandLine { command, flags } = CommandLine::parse_from(normalize_args(std::env::args()));
    if let Some(Command::Ca(args)) = command {
        return operator(args);
    }
    if let Err(e) = logging::init(&log_options(&flags)) {
        eprintln!("error: opening log file: {e}");
        return ExitCode::FAILURE;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sentry::app::run(flags, std::env::var("NAMESPACE").ok())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
