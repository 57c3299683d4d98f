//! Hot reload: on SIGHUP and when the policy file changes. The new policy is
//! compiled off the request path and swapped in atomically; a policy that
//! does not compile is logged, counted, and the old one keeps serving.
//!
//! The file's directory is watched, not the file: Kubernetes updates a
//! ConfigMap volume by swapping a `..data` symlink, which never touches the
//! file's own inode.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::metrics::ResultLabels;
use crate::policy::{Mode, Policy};
use crate::proxy::Shared;

/// Reloads one policy file into a running proxy.
pub struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    mode: Option<Mode>,
    /// Hash of the source last tried, so that a file seen again unchanged
    /// (e.g. a broken one) is not recompiled and re-reported on every event.
    last_tried: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>, path: PathBuf, mode: Option<Mode>) -> Arc<Reloader> {
        Arc::new(Reloader {
            shared,
            path,
            mode,
            last_tried: std::sync::Mutex::new(None),
        })
    }

    /// Reads and compiles the file; swaps it in if it differs from the
    /// loaded policy. Returns whether it swapped.
    pub async fn reload(&self, trigger: &'static str) -> Result<bool, String> {
        let path = self.path.clone();
        let src = match tokio::fs::read(&path).await {
            Ok(s) => s,
            Err(e) => return self.failed(trigger, format!("cannot read {}: {e}", path.display())),
        };
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&src).to_vec();
        {
            let mut last = self.last_tried.lock().unwrap_or_else(|e| e.into_inner());
            // An explicit SIGHUP always retries; file events only act on new content.
            if trigger != "sighup" && last.as_deref() == Some(digest.as_slice()) {
                return Ok(false);
            }
            *last = Some(digest);
        }
        let mode = self.mode;
        let compiled = tokio::task::spawn_blocking(move || -> Result<Policy, String> {
            let p = Policy::load(Some(&path)).map_err(|e| e.to_string())?;
            Ok(match mode {
                Some(m) => p.with_mode(m),
                None => p,
            })
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let metrics = &self.shared.metrics;
        match compiled {
            Ok(p) => {
                let old = self.shared.policy.load();
                // An emptied or truncated file is valid and denies
                // everything: one editor save would be an outage.
                if p.rules().is_empty() && !old.rules().is_empty() && !says_empty(&src) {
                    return self.failed(
                        trigger,
                        format!(
                            "{} has no rules (emptied or cut short?): it would deny everything; \
                             write `allow = []` in it if that is meant",
                            self.path.display()
                        ),
                    );
                }
                if old.version() == p.version() && old.mode() == p.mode() {
                    tracing::debug!(trigger, version = p.version(), "policy unchanged");
                    return Ok(false);
                }
                tracing::info!(
                    trigger,
                    old_version = old.version(),
                    version = p.version(),
                    rules = p.rules().len(),
                    mode = %p.mode(),
                    "policy reloaded"
                );
                self.shared.store_policy(p);
                metrics
                    .reloads
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                Ok(true)
            }
            Err(e) => self.failed(trigger, e),
        }
    }

    fn failed(&self, trigger: &'static str, e: String) -> Result<bool, String> {
        tracing::error!(
            trigger,
            error = %e,
            version = self.shared.policy.load().version(),
            "policy reload failed; keeping the loaded policy"
        );
        self.shared
            .metrics
            .reloads
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
        Err(e)
    }
}

/// Whether a policy source names its rule lists, empty as they may be
/// (`allow = []`): a policy meant to deny everything, not a cut-off file.
fn says_empty(src: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(src) else {
        return false;
    };
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("allow") || t.contains_key("deny"))
}

/// How long the policy's directory must be quiet before a change is read,
/// and the longest a reload waits for that.
const SETTLE: Duration = Duration::from_millis(200);
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// On every SIGHUP until the proxy is cut, reloads the policy file (when
/// there is one), the credentials file (with `--auth`), the CA and the TLS
/// listener's certificate, and reopens the access log file. Also keeps a
/// stray SIGHUP from ending a proxy that has nothing to reload.
pub fn on_sighup(shared: Arc<Shared>, reloader: Option<Arc<Reloader>>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        loop {
            tokio::select! {
                _ = shared.cut.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            crate::logsink::reopen();
            if let Some(r) = &reloader {
                let _ = r.reload("sighup").await;
            }
            if let Some(auth) = shared.config.auth.clone() {
                reload_users(auth).await;
            }
            if shared.config.ca_dir.is_some() {
                reload_certificates(shared.clone(), "CA", Shared::load_inspector).await;
            }
            if shared.config.tls_cert.is_some() {
                reload_certificates(
                    shared.clone(),
                    "TLS listener certificate",
                    Shared::load_listener_tls,
                )
                .await;
            }
        }
    });
}

/// Rereads certificates off the request path (the CA and upstream roots,
/// or the TLS listener's certificate); what does not load leaves the old
/// ones (and the certificates they made) serving.
async fn reload_certificates(
    shared: Arc<Shared>,
    what: &'static str,
    load: fn(&Shared) -> Result<Option<String>, String>,
) {
    match tokio::task::spawn_blocking(move || load(&shared)).await {
        Ok(Ok(fp)) => tracing::info!(sha256 = fp.as_deref().unwrap_or(""), "{what} reloaded"),
        Ok(Err(e)) => tracing::error!(error = %e, "{what} not reloaded; the loaded one stays"),
        Err(e) => tracing::error!(error = %e, "{what} not reloaded; the loaded one stays"),
    }
}

/// Rereads the credentials file (`--auth`) off the request path; a file
/// that does not load leaves the users as they were.
async fn reload_users(auth: Arc<crate::proxy::auth::Authenticator>) {
    let path = auth.path().display().to_string();
    match tokio::task::spawn_blocking(move || auth.reload()).await {
        Ok(Ok(n)) => tracing::info!(file = %path, users = n, "users reloaded"),
        Ok(Err(e)) => tracing::warn!(file = %path, error = %e, "users not reloaded; the loaded ones stay"),
        Err(e) => tracing::warn!(file = %path, error = %e, "users not reloaded; the loaded ones stay"),
    }
}

/// Watches the policy file's directory and reloads when something in it
/// changes (debounced). The returned watcher must be kept alive.
pub fn watch(reloader: Arc<Reloader>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = reloader
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own reads show up as access events: only changes count.
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    // When the path is a symlink, edits to its target happen elsewhere: watch there too.
    if let Some(real_dir) = std::fs::canonicalize(&reloader.path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if std::fs::canonicalize(dir).ok().as_deref() != Some(real_dir.as_path()) {
            watcher.watch(&real_dir, RecursiveMode::NonRecursive)?;
        }
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = reloader.shared.cut.cancelled() => return,
                ev = rx.recv() => if ev.is_none() { return },
            }
            // Editors and ConfigMap updates write in several steps: read
            // once the directory has been quiet for SETTLE (at most SETTLE_MAX).
            let started = std::time::Instant::now();
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) if started.elapsed() < SETTLE_MAX => continue,
                    Ok(None) => return,
                    _ => break,
                }
            }
            let _ = reloader.reload("file-change").await;
        }
    });
    Ok(watcher)
}
