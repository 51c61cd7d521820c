//! The standalone store: `ca.crt`, `issuer.crt` and `issuer.key` in a directory.
//!
//! Loads only a complete set (a partial set is refused, never overwritten), verifies it, and
//! writes new files with mode 0600 through a temporary file and an atomic rename.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::StoreError;
use crate::bundle::{self, Bundle, BundlePart};
use crate::config::CredentialPaths;

/// A bundle kept in files.
#[derive(Debug, Clone)]
pub struct FileStore {
    paths: CredentialPaths,
}

impl FileStore {
    /// A store at `paths`.
    pub fn new(paths: CredentialPaths) -> Self {
        Self { paths }
    }

    /// The file paths.
    pub fn paths(&self) -> &CredentialPaths {
        &self.paths
    }

    fn path_of(&self, part: BundlePart) -> &Path {
        match part {
            BundlePart::Anchors => &self.paths.anchors,
            BundlePart::IssuerChain => &self.paths.issuer_cert,
            BundlePart::IssuerKey => &self.paths.issuer_key,
        }
    }

    /// Reads and verifies the bundle. `Ok(None)` when none of the three files exists.
    pub fn load(&self, now: OffsetDateTime) -> Result<Option<Bundle>, StoreError> {
        let parts = [
            BundlePart::Anchors,
            BundlePart::IssuerChain,
            BundlePart::IssuerKey,
        ];
        let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(3);
        for part in parts {
            let path = self.path_of(part);
            match fs::read(path) {
                Ok(bytes) => contents.push(Some(bytes)),
                Err(e) if e.kind() == ErrorKind::NotFound => contents.push(None),
                Err(source) => {
                    return Err(StoreError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let names = |present: bool| -> String {
            parts
                .iter()
                .zip(&contents)
                .filter(|(_, c)| c.is_some() == present)
                .map(|(p, _)| self.path_of(*p).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match contents.as_slice() {
            [None, None, None] => Ok(None),
            [Some(anchors), Some(chain), Some(key)] => bundle::verify(anchors, chain, key, now)
                .map(Some)
                .map_err(|source| StoreError::Invalid {
                    path: self.path_of(source.part).to_path_buf(),
                    source,
                }),
            _ => Err(StoreError::Partial {
                present: names(true),
                missing: names(false),
            }),
        }
    }

    /// Writes the bundle (creating the directory), each file 0600 via temp file + rename.
    pub fn save(&self, bundle: &Bundle) -> Result<(), StoreError> {
        let files = [
            (&self.paths.issuer_key, bundle.issuer_key_pem.as_bytes()),
            (&self.paths.issuer_cert, bundle.issuer_chain_pem.as_bytes()),
            (&self.paths.anchors, bundle.anchors_pem.as_bytes()),
        ];
        for (path, _) in &files {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| StoreError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        // Stage every file first so that a full disk or a read-only directory changes nothing.
        let mut staged = Vec::with_capacity(files.len());
        for (path, data) in &files {
            match write_temp(path, data) {
                Ok(tmp) => staged.push((tmp, (*path).clone())),
                Err(source) => {
                    for (tmp, _) in &staged {
                        let _ = fs::remove_file(tmp);
                    }
                    return Err(StoreError::Io {
                        path: (*path).clone(),
                        source,
                    });
                }
            }
        }
        for (tmp, path) in &staged {
            fs::rename(tmp, path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
            sync_parent(path);
        }
        Ok(())
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn write_temp(path: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
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

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{generate, KeyType};
    use crate::spiffe::TrustDomain;
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
    fn save_then_load_round_trips_with_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds/nested");
        let s = store(&dir);
        let now = OffsetDateTime::now_utc();
        assert!(s.load(now).unwrap().is_none());
        let b = generate(
            &TrustDomain::public(),
            "default",
            KeyType::EcdsaP256,
            Duration::ZERO,
            now,
        )
        .unwrap();
        s.save(&b).unwrap();
        for f in ["ca.crt", "issuer.crt", "issuer.key"] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let loaded = s.load(now).unwrap().unwrap();
        assert_eq!(loaded.anchors_pem, b.anchors_pem);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3, "no temp files left");
    }

    #[test]
    fn partial_bundle_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("ca.crt"), "x").unwrap();
        let err = store(tmp.path())
            .load(OffsetDateTime::now_utc())
            .unwrap_err()
            .to_string();
        assert!(err.contains("incomplete trust bundle"), "{err}");
        assert!(err.contains("issuer.key"), "{err}");
    }
}
