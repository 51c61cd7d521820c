//! The standalone store: `ca.crt`, `issuer.crt` and `issuer.key` in a directory, plus Sentry's
//! `root.key` and `rotation.json` when it holds them.
//!
//! A partial set of bundle files is refused, never overwritten. Every file is written with mode
//! 0600 through a temporary file and an atomic rename; the rotation journal makes multi-file
//! changes resumable after a crash.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Custody, Files, Snapshot, StoreError};
use sentry_core::bundle::BundlePart;

/// Paths of the trust-bundle files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPaths {
    /// Trust anchors (`ca.crt`).
    pub anchors: PathBuf,
    /// Issuer certificate chain (`issuer.crt`).
    pub issuer_cert: PathBuf,
    /// Issuer private key (`issuer.key`).
    pub issuer_key: PathBuf,
}

impl CredentialPaths {
    /// Joins each file name to `dir` unless the name is an absolute path (Dapr ≥ 1.15).
    pub fn new(dir: &Path, anchors: &str, issuer_cert: &str, issuer_key: &str) -> Self {
        let join = |name: &str| {
            let p = Path::new(name);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        Self {
            anchors: join(anchors),
            issuer_cert: join(issuer_cert),
            issuer_key: join(issuer_key),
        }
    }
}

/// File name of the root key Sentry keeps for a CA it generated.
pub const ROOT_KEY_FILE: &str = "root.key";
/// File name of the rotation journal.
pub const JOURNAL_FILE: &str = "rotation.json";

/// A bundle kept in files.
#[derive(Debug, Clone)]
pub struct FileStore {
    paths: CredentialPaths,
    root_key: PathBuf,
    journal: PathBuf,
}

/// Names `path` in an I/O error.
pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file's bytes, or `None` when it does not exist.
pub(super) fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

impl FileStore {
    /// A store at `paths`; custody files live beside the trust anchors.
    pub fn new(paths: CredentialPaths) -> Self {
        let dir = paths
            .anchors
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self {
            root_key: dir.join(ROOT_KEY_FILE),
            journal: dir.join(JOURNAL_FILE),
            paths,
        }
    }

    /// The path of a bundle part.
    pub fn path_of(&self, part: BundlePart) -> &Path {
        match part {
            BundlePart::Anchors => &self.paths.anchors,
            BundlePart::IssuerChain => &self.paths.issuer_cert,
            BundlePart::IssuerKey => &self.paths.issuer_key,
        }
    }

    /// Reads everything. A partial bundle is an error.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let [anchors, issuer_cert, issuer_key] = BundlePart::ALL.map(|p| read_opt(self.path_of(p)));
        let files = Files::from_parts([anchors?, issuer_cert?, issuer_key?], |p| {
            self.path_of(p).display().to_string()
        })?;
        Ok(Snapshot {
            files,
            custody: Custody {
                root_key: read_opt(&self.root_key)?,
                journal: read_opt(&self.journal)?,
            },
            versions: Default::default(),
        })
    }

    /// Writes the bundle files that differ from `base` (key first, anchors last).
    pub fn write_files(&self, base: Option<&Files>, files: &Files) -> Result<(), StoreError> {
        let items = [
            (
                &self.paths.issuer_key,
                &files.issuer_key,
                base.map(|b| &b.issuer_key),
            ),
            (
                &self.paths.issuer_cert,
                &files.issuer_cert,
                base.map(|b| &b.issuer_cert),
            ),
            (
                &self.paths.anchors,
                &files.anchors,
                base.map(|b| &b.anchors),
            ),
        ];
        let changed: Vec<_> = items
            .into_iter()
            .filter(|(_, new, old)| Some(*new) != *old)
            .collect();
        for (path, _, _) in &changed {
            ensure_dir(path)?;
        }
        // Stage every file first so that a full disk or a read-only directory changes nothing.
        let mut staged = Vec::with_capacity(changed.len());
        for (path, data, _) in &changed {
            match write_temp(path, data) {
                Ok(tmp) => staged.push((tmp, (*path).clone())),
                Err(e) => {
                    for (tmp, _) in &staged {
                        let _ = fs::remove_file(tmp);
                    }
                    return Err(io(path)(e));
                }
            }
        }
        for (tmp, path) in &staged {
            fs::rename(tmp, path).map_err(io(path))?;
            sync_parent(path);
        }
        Ok(())
    }

    /// Writes or removes the root key and the journal where they differ from `base`.
    pub fn write_custody(&self, base: &Custody, custody: &Custody) -> Result<(), StoreError> {
        for (path, new, old) in [
            (&self.root_key, &custody.root_key, &base.root_key),
            (&self.journal, &custody.journal, &base.journal),
        ] {
            if new == old {
                continue;
            }
            match new {
                Some(data) => {
                    ensure_dir(path)?;
                    let tmp = write_temp(path, data).map_err(io(path))?;
                    fs::rename(&tmp, path).map_err(io(path))?;
                }
                None => match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(path)(e)),
                },
            }
            sync_parent(path);
        }
        Ok(())
    }
}

fn ensure_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir)),
        None => Ok(()),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

pub(super) fn write_temp(path: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub(super) fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry_core::bundle::{generate, CaParams, KeyType};
    use sentry_core::spiffe::TrustDomain;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn store(dir: &Path) -> FileStore {
        FileStore::new(CredentialPaths::new(
            dir,
            "ca.crt",
            "issuer.crt",
            "issuer.key",
        ))
    }

    #[test]
    fn write_then_read_round_trips_with_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds/nested");
        let s = store(&dir);
        assert!(s.snapshot().unwrap().files.is_none());
        let params = CaParams::new(
            TrustDomain::public(),
            "default",
            KeyType::EcdsaP256,
            Duration::ZERO,
        );
        let g = generate(&params, time::OffsetDateTime::now_utc()).unwrap();
        let files = Files::of(&g.bundle);
        s.write_files(None, &files).unwrap();
        let custody = Custody {
            root_key: Some(g.root_key_pem.into_bytes()),
            journal: None,
        };
        s.write_custody(&Custody::default(), &custody).unwrap();
        for f in ["ca.crt", "issuer.crt", "issuer.key", "root.key"] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.files.as_ref(), Some(&files));
        assert_eq!(snap.custody, custody);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 4, "no temp files left");
        s.write_custody(&custody, &Custody::default()).unwrap();
        assert!(!dir.join("root.key").exists());
    }

    #[test]
    fn partial_bundle_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("ca.crt"), "x").unwrap();
        let err = store(tmp.path()).snapshot().unwrap_err().to_string();
        assert!(err.contains("incomplete trust bundle"), "{err}");
        assert!(err.contains("issuer.key"), "{err}");
    }
}
