//! `egressd audit`: what would the policy block, given HAR files or URL
//! lists of real traffic?

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{bad_input, load, progress, read_lines};
use crate::audit::render::{render, Format};
use crate::audit::{self, har, logs, netlog, Observation, Summary};
use crate::policy::Policy;

/// What `egressd audit` was asked.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Policy file; `None` for the built-in policy.
    pub policy: Option<PathBuf>,
    pub har: Vec<PathBuf>,
    pub urls: Vec<PathBuf>,
    /// Chromium NetLog files.
    pub netlog: Vec<PathBuf>,
    /// Decide https URLs with their path instead of as a CONNECT.
    pub with_paths: bool,
    /// The proxy runs with a CA: https URLs of inspected hosts are decided with their path.
    pub inspect: bool,
    pub format: Format,
    /// Exit 0 even when something would be denied.
    pub exit_zero: bool,
    /// Show URLs with their query strings (tokens, user ids): off by
    /// default, so that a report can go into a ticket.
    pub keep_query: bool,
}

pub fn audit(args: AuditOptions) -> ExitCode {
    super::errors_as_json(args.format == Format::Json);
    let policy = match load(args.policy.as_deref()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if args.har.is_empty() && args.urls.is_empty() && args.netlog.is_empty() {
        return bad_input("nothing to audit: give --har FILE, --netlog FILE or --urls FILE");
    }
    let mut summary = Summary::default();
    let connect = if args.with_paths {
        audit::HttpsAs::Path
    } else {
        audit::HttpsAs::Proxy {
            inspect: args.inspect,
        }
    };
    for path in &args.har {
        if let Err(e) = replay_har(&policy, path, (connect, args.keep_query), &mut summary) {
            return bad_input(format!("{}: {e}", path.display()));
        }
    }
    for path in &args.netlog {
        if let Err(e) = replay_netlog(&policy, path, (connect, args.keep_query), &mut summary) {
            return bad_input(format!("{}: {e}", path.display()));
        }
    }
    for path in &args.urls {
        match read_lines(path) {
            Ok(lines) => {
                for l in lines {
                    match Observation::parse(&l) {
                        Some(o) => {
                            let o = shown(o, &l, args.keep_query);
                            audit::audit(&policy, std::iter::once(o), connect, &mut summary)
                        }
                        None => summary.unreadable += 1,
                    }
                }
            }
            Err(e) => return bad_input(format!("{}: {e}", path.display())),
        }
    }
    summary.finish();
    let title = format!("egressd audit: policy {} ({})", policy.origin(), policy.version());
    print!("{}", render(&summary, None, args.format, &title, &[]));
    super::denied_exit(&summary, args.exit_zero)
}

/// How https URLs are decided, and whether query strings are shown.
type How = (audit::HttpsAs, bool);

/// The observation shown with its whole URL when asked (`--keep-query`).
fn shown(mut o: Observation, url: &str, keep_query: bool) -> Observation {
    if keep_query {
        o.target = url.to_string();
    }
    o
}

/// A request as a browser reported it, decided as the proxy would.
fn replay_one(
    policy: &Policy,
    method: &str,
    url: &str,
    hour: Option<i64>,
    (connect, keep_query): How,
    summary: &mut Summary,
) -> bool {
    // data:, blob:, chrome-extension: and the like never reach a proxy;
    // nor does the browser's own fetch of its proxy configuration.
    if !(url.starts_with("http://") || url.starts_with("https://")) || audit::is_proxy_config(url) {
        return true;
    }
    match Observation::parse(url).map(|o| o.with_method(method)) {
        Some(o) => {
            let mut o = shown(o, url, keep_query);
            o.time = hour;
            audit::audit(policy, std::iter::once(o), connect, summary);
            true
        }
        None => false,
    }
}

type Progressed = BufReader<indicatif::ProgressBarIter<std::fs::File>>;

/// A browser export opened for streaming, with a progress bar on a terminal.
fn open_with_progress(path: &Path) -> Result<(Progressed, indicatif::ProgressBar), String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = progress(len);
    Ok((BufReader::with_capacity(1 << 16, pb.wrap_read(f)), pb))
}

fn replay_netlog(policy: &Policy, path: &Path, how: How, summary: &mut Summary) -> Result<(), String> {
    let (reader, pb) = open_with_progress(path)?;
    let mut unreadable = 0u64;
    let end = netlog::for_each_request(reader, |req| {
        let hour = req.time_ms.map(|t| t.div_euclid(3_600_000));
        if !replay_one(policy, &req.method, &req.url, hour, how, summary) {
            unreadable += 1;
        }
    })
    .map_err(|e| format!("not a readable NetLog file: {e}"))?;
    pb.finish_and_clear();
    if end == netlog::End::Truncated {
        eprintln!(
            "{}: the NetLog ends early (was Chromium stopped while writing it?); requests before the cut were read",
            path.display()
        );
    }
    summary.unreadable += unreadable;
    Ok(())
}

fn replay_har(policy: &Policy, path: &Path, how: How, summary: &mut Summary) -> Result<(), String> {
    let (reader, pb) = open_with_progress(path)?;
    let mut unreadable = 0u64;
    har::for_each_request(reader, |req| {
        let hour = req.started.as_deref().and_then(logs::hour_of);
        if !replay_one(policy, &req.method, &req.url, hour, how, summary) {
            unreadable += 1;
        }
    })
    .map_err(|e| format!("not a readable HAR file: {e}"))?;
    pb.finish_and_clear();
    summary.unreadable += unreadable;
    Ok(())
}
