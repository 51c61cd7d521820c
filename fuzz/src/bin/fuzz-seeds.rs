//! Writes the seed corpus of every fuzz target into `<dir>/<target>/seed-<n>` (default dir
//! `corpus`); generated afresh on each run, so no key material is kept in the repository.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let targets = [
        ("csr", sentry_fuzz::csr_seeds()),
        ("bundle", sentry_fuzz::bundle_seeds()),
        ("sign_request", sentry_fuzz::request_seeds()),
        ("k8s_token", sentry_fuzz::token_seeds()),
        ("jwks_token", sentry_fuzz::jwks_seeds()),
    ];
    for (target, seeds) in targets {
        let out = dir.join(target);
        std::fs::create_dir_all(&out)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(out.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
