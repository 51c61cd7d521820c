//! Operator commands (`sentry ca …`) against a credentials directory or, with
//! `--mode kubernetes`, against the `dapr-trust-bundle` objects of a cluster: `init`, `renew`
//! (issuer, `--root`, or supplied files as `dapr mtls renew-certificate`), `export`, `expiry`,
//! `check`. Changes go through the same store and journal as the server, so a running Sentry
//! picks them up (and finishes a root rotation) without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::config::{parse_go_duration, Flags, Mode};
use sentry_core::bundle::{self, CaParams, KeyType};
use sentry_core::spiffe::TrustDomain;
use sentry_runtime::rotation::{self, Journal, SystemClock};
use sentry_runtime::store::file::{CredentialPaths, FileStore};
use sentry_runtime::store::{Custody, Files, Snapshot, Store};

/// Sentry's whole command line: the serve [`Flags`], or a subcommand.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sentry",
    version,
    about = "Dapr Sentry certificate authority (Rust): serves SignCertificate; `sentry ca --help` for operator commands",
    args_conflicts_with_subcommands = true
)]
pub struct CommandLine {
    /// Operator subcommand; without one, Sentry serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The serve flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// Sentry's subcommands (none: serve).
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Operate on the trust bundle: init, renew, export, expiry, check.
    Ca(CaArgs),
}

/// `sentry ca …`: operate on the trust bundle.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// Where the bundle lives.
    #[command(flatten)]
    pub target: Target,
    /// What to do to the bundle: `init`, `renew`, `export`, `expiry` or `check`.
    #[command(subcommand)]
    pub command: CaCommand,
}

/// Where the bundle lives and what a generated CA looks like.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// `standalone` (a directory) or `kubernetes` (Secret/ConfigMap dapr-trust-bundle).
    #[arg(long, value_enum, default_value_t = Mode::Standalone, global = true)]
    pub mode: Mode,
    /// Credentials directory (standalone).
    #[arg(
        long,
        default_value = "/var/run/secrets/dapr.io/credentials",
        global = true
    )]
    pub issuer_credentials: PathBuf,
    /// Kubeconfig (kubernetes; default: KUBECONFIG or in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the bundle objects and of Sentry (kubernetes).
    #[arg(long, env = "NAMESPACE", default_value = "dapr-system", global = true)]
    pub namespace: String,
    /// Control-plane trust domain of a generated CA.
    #[arg(long, default_value = "localhost", global = true)]
    pub trust_domain: String,
    /// Key algorithm of a generated root and issuer.
    #[arg(long, value_enum, default_value_t = KeyType::Ed25519, global = true)]
    pub key_type: KeyType,
    /// NotBefore backdating of generated certificates (Go duration).
    #[arg(long, default_value = "15m", global = true)]
    pub allowed_clock_skew: String,
}

/// The `sentry ca` operations.
#[derive(Debug, Clone, Subcommand)]
pub enum CaCommand {
    /// Generate a new root and issuer (refuses when a bundle exists); Sentry keeps the root key.
    Init {
        /// Lifetime of the root and issuer, in days.
        #[arg(long, default_value_t = 365)]
        valid_until: u32,
    },
    /// Renew the issuer (default), start a phased root rotation (`--root`), or install supplied
    /// certificates (`--ca-root-certificate`, `--issuer-public-certificate`, `--issuer-private-key`).
    Renew {
        /// Rotate the root: a running Sentry publishes, activates and retires it in phases.
        #[arg(long)]
        root: bool,
        /// Lifetime of the new certificate(s), in days.
        #[arg(long, default_value_t = 365)]
        valid_until: u32,
        /// Root private key to sign the new issuer with (default: the key Sentry keeps).
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// Supplied trust anchors (PEM).
        #[arg(long, requires_all = ["issuer_public_certificate", "issuer_private_key"])]
        ca_root_certificate: Option<PathBuf>,
        /// Supplied issuer certificate chain (PEM).
        #[arg(long, requires_all = ["ca_root_certificate", "issuer_private_key"])]
        issuer_public_certificate: Option<PathBuf>,
        /// Supplied issuer private key (PEM).
        #[arg(long, requires_all = ["ca_root_certificate", "issuer_public_certificate"])]
        issuer_private_key: Option<PathBuf>,
    },
    /// Write ca.crt, issuer.crt and issuer.key (mode 0600) to a directory.
    Export {
        /// Output directory (created if missing).
        #[arg(short = 'o', long, default_value = ".")]
        output: PathBuf,
    },
    /// Print when the root and the issuer expire.
    Expiry,
    /// Verify the stored bundle end to end; print each certificate; exit non-zero on any problem.
    Check,
}

impl Target {
    async fn store(&self) -> anyhow::Result<Store> {
        let paths = CredentialPaths::new(
            &self.issuer_credentials,
            "ca.crt",
            "issuer.crt",
            "issuer.key",
        );
        Ok(match self.mode {
            Mode::Standalone => Store::open(paths, None),
            Mode::Kubernetes => {
                let client = sentry_runtime::k8s::client(self.kubeconfig.as_deref()).await?;
                Store::open(paths, Some((client, &self.namespace)))
            }
        })
    }

    fn params(&self, days: u32) -> anyhow::Result<CaParams> {
        let td = TrustDomain::parse(&self.trust_domain).context("--trust-domain")?;
        let skew = parse_go_duration(&self.allowed_clock_skew).map_err(anyhow::Error::msg)?;
        let ttl = Duration::from_secs(u64::from(days.max(1)) * 86400);
        Ok(CaParams {
            root_ttl: ttl,
            issuer_ttl: ttl,
            ..CaParams::new(td, &self.namespace, self.key_type, skew)
        })
    }
}

/// Runs one `sentry ca` command; the returned text is printed by the caller.
pub async fn run(args: CaArgs) -> anyhow::Result<String> {
    let store = args.target.store().await?;
    let snap = store.snapshot().await?;
    let now = OffsetDateTime::now_utc();
    match args.command {
        CaCommand::Init { valid_until } => {
            init(&store, &snap, &args.target.params(valid_until)?, now).await
        }
        CaCommand::Export { output } => export(snap, &output),
        CaCommand::Expiry => expiry(snap, now),
        CaCommand::Check => check(&store, &snap, now),
        CaCommand::Renew {
            root,
            valid_until,
            private_key,
            ca_root_certificate,
            issuer_public_certificate,
            issuer_private_key,
        } => {
            let params = args.target.params(valid_until)?;
            if let (Some(ca), Some(cert), Some(key)) = (
                ca_root_certificate,
                issuer_public_certificate,
                issuer_private_key,
            ) {
                return install_supplied(&store, &snap, [&ca, &cert, &key], now).await;
            }
            if snap.custody.journal.is_some() {
                bail!("a rotation is in progress; wait for it to finish");
            }
            if root {
                prepare_root_rotation(&store, &snap, params, now).await
            } else {
                renew_issuer(&store, &snap, params, private_key.as_deref(), now).await
            }
        }
    }
}

/// `ca init`: generates a root and an issuer where no bundle is stored yet.
async fn init(
    store: &Store,
    snap: &Snapshot,
    params: &CaParams,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    if snap.files.is_some() {
        bail!("a trust bundle already exists; use `sentry ca renew` to replace it");
    }
    let g = bundle::generate(params, now)?;
    store.write_files(snap, &Files::of(&g.bundle)).await?;
    let custody = Custody {
        root_key: Some(g.root_key_pem.into_bytes()),
        journal: None,
    };
    store
        .write_custody(&store.snapshot().await?, &custody)
        .await?;
    Ok(format!(
        "Generated a new CA; root expires {}\n",
        g.bundle.anchors_not_after
    ))
}

/// `ca export`: writes the stored bundle as `ca.crt`, `issuer.crt` and `issuer.key` to `output`.
fn export(snap: Snapshot, output: &Path) -> anyhow::Result<String> {
    let files = snap.files.context("no trust bundle stored")?;
    std::fs::create_dir_all(output).with_context(|| output.display().to_string())?;
    let out = FileStore::new(CredentialPaths::new(
        output,
        "ca.crt",
        "issuer.crt",
        "issuer.key",
    ));
    let existing = out.snapshot().ok().and_then(|s| s.files);
    out.write_files(existing.as_ref(), &files)?;
    Ok(format!(
        "Exported ca.crt, issuer.crt and issuer.key to {}\n",
        output.display()
    ))
}

/// `ca expiry`: hours left on the root and the issuer.
fn expiry(snap: Snapshot, now: OffsetDateTime) -> anyhow::Result<String> {
    let files = snap.files.context("no trust bundle stored")?;
    let b = bundle::verify(&files.anchors, &files.issuer_cert, &files.issuer_key, now)?;
    let hours = |t: OffsetDateTime| (t - now).whole_hours();
    Ok(format!(
        "Root certificate expires in {} hours ({})\nIssuer certificate expires in {} hours ({})\n",
        hours(b.anchors_not_after),
        b.anchors_not_after,
        hours(b.issuer_not_after),
        b.issuer_not_after
    ))
}

/// `ca renew` with supplied files (as `dapr mtls renew-certificate`): verified, then stored.
async fn install_supplied(
    store: &Store,
    snap: &Snapshot,
    [ca, cert, key]: [&PathBuf; 3],
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| p.display().to_string());
    let files = Files {
        anchors: read(ca)?,
        issuer_cert: read(cert)?,
        issuer_key: read(key)?,
    };
    bundle::verify(&files.anchors, &files.issuer_cert, &files.issuer_key, now)?;
    if snap.custody.journal.is_some() {
        bail!("a rotation is in progress; wait for it to finish");
    }
    store.write_files(snap, &files).await?;
    Ok("Installed the supplied certificates; a running Sentry serves them within seconds\n".into())
}

/// `ca renew --root`: writes a prepared root rotation into the journal; a running Sentry carries
/// out its phases.
async fn prepare_root_rotation(
    store: &Store,
    snap: &Snapshot,
    params: CaParams,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    snap.files
        .as_ref()
        .context("no trust bundle stored; use `sentry ca init`")?;
    let journal = rotation::prepare_rotation(&rotation::Settings::new(params), now)?;
    let custody = Custody {
        root_key: snap.custody.root_key.clone(),
        journal: Some(journal.to_bytes()),
    };
    store.write_custody(snap, &custody).await?;
    Ok("Root rotation prepared; a running Sentry now publishes the new root, activates its issuer after the grace period and retires the old root\n".into())
}

/// `ca renew`: a new issuer under the current root (its key from `--private-key` or custody),
/// through the same crash-safe journal steps the server takes.
async fn renew_issuer(
    store: &Store,
    snap: &Snapshot,
    params: CaParams,
    private_key: Option<&Path>,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    let files = snap
        .files
        .as_ref()
        .context("no trust bundle stored; use `sentry ca init`")?;
    let root_key = match private_key {
        Some(p) => std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        None => String::from_utf8(
            snap.custody
                .root_key
                .clone()
                .context("no root key: pass --private-key, or rotate the root with --root")?,
        )?,
    };
    let current = bundle::verify(&files.anchors, &files.issuer_cert, &files.issuer_key, now)?;
    let root_pem = rotation::matching_root(&current, &root_key)
        .context("the root key matches none of the trust anchors")?;
    let (cert, key) = bundle::new_issuer(&params, root_pem.as_bytes(), &root_key, now)?;
    let journal = Journal::renewing(cert, key);
    // The same crash-safe steps the server takes: journal, bundle, then close the journal.
    let custody = Custody {
        root_key: snap.custody.root_key.clone(),
        journal: Some(journal.to_bytes()),
    };
    store.write_custody(snap, &custody).await?;
    // A running Sentry may carry out the same steps at the same time: a lost compare-and-swap
    // re-reads, and the renewal is done once the journal is closed.
    rotation::run_to_completion(store, &rotation::Settings::new(params), &SystemClock).await?;
    Ok("Renewed the issuer certificate; a running Sentry serves it within seconds\n".into())
}

fn check(store: &Store, snap: &Snapshot, now: OffsetDateTime) -> anyhow::Result<String> {
    let files = snap.files.as_ref().context("no trust bundle stored")?;
    let b = bundle::verify(&files.anchors, &files.issuer_cert, &files.issuer_key, now)
        .map_err(|e| anyhow::anyhow!("{}: {e}", store.describe(e.part)))?;
    sentry_core::ca::Signer::new(b.clone()).context("the issuer cannot sign")?;
    let mut out = String::new();
    let describe = |role: &str, der: &[u8], out: &mut String| {
        if let Ok((_, c)) = x509_parser::certificate::X509Certificate::from_der(der) {
            out.push_str(&format!(
                "{role}: {} (expires {})\n",
                c.subject(),
                c.validity().not_after
            ));
        }
    };
    for a in &b.anchors {
        describe("trust anchor", a, &mut out);
    }
    for (i, c) in b.issuer_chain.iter().enumerate() {
        describe(if i == 0 { "issuer" } else { "intermediate" }, c, &mut out);
    }
    match snap.custody.root_key.as_deref().map(std::str::from_utf8) {
        Some(Ok(k)) if rotation::matching_root(&b, k).is_some() => {
            out.push_str("root key: held by Sentry (automatic renewal)\n")
        }
        Some(_) => bail!("the stored root key matches none of the trust anchors"),
        None => out.push_str("root key: not held (renew manually before expiry)\n"),
    }
    if let Some(j) = snap.custody.journal.as_deref() {
        let j = Journal::parse(j).map_err(anyhow::Error::msg)?;
        out.push_str(&format!("rotation in progress: {:?}\n", j.phase));
    }
    out.push_str("OK\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::normalize_args;

    #[test]
    fn subcommands_still_win_over_ignored_arguments() {
        let args = ["sentry", "ca", "expiry"].map(String::from);
        let line = CommandLine::try_parse_from(normalize_args(args)).unwrap();
        assert!(line.command.is_some());
        assert!(line.flags.ignored_args.is_empty());
    }
}
