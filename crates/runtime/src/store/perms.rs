//! Permission checks on key material read from disk: a CA private-key file readable by group or
//! others, or a credentials directory writable by them (where anyone could swap the issuer),
//! stops a standalone Sentry at start-up with the `chmod` that fixes it. In Kubernetes mode the
//! same findings are one warning, since a mounted Secret volume is 0644 unless its
//! `defaultMode` says otherwise and the pod's filesystem is not shared.
//!
//! Only checks modes; never changes them (Sentry writes its own files 0600 in a 0700 directory,
//! see [`super::file`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::file::CredentialPaths;
use super::file::ROOT_KEY_FILE;

/// Key material with permissions looser than allowed.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct LoosePermissions(Vec<Finding>);

/// One path whose mode is too open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    path: PathBuf,
    mode: u32,
    is_dir: bool,
}

impl Finding {
    fn fix(&self) -> String {
        let how = if self.is_dir { "go-w" } else { "go-rwx" };
        format!("chmod {how} '{}'", self.path.display())
    }
}

fn describe(findings: &[Finding]) -> String {
    let parts: Vec<String> = findings
        .iter()
        .map(|f| {
            let what = if f.is_dir {
                "credentials directory is writable by group or others"
            } else {
                "private key is readable by group or others"
            };
            format!(
                "{} (mode {:04o}): {what}; run `{}`",
                f.path.display(),
                f.mode,
                f.fix()
            )
        })
        .collect();
    parts.join("; ")
}

/// Checks the private keys Sentry reads from disk (the bundle's, `jwt_key` and the OIDC server's
/// `tls_key`) and the directories holding them. In standalone mode loose `issuer.key`,
/// `root.key` or `jwt.key` (or a loose directory of theirs) are refused; the OIDC TLS key, the
/// operator's serving key, only gets the warning. In Kubernetes mode every finding is one warning.
pub fn check(
    creds: &CredentialPaths,
    jwt_key: Option<&Path>,
    tls_key: Option<&Path>,
    kubernetes: bool,
) -> Result<(), LoosePermissions> {
    let dir = creds.anchors.parent().unwrap_or(Path::new("."));
    let root_key = dir.join(ROOT_KEY_FILE);
    let mut keys: Vec<&Path> = vec![&creds.issuer_key, &root_key];
    keys.extend(jwt_key);
    let mut dirs: Vec<&Path> = vec![dir];
    for key in &keys {
        if let Some(parent) = key.parent().filter(|p| !dirs.contains(p)) {
            dirs.push(parent);
        }
    }
    if kubernetes {
        keys.extend(tls_key);
        warn_loose(&keys, &dirs);
        Ok(())
    } else {
        warn_loose(&Vec::from_iter(tls_key), &[]);
        refuse_loose(&keys, &dirs)
    }
}

/// The findings among `keys` (private-key files; missing ones are skipped) and `dirs`.
pub fn findings(keys: &[&Path], dirs: &[&Path]) -> Vec<Finding> {
    let mode_of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    };
    let mut out = Vec::new();
    for dir in dirs {
        if let Some(mode) = mode_of(dir).filter(|m| m & 0o022 != 0) {
            out.push(Finding {
                path: dir.to_path_buf(),
                mode,
                is_dir: true,
            });
        }
    }
    for key in keys {
        if let Some(mode) = mode_of(key).filter(|m| m & 0o077 != 0) {
            out.push(Finding {
                path: key.to_path_buf(),
                mode,
                is_dir: false,
            });
        }
    }
    out
}

/// Standalone mode: an error naming every finding and its `chmod`.
pub fn refuse_loose(keys: &[&Path], dirs: &[&Path]) -> Result<(), LoosePermissions> {
    let found = findings(keys, dirs);
    if found.is_empty() {
        Ok(())
    } else {
        Err(LoosePermissions(found))
    }
}

/// Kubernetes mode: one warning naming every finding.
pub fn warn_loose(keys: &[&Path], dirs: &[&Path]) {
    let found = findings(keys, dirs);
    if !found.is_empty() {
        warn!(
            "Key material with loose permissions (a mounted Secret volume is 0644 unless its defaultMode is set): {}",
            describe(&found)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn loose_keys_and_writable_dirs_are_named_with_their_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds");
        std::fs::create_dir(&dir).unwrap();
        let key = dir.join("issuer.key");
        std::fs::write(&key, "k").unwrap();
        let missing = dir.join("root.key");
        chmod(&dir, 0o700);
        chmod(&key, 0o600);
        refuse_loose(&[&key, &missing], &[&dir]).unwrap();
        chmod(&key, 0o640);
        chmod(&dir, 0o777);
        let err = refuse_loose(&[&key], &[&dir]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("run `chmod go-w '{}'`", dir.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("run `chmod go-rwx '{}'`", key.display())),
            "{err}"
        );
        assert!(err.contains("(mode 0640)"), "{err}");
        chmod(&dir, 0o755);
        chmod(&key, 0o400);
        refuse_loose(&[&key], &[&dir]).unwrap();
    }
}
