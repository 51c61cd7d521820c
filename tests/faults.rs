//! Standalone faults: a read-only or full credentials directory at first start (a real tmpfs,
//! mounted, so these tests need root and fail without it) gives a clear error, exit
//! code 1, the old files intact and no temporary files; SIGTERM during a burst of requests lets
//! in-flight requests finish or fail cleanly, exits 0 and leaves nothing half-written.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sentry_core::bundle::KeyType;
use tokio::sync::mpsc;

/// A small tmpfs mounted for one test and unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs at `path`; these tests need root (as `.ci/run` has) and fail without it.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount (util-linux)");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(path.to_path_buf())
    }

    fn remount_read_only(&self) {
        run_ok(
            Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.0),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system at `dir` so that exactly `free_pages` 4 KiB pages remain.
fn fill(dir: &Path, free_pages: usize) {
    let spares: Vec<PathBuf> = (0..free_pages)
        .map(|i| {
            let p = dir.join(format!("spare-{i}"));
            std::fs::write(&p, [0u8; 4096]).unwrap();
            p
        })
        .collect();
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    drop(filler);
    for p in spares {
        std::fs::remove_file(p).unwrap();
    }
}

fn assert_refused_cleanly(dir: &Path, creds: &Path, expected: &str) {
    let before = snapshot(creds);
    let out = run_to_exit(dir, Opts::default());
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains(expected), "{expected:?} not in:\n{log}");
    assert!(
        log.contains(&creds.display().to_string()),
        "error does not name the directory:\n{log}"
    );
    assert_eq!(snapshot(creds), before, "credentials directory changed");
}

#[test]
fn read_only_credentials_directory_at_first_start() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    let fs = Tmpfs::mount(&creds, "64k");
    std::fs::write(creds.join("keep.txt"), "operator notes").unwrap();
    fs.remount_read_only();
    assert_refused_cleanly(tmp.path(), &creds, "Read-only file system");
}

#[test]
fn full_credentials_directory_at_first_start() {
    // 0 free pages: the first file fails; 1 or 2: one or two temporary files were written
    // before the failure and must be removed again.
    for free_pages in [0, 1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let creds = tmp.path().join("creds");
        let _fs = Tmpfs::mount(&creds, "64k");
        std::fs::write(creds.join("keep.txt"), "operator notes").unwrap();
        fill(&creds, free_pages);
        assert_refused_cleanly(tmp.path(), &creds, "No space left on device");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_drains_and_exits_zero() {
    const REQUESTS: usize = 3000;
    const BEFORE_SIGNAL: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Sentry::start(tmp.path(), Opts::default());
    let creds_before = snapshot(&s.creds());
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(s.client().await);
    }
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| request(&format!("app-{i}"), "default", KeyType::Ed25519))
        .collect();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, req) in requests.into_iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        let done = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.sign_certificate(req).await.map(|r| r.into_inner());
            let _ = done.send(());
            (i, r)
        }));
    }
    for _ in 0..BEFORE_SIGNAL {
        done_rx.recv().await.unwrap();
    }
    run_ok(
        Command::new("kill")
            .arg("-TERM")
            .arg(s.child.id().to_string()),
    );

    // Every request ends (hang detector, not a timing assertion).
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    })
    .await
    .expect("requests hung after SIGTERM");
    let anchors = Arc::new(s.anchors());
    let mut ok = 0;
    let mut codes = BTreeMap::new();
    for (i, r) in all {
        match r {
            Ok(resp) => {
                let chain = pem_certs(&resp.workload_certificate);
                assert_eq!(chain.len(), 2, "request {i}: truncated chain");
                let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
                let (_, issuer) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
                leaf.verify_signature(Some(issuer.public_key())).unwrap();
                assert!(!resp.trust_chain_certificates.is_empty());
                assert_eq!(resp.trust_chain_certificates[0], *anchors);
                ok += 1;
            }
            Err(status) => {
                assert!(
                    !matches!(
                        status.code(),
                        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                    ),
                    "request {i}: {status:?}"
                );
                codes
                    .entry(format!("{:?}", status.code()))
                    .or_insert((0, status.message().to_owned()))
                    .0 += 1;
            }
        }
    }
    eprintln!("after SIGTERM: {ok} issued, failures by code: {codes:?}");
    assert!(ok >= BEFORE_SIGNAL);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "sentry did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = s.log_text();
    let processed = log.matches("Processing SignCertificate request").count();
    eprintln!("server processed {processed} requests");
    // Every request the server started was answered: nothing was dropped half-way.
    assert_eq!(processed, ok, "requests processed but not answered");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("Sentry shut down gracefully"), "{log}");
    assert_eq!(snapshot(&s.creds()), creds_before, "credentials changed");
}
