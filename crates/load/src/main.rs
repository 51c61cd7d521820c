//! `sentry-load`: simulated sidecars calling Sentry's `SignCertificate`, reporting signs/s,
//! latency percentiles and errors by gRPC status (see `sentry_load`).

use std::process::ExitCode;

use clap::Parser;
use sentry_load::Options;

fn main() -> ExitCode {
    let opts = Options::parse();
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
    let report = match runtime.block_on(sentry_load::run(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if opts.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{report}");
    }
    if report.ok == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
