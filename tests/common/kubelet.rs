//! What the kubelet does with a Secret volume, for a Sentry run outside a pod: the Secret's keys
//! projected into a directory the way the kubelet's atomic writer does it (a new timestamped
//! directory `..YYYY_MM_DD_HH_MM_SS.N` with the files, a `..data_tmp` symlink to it renamed over
//! `..data`, one `KEY -> ..data/KEY` symlink per key, the old directory removed), repeated on
//! every change of the Secret seen by a watch.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use kube::Api;

/// Writes `data` into `dir` as the kubelet updates a Secret volume (see the module docs).
pub(crate) fn project(dir: &Path, data: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let stamp = time::OffsetDateTime::now_utc();
    let name = format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        stamp.nanosecond()
    );
    let ts = dir.join(&name);
    std::fs::create_dir(&ts).unwrap();
    for (key, value) in data {
        std::fs::write(ts.join(key), value).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&name, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for key in data.keys() {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(key), &link).unwrap();
        }
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.starts_with("..") && !data.contains_key(&file) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old.filter(|o| *o != Path::new(&name)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
}

/// A Secret projected into a directory and kept up to date, like a pod's Secret volume.
pub(crate) struct SecretVolume {
    pub dir: PathBuf,
    projected: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SecretVolume {
    /// Projects Secret `ns/name` into `dir` now (empty if it does not exist) and on every change.
    pub(crate) async fn start(client: &kube::Client, ns: &str, name: &str, dir: &Path) -> Self {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let first = api.get_opt(name).await.unwrap();
        project(dir, &data_of(first.as_ref()));
        let projected = Arc::new(Mutex::new(
            first
                .and_then(|s| s.metadata.resource_version)
                .map(|v| (v, std::time::Instant::now()))
                .into_iter()
                .collect::<Vec<_>>(),
        ));
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (dir2, seen) = (dir.to_path_buf(), projected.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event {
                    let version = s.metadata.resource_version.clone().unwrap_or_default();
                    if !seen.lock().unwrap().iter().any(|(v, _)| *v == version) {
                        project(&dir2, &data_of(Some(&s)));
                        seen.lock()
                            .unwrap()
                            .push((version, std::time::Instant::now()));
                    }
                }
            }
        });
        Self {
            dir: dir.to_path_buf(),
            projected,
            task,
        }
    }

    /// Waits (up to 10 s) until the Secret at `version` is projected; returns when that was.
    pub(crate) async fn projected(&self, version: &str) -> std::time::Instant {
        for _ in 0..200 {
            let found = {
                let seen = self.projected.lock().unwrap();
                seen.iter().find(|(v, _)| v == version).map(|(_, at)| *at)
            };
            if let Some(at) = found {
                return at;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "Secret version {version} not projected into {}",
            self.dir.display()
        );
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn data_of(secret: Option<&Secret>) -> BTreeMap<String, Vec<u8>> {
    secret
        .and_then(|s| s.data.as_ref())
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}
