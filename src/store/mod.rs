//! Where a trust bundle lives: a directory in standalone mode ([`file`]), a Secret and a
//! ConfigMap in Kubernetes mode ([`kube`]). Loads, verifies and saves bundles; never signs
//! anything.

pub mod file;
pub mod kube;

use std::path::PathBuf;

use crate::bundle::BundleError;

/// Why a bundle could not be loaded or saved.
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
    /// The stored bundle failed verification.
    #[error("{path}: {source}")]
    Invalid {
        /// The file holding the faulty part.
        path: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// The API server refused or did not answer.
    #[error("{0}")]
    Kubernetes(String),
    /// Only some of the bundle files exist; Sentry refuses to overwrite user material.
    #[error("incomplete trust bundle: {present} present but {missing} missing; supply all three files or remove them all to generate a new CA")]
    Partial {
        /// Files found.
        present: String,
        /// Files missing.
        missing: String,
    },
}
