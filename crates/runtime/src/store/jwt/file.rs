//! The standalone store of the JWT part: `jwt.key` and `jwks.json` (paths resolved by
//! the JWT settings). Loads only a complete pair (one file without the other is
//! refused, never overwritten), verifies it, and writes new files 0600 via temp file + rename.

use std::fs;
use std::path::PathBuf;

use super::{verify_pair, JwtStoreError};
use crate::store::file::{io, read_opt, sync_parent, write_temp};
use sentry_core::bundle::jwt::{JwtBundle, JwtKeySettings, JwtPart};

/// The JWT key and JWKS kept in files.
#[derive(Debug, Clone)]
pub struct JwtFileStore {
    key: PathBuf,
    jwks: PathBuf,
}

impl JwtFileStore {
    /// A store with the key at `key` and the JWKS at `jwks`.
    pub fn new(key: PathBuf, jwks: PathBuf) -> Self {
        Self { key, jwks }
    }

    /// Reads and verifies the pair; `Ok(None)` when neither file exists.
    pub fn load(&self, settings: &JwtKeySettings) -> Result<Option<JwtBundle>, JwtStoreError> {
        verify_pair(
            read_opt(&self.key)?,
            read_opt(&self.jwks)?,
            settings,
            |part| match part {
                JwtPart::Key => self.key.display().to_string(),
                JwtPart::Jwks => self.jwks.display().to_string(),
            },
        )
    }

    /// Writes both files (mode 0600), the JWKS last.
    pub fn save(&self, bundle: &JwtBundle) -> Result<(), JwtStoreError> {
        for (path, data) in [
            (&self.key, bundle.key_pem.as_bytes()),
            (&self.jwks, bundle.jwks_json.as_bytes()),
        ] {
            let tmp = write_temp(path, data).map_err(io(path))?;
            fs::rename(&tmp, path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io(path)(e)
            })?;
            sync_parent(path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry_core::bundle::jwt::generate_jwt;
    use sentry_core::jose::Algorithm;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_partial_and_invalid() {
        let tmp = tempfile::tempdir().unwrap();
        let store = JwtFileStore::new(tmp.path().join("jwt.key"), tmp.path().join("jwks.json"));
        let settings = JwtKeySettings {
            algorithm: Algorithm::ES256,
            key_id: None,
        };
        assert!(store.load(&settings).unwrap().is_none());
        let b = generate_jwt(&settings).unwrap();
        store.save(&b).unwrap();
        for f in ["jwt.key", "jwks.json"] {
            let mode = fs::metadata(tmp.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let loaded = store.load(&settings).unwrap().unwrap();
        assert_eq!(loaded.kid, b.kid);
        assert_eq!(loaded.jwks_json, b.jwks_json);

        fs::write(tmp.path().join("jwks.json"), "{").unwrap();
        let err = store.load(&settings).unwrap_err().to_string();
        assert!(
            err.contains("jwks.json") && err.contains("invalid JWKS"),
            "{err}"
        );
        fs::remove_file(tmp.path().join("jwks.json")).unwrap();
        let err = store.load(&settings).unwrap_err().to_string();
        assert!(err.contains("incomplete JWT credentials"), "{err}");
    }
}
