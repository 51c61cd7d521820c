//! How a running Sentry learns that the stored bundle may have changed, without polling the API
//! server. In Kubernetes mode, in order of preference:
//!
//! 1. the Secret volume mounted at `--issuer-credentials` (as Dapr's chart mounts it), watched
//!    with inotify: the kubelet updates it by writing a new timestamped directory and swapping the
//!    `..data` symlink, which shows up here as directory events;
//! 2. without a volume, a watch on Secret `dapr-trust-bundle`, where RBAC allows it (the chart
//!    does not: it is asked with an access review first, so nothing is refused);
//! 3. otherwise a watch on ConfigMap `dapr-trust-bundle` (the chart allows it; it shows changes to
//!    the anchors), and the Secret is re-read every `--bundle-resync-interval`.
//!
//! A notification only says "read again": the reader (the rotator) confirms with one read of the
//! store. Whatever the source, [`Changes::next`] also resolves every `--bundle-resync-interval`
//! as a safety re-read. A directory store (standalone mode) is local: it is polled every
//! `--bundle-check-interval`. Owns no store data and makes no store call.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::kube::TRUST_BUNDLE;
use super::{rbac, Store};

/// Events of one kubelet update (new directory, symlink swap, old directory removed) arrive
/// together: wait this long after the first one, then read once.
const SETTLE: Duration = Duration::from_millis(100);

/// "The store may have changed" notifications, plus a periodic re-read.
pub struct Changes {
    notified: Arc<Notify>,
    period: Duration,
    /// Keeps the inotify watch alive.
    _volume: Option<notify::RecommendedWatcher>,
}

impl Changes {
    /// Notifications only at every `period` (a directory store: local reads).
    pub fn every(period: Duration) -> Self {
        Self {
            notified: Arc::new(Notify::new()),
            period,
            _volume: None,
        }
    }

    /// The best source for `store` (see the module docs): `volume` is `--issuer-credentials`,
    /// `check` the poll period of a directory store, `resync` the safety re-read period.
    pub async fn start(store: &Store, volume: &Path, check: Duration, resync: Duration) -> Self {
        let Store::Kube(kube) = store else {
            return Self::every(check);
        };
        let mut changes = Self::every(resync);
        let resync_text = humantime(resync);
        if volume.is_dir() {
            match watch_volume(volume, changes.notified.clone()) {
                Ok(w) => {
                    info!(
                        volume = %volume.display(),
                        "Watching the mounted trust-bundle Secret for changes; the Secret is also re-read every {resync_text}"
                    );
                    changes._volume = Some(w);
                    return changes;
                }
                Err(e) => {
                    warn!(volume = %volume.display(), error = %e, "Cannot watch the trust-bundle volume; falling back to the API server")
                }
            }
        }
        let (client, namespace, secrets, config_maps) = kube.watch_parts();
        let notified = changes.notified.clone();
        if may_watch(client, namespace, "secrets").await {
            info!("No trust-bundle volume at {}: watching Secret {namespace}/{TRUST_BUNDLE}; also re-read every {resync_text}", volume.display());
            tokio::spawn(watch_object(secrets.clone(), notified));
        } else if may_watch(client, namespace, "configmaps").await {
            info!(
                "No trust-bundle volume at {} and RBAC does not allow watching Secret {namespace}/{TRUST_BUNDLE}: watching ConfigMap {TRUST_BUNDLE} and re-reading the Secret every {resync_text} (mount the Secret at --issuer-credentials, as Dapr's chart does, to see issuer changes at once)",
                volume.display()
            );
            tokio::spawn(watch_object(config_maps.clone(), notified));
        } else {
            info!(
                "No trust-bundle volume at {} and RBAC allows no watch: re-reading Secret {namespace}/{TRUST_BUNDLE} every {resync_text}",
                volume.display()
            );
        }
        changes
    }

    /// Resolves when the store may have changed, or after the period at the latest.
    pub async fn next(&self) {
        let notified = tokio::time::timeout(self.period, self.notified.notified())
            .await
            .is_ok();
        if notified {
            tokio::time::sleep(SETTLE).await;
        }
    }
}

/// True when RBAC allows a watch (a list, then a watch) of the trust-bundle object of `kind`.
async fn may_watch(client: &kube::Client, namespace: &str, kind: &str) -> bool {
    rbac::allows(client, namespace, "list", kind, TRUST_BUNDLE).await
        && rbac::allows(client, namespace, "watch", kind, TRUST_BUNDLE).await
}

fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s >= 1 => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// An inotify watch on the volume directory itself (not recursive: the kubelet's swap of
/// `..data` and the timestamped directories are entries of it).
fn watch_volume(dir: &Path, notified: Arc<Notify>) -> notify::Result<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
        _ => notified.notify_one(),
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}

/// Notifies on every change of the object named [`TRUST_BUNDLE`] (a watch restricted to that name,
/// which RBAC with `resourceNames` allows), forever; the watch resumes after errors.
async fn watch_object<K>(api: Api<K>, notified: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={TRUST_BUNDLE}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                failing = false;
                notified.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                if !failing {
                    warn!(error = %e, "Watch of {TRUST_BUNDLE} failed; resuming it");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[tokio::test]
    async fn a_kubelet_style_data_swap_notifies_and_reading_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_12_01_10_00_00.1")).unwrap();
        std::fs::write(d.join("..2026_12_01_10_00_00.1/ca.crt"), "old").unwrap();
        symlink("..2026_12_01_10_00_00.1", d.join("..data")).unwrap();
        symlink("..data/ca.crt", d.join("ca.crt")).unwrap();
        let notified = Arc::new(Notify::new());
        let _watch = watch_volume(d, notified.clone()).unwrap();

        assert_eq!(std::fs::read_to_string(d.join("ca.crt")).unwrap(), "old");
        let _ = std::fs::read_dir(d).unwrap().count();
        let quiet = tokio::time::timeout(Duration::from_millis(300), notified.notified()).await;
        assert!(quiet.is_err(), "reading the volume is no change");

        std::fs::create_dir(d.join("..2026_12_01_10_05_00.2")).unwrap();
        std::fs::write(d.join("..2026_12_01_10_05_00.2/ca.crt"), "new").unwrap();
        symlink("..2026_12_01_10_05_00.2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_12_01_10_00_00.1")).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), notified.notified()).await;
        assert!(seen.is_ok(), "the ..data swap is seen");
        assert_eq!(std::fs::read_to_string(d.join("ca.crt")).unwrap(), "new");
    }
}
