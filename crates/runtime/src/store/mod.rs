//! Where a trust bundle lives: a directory in standalone mode ([`mod@file`]), a Secret and a ConfigMap
//! in Kubernetes mode ([`kube`], within the RBAC of Dapr's chart, see [`rbac`]); the JWT key and
//! JWKS beside it ([`jwt`]: files in [`jwt::JwtFileStore`], Secret/ConfigMap keys in [`jwt::JwtKubeStore`]); how a
//! running Sentry learns that the store changed ([`changes`]). Reads and writes raw bundle bytes
//! plus Sentry's custody data (the root key and the rotation journal); never signs anything.
//! Key files with loose permissions are found by [`perms`].

pub mod changes;
pub mod file;
pub mod jwt;
pub mod kube;
pub mod perms;
pub mod rbac;

use std::path::PathBuf;

use file::CredentialPaths;
use sentry_core::bundle::{Bundle, BundlePart};

/// The three bundle items as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// Trust anchors (`ca.crt`).
    pub anchors: Vec<u8>,
    /// Issuer chain (`issuer.crt`).
    pub issuer_cert: Vec<u8>,
    /// Issuer key (`issuer.key`).
    pub issuer_key: Vec<u8>,
}

impl Files {
    /// The bundle from its stored parts (in [`BundlePart::ALL`] order): all three, or `None` when
    /// none exists; only some is [`StoreError::Partial`], naming each part by `describe`, so a
    /// store never overwrites user material it only partly holds.
    fn from_parts(
        parts: [Option<Vec<u8>>; 3],
        describe: impl Fn(BundlePart) -> String,
    ) -> Result<Option<Self>, StoreError> {
        match parts {
            [None, None, None] => Ok(None),
            [Some(anchors), Some(issuer_cert), Some(issuer_key)] => Ok(Some(Files {
                anchors,
                issuer_cert,
                issuer_key,
            })),
            parts => {
                let names = |present: bool| {
                    BundlePart::ALL
                        .iter()
                        .zip(&parts)
                        .filter(|(_, v)| v.is_some() == present)
                        .map(|(p, _)| describe(*p))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(StoreError::Partial {
                    set: PartSet::TrustBundle,
                    present: names(true),
                    missing: names(false),
                })
            }
        }
    }

    /// The stored form of a bundle.
    pub fn of(bundle: &Bundle) -> Self {
        Self {
            anchors: bundle.anchors_pem.clone().into_bytes(),
            issuer_cert: bundle.issuer_chain_pem.clone().into_bytes(),
            issuer_key: bundle.issuer_key_pem.clone().into_bytes(),
        }
    }
}

/// What Sentry keeps for itself: the root key of a CA it generated and the rotation journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Custody {
    /// Root private key (PEM), when Sentry holds it.
    pub root_key: Option<Vec<u8>>,
    /// Rotation journal (JSON), while a rotation or renewal is in progress.
    pub journal: Option<Vec<u8>>,
}

/// One consistent read of a store.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The bundle, or `None` when the store holds none.
    pub files: Option<Files>,
    /// Custody data.
    pub custody: Custody,
    versions: kube::Versions,
}

/// Why a store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The API server refused or did not answer.
    #[error("{0}")]
    Kubernetes(String),
    /// RBAC refused the call: `verb` on `resource` (one object, e.g. `secrets/dapr-trust-bundle`).
    #[error("{what}: forbidden by RBAC ({verb} {resource})")]
    Forbidden {
        /// What was being done.
        what: String,
        /// The refused verb.
        verb: &'static str,
        /// The refused resource.
        resource: String,
    },
    /// The object Sentry stores into does not exist and RBAC does not allow creating it.
    #[error("{0} does not exist and RBAC does not allow creating it: create it empty first, as Dapr's Helm chart does (see deploy/trust-bundle.yaml)")]
    Missing(String),
    /// Someone else wrote first (compare-and-swap lost); read again and retry.
    #[error("{0}: changed concurrently")]
    Conflict(String),
    /// Only some parts of `set` exist; Sentry refuses to overwrite user material.
    #[error("incomplete {set}: {present} present but {missing} missing; {}", .set.remedy())]
    Partial {
        /// What is incomplete.
        set: PartSet,
        /// Where the parts found are.
        present: String,
        /// Where the missing parts belong.
        missing: String,
    },
}

/// A set of stored parts that is only usable whole: all parts, or none (then generated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSet {
    /// The three bundle items.
    TrustBundle,
    /// The JWT signing key and its JWKS.
    JwtCredentials,
}

impl PartSet {
    /// What the operator can do about a partial set.
    fn remedy(self) -> &'static str {
        match self {
            PartSet::TrustBundle => {
                "supply all three files or remove them all to generate a new CA"
            }
            PartSet::JwtCredentials => "supply both or remove both to generate a new JWT key",
        }
    }
}

impl std::fmt::Display for PartSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PartSet::TrustBundle => "trust bundle",
            PartSet::JwtCredentials => "JWT credentials",
        })
    }
}

/// Where the trust bundle lives, as chosen by `--mode`.
///
/// What a write promises against the `base` snapshot it was computed from differs by store:
/// - Kubernetes: one compare-and-swap on the Secret's resourceVersion in `base`; a write after
///   another writer's returns [`StoreError::Conflict`] and changes nothing.
/// - A directory: no version to compare, so no write ever returns `Conflict`. Only the items that
///   differ from `base` are written, each atomically (temp file, rename), and an unchanged file
///   is left alone; a concurrent writer of the same directory (an operator's `sentry ca`) is not
///   detected at write time but seen by the next read (every `--bundle-check-interval`), and the
///   rotation journal keeps a multi-file change resumable.
#[derive(Clone)]
pub enum Store {
    /// Standalone: the credentials directory (`--issuer-credentials`).
    File(file::FileStore),
    /// Kubernetes: Secret and ConfigMap `dapr-trust-bundle`.
    Kube(Box<kube::KubeStore>),
}

impl Store {
    /// The bundle store of `paths`: those files, or, given `cluster` (a client and the namespace),
    /// the Secret and ConfigMap `dapr-trust-bundle` there, keyed by the files' base names.
    pub fn open(paths: CredentialPaths, cluster: Option<(::kube::Client, &str)>) -> Self {
        match cluster {
            None => Store::File(file::FileStore::new(paths)),
            Some((client, namespace)) => {
                let keys = kube::Keys {
                    anchors: kube::base_name(&paths.anchors),
                    issuer_cert: kube::base_name(&paths.issuer_cert),
                    issuer_key: kube::base_name(&paths.issuer_key),
                };
                Store::Kube(Box::new(kube::KubeStore::new(client, namespace, keys)))
            }
        }
    }

    /// Reads the bundle and custody data.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        match self {
            Store::File(s) => s.snapshot(),
            Store::Kube(s) => s.snapshot().await,
        }
    }

    /// Writes the bundle; in Kubernetes, conflicts if the store changed since `base` (see
    /// [`Store`] for what each store promises).
    pub async fn write_files(&self, base: &Snapshot, files: &Files) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.write_files(base.files.as_ref(), files),
            Store::Kube(s) => s.write(&base.versions, Some(files), None).await,
        }
    }

    /// Writes a generated bundle and its custody data; in Kubernetes, conflicts if the store
    /// changed since `base`, and this is one write, so only the replica whose bundle won keeps a
    /// key (see [`Store`]).
    pub async fn write_generated(
        &self,
        base: &Snapshot,
        files: &Files,
        custody: &Custody,
    ) -> Result<(), StoreError> {
        match self {
            Store::File(s) => {
                s.write_files(base.files.as_ref(), files)?;
                s.write_custody(&base.custody, custody)
            }
            Store::Kube(s) => s.write(&base.versions, Some(files), Some(custody)).await,
        }
    }

    /// Custody data of an earlier version's layout to migrate (Kubernetes: Secret
    /// `dapr-trust-bundle-root`, when readable); `None` for a directory.
    pub async fn legacy_custody(&self) -> Option<Custody> {
        match self {
            Store::File(_) => None,
            Store::Kube(s) => s.legacy_custody().await,
        }
    }

    /// Writes custody data; in Kubernetes, conflicts if the store changed since `base` (see
    /// [`Store`]).
    pub async fn write_custody(
        &self,
        base: &Snapshot,
        custody: &Custody,
    ) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.write_custody(&base.custody, custody),
            Store::Kube(s) => s.write(&base.versions, None, Some(custody)).await,
        }
    }

    /// Makes the distributed anchors (the ConfigMap in Kubernetes) match `files`.
    pub async fn publish(&self, files: &Files) -> Result<(), StoreError> {
        match self {
            Store::File(_) => Ok(()),
            Store::Kube(s) => s.sync_config_map(&files.anchors).await,
        }
    }

    /// Where a bundle part lives, for error messages.
    pub fn describe(&self, part: BundlePart) -> String {
        match self {
            Store::File(s) => s.path_of(part).display().to_string(),
            Store::Kube(s) => s.describe(part),
        }
    }
}
