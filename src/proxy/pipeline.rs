//! The request pipeline's steps as functions with typed results, in the
//! order the crate's overview numbers them ([`crate`], "The request
//! pipeline"): [`admit`] (1), [`connect_target`] / [`http_target`] (2),
//! [`decide`] (3), [`check_addresses`] (4), [`dial_failed`] (5, recorded),
//! [`refuse`] (7). The ways in only chain them and carry bytes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, Response, Uri};

use super::dial::DialError;
use super::parent::Parent;
use super::pool::Hop;
use super::respond::{Body, ProxyError};
use super::Shared;
use crate::access::Access;
use crate::dns::Source;
use crate::policy::{normalize_host, Candidate, Decision, Host, Kind, Policy, Refusal, Resolved, Via};
use crate::target::{self, split_host_port};

/// Who sent a request, and the policy that applies to them.
pub struct Admitted {
    pub policy: Arc<Policy>,
    /// The authenticated user, when the proxy requires authentication.
    pub user: Option<Arc<str>>,
}

impl Admitted {
    /// A redirected connection (transparent mode) carries no credentials:
    /// its network position admitted it, under the proxy's policy.
    pub fn redirected(shared: &Shared) -> Admitted {
        Admitted {
            policy: shared.policy.load_full(),
            user: None,
        }
    }
}

/// Step 1: authenticates the request when the proxy requires it, and picks
/// the policy that applies: the user's own, or the proxy's.
pub fn admit(shared: &Shared, headers: &HeaderMap, client: IpAddr) -> Result<Admitted, ProxyError> {
    let Some(a) = &shared.config.auth else {
        return Ok(Admitted {
            policy: shared.policy.load_full(),
            user: None,
        });
    };
    let p = a.check(headers, client).map_err(ProxyError::Auth)?;
    Ok(Admitted {
        policy: p.policy.unwrap_or_else(|| shared.policy.load_full()),
        user: Some(p.user),
    })
}

/// Step 2, CONNECT: authority-form `host:port` only.
pub fn connect_target(uri: &Uri) -> Result<Candidate, ProxyError> {
    target::connect_candidate(uri).map_err(|e| ProxyError::BadRequest(e.to_string()))
}

/// Step 2, plain HTTP: an absolute-form `http://` URI, read by the same
/// parser as `check`'s. The request target decides; a `Host` header that
/// names something else, or several `Host` headers, make the request
/// ambiguous, and it is refused.
pub fn http_target(method: &http::Method, uri: &Uri, headers: &HeaderMap) -> Result<Candidate, ProxyError> {
    if uri.scheme_str() != Some("http") {
        return Err(ProxyError::BadRequest(format!(
            "unsupported scheme {:?}: send https through CONNECT",
            uri.scheme_str().unwrap_or("")
        )));
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    let cand = target::candidate(Kind::Http, authority, Some(uri.path()))
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?
        .with_method(method.clone());
    check_host_header(headers, &cand)?;
    Ok(cand)
}

fn check_host_header(headers: &HeaderMap, cand: &Candidate) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let Some(h) = hosts.next() else { return Ok(()) };
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("several Host headers".into()));
    }
    let bad = || ProxyError::BadRequest("the Host header disagrees with the request target".into());
    let h = h.to_str().map_err(|_| bad())?;
    let (host, port) = split_host_port(h).map_err(|_| bad())?;
    // Spelled as the target's normalised name (the common case): the same
    // host without normalising it again, since normalising is idempotent.
    let same_host = match &cand.host {
        Host::Name(n) if n == host => true,
        _ => normalize_host(host).is_ok_and(|n| n == cand.host),
    };
    if !same_host || port.unwrap_or(80) != cand.port {
        return Err(bad());
    }
    Ok(())
}

/// Step 3: the policy's decision by name (timed for the metrics).
pub fn decide(shared: &Shared, policy: &Policy, cand: &Candidate) -> Decision {
    timed(shared, || policy.decide(cand))
}

/// A decision, its time observed in `egressd_decision_seconds`.
fn timed<T>(shared: &Shared, decide: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let d = decide();
    shared.metrics.observe_decision(started.elapsed().as_secs_f64());
    d
}

/// Where an allowed request goes: to the addresses egressd checked, or
/// through the parent proxy, which resolves names itself.
pub enum Route {
    Direct(Vec<Resolved>),
    Parent(Arc<Parent>),
}

impl Route {
    /// The dialler's view, for `authority` (`host:port`).
    pub fn hop<'a>(&'a self, authority: &'a str) -> Hop<'a> {
        match self {
            Route::Direct(t) => Hop::Direct(t),
            Route::Parent(p) => Hop::Parent { parent: p, authority },
        }
    }

    pub fn via(&self) -> Via {
        match self {
            Route::Direct(_) => Via::Direct,
            Route::Parent(_) => Via::Parent,
        }
    }
}

/// A request allowed through steps 3 and 4: the decision that counts, and
/// where it goes.
pub struct Authorized {
    pub decision: Decision,
    pub route: Route,
    /// Where the name's addresses came from, when they were looked up.
    pub dns: Option<Source>,
}

/// Step 4: resolves the destination and judges every address; returns the
/// addresses that may be dialled, in order, or the decision that refused
/// (with where the name's answer came from, either way).
pub async fn check_addresses(
    shared: &Shared,
    policy: &Policy,
    cand: &Candidate,
    by_name: Decision,
) -> Result<(crate::policy::Checked, Option<Source>), Refused> {
    let refused = |(error, d): (ProxyError, Option<Decision>), dns| Refused {
        error,
        decision: d.unwrap_or(by_name),
        dns,
    };
    policy
        .needs_addresses(cand, &by_name)
        .map_err(|r| refused(refusal(r), None))?;
    let resolved = shared
        .config
        .resolver
        .resolve(&cand.host, cand.port, policy.pins())
        .await
        .map_err(|e| refused((e, None), None))?;
    let dns = resolved.dns;
    policy
        .decide_addresses(cand, by_name, resolved.targets, shared.own_addresses())
        .map(|c| (c, dns))
        .map_err(|r| refused(refusal(r), dns))
}

fn refusal(r: Refusal) -> (ProxyError, Option<Decision>) {
    match r {
        Refusal::SelfLoop => (ProxyError::Loop, None),
        Refusal::Denied { decision, by_address } => (
            ProxyError::Denied {
                reason: decision.reason,
                by_address,
            },
            Some(decision),
        ),
    }
}

/// Steps 3 and 4 together. Either way the outcome carries the decision
/// that counts: the one that let the request through, or the one that
/// stopped it (the decision by name when no address was judged).
pub async fn authorize(shared: &Shared, policy: &Policy, cand: &Candidate) -> Result<Authorized, Refused> {
    let by_name = decide(shared, policy, cand);
    authorize_decided(shared, policy, cand, by_name).await
}

/// Steps 3 and 4 for a tunnel: also whether to inspect it (when a CA is
/// loaded, [`Policy::decide_tunnel`]).
pub async fn authorize_tunnel(
    shared: &Shared,
    policy: &Policy,
    cand: &Candidate,
) -> Result<(Authorized, bool), Refused> {
    let can_inspect = shared.inspector.load().is_some();
    let (by_name, inspect) = timed(shared, || policy.decide_tunnel(cand, can_inspect));
    let checked = authorize_decided(shared, policy, cand, by_name).await?;
    Ok((checked, inspect))
}

/// A request steps 3 and 4 stopped, and the decision that stopped it.
pub struct Refused {
    pub error: ProxyError,
    pub decision: Decision,
    /// Where the name's addresses came from, when they were looked up.
    pub dns: Option<Source>,
}

async fn authorize_decided(
    shared: &Shared,
    policy: &Policy,
    cand: &Candidate,
    by_name: Decision,
) -> Result<Authorized, Refused> {
    let parent = shared
        .config
        .parent
        .as_ref()
        .filter(|_| policy.via(&by_name) == Via::Parent);
    // Through a parent, names are the parent's to resolve: the decision by
    // name is the decision. IP literals are still judged by address.
    if let (Some(p), true) = (parent, cand.host.as_name().is_some()) {
        if !by_name.verdict.proceeds() {
            let error = ProxyError::Denied {
                reason: by_name.reason,
                by_address: false,
            };
            return Err(Refused {
                error,
                decision: by_name,
                dns: None,
            });
        }
        return Ok(Authorized {
            decision: by_name,
            route: Route::Parent(p.clone()),
            dns: None,
        });
    }
    let (checked, dns) = check_addresses(shared, policy, cand, by_name).await?;
    let route = match parent {
        Some(p) => Route::Parent(p.clone()),
        None => Route::Direct(checked.targets),
    };
    Ok(Authorized {
        decision: checked.decision,
        route,
        dns,
    })
}

/// Records steps 3 and 4 in the event: the decision that counts, the way
/// out; and, for a redirected connection (transparent mode), whether the
/// app's own answer for the name is none of the addresses egressd checked
/// (it is logged, never dialled).
pub fn authorized<T>(
    ev: &mut Access,
    policy: &Policy,
    outcome: Result<T, Refused>,
    allowed: impl Fn(&T) -> &Authorized,
) -> Result<T, ProxyError> {
    match outcome {
        Ok(t) => {
            let a = allowed(&t);
            ev.decided(policy, &a.decision);
            if let (Some(orig), Route::Direct(targets)) = (ev.original_dst(), &a.route) {
                if !targets.iter().any(|t| t.addr.ip() == orig.ip()) {
                    ev.dst_mismatch();
                }
            }
            ev.via(a.route.via());
            ev.dns(a.dns);
            Ok(t)
        }
        Err(r) => {
            ev.decided(policy, &r.decision);
            ev.dns(r.dns);
            Err(r.error)
        }
    }
}

/// Step 5's failure: the last address tried goes in the event.
pub fn dial_failed(f: DialError, ev: &mut Access) -> ProxyError {
    if let Some(t) = f.last {
        ev.dialled(t);
    }
    f.error
}

/// Step 7 for a request that does not go through: answers with the error
/// and finishes the event. `target` names the request in the answer.
pub fn refuse(mut ev: Access, target: &str, e: ProxyError) -> Response<Body> {
    let resp = e.response(target);
    ev.status(resp.status().as_u16());
    ev.finish(Err(&e));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str, hosts: &[&str]) -> Result<Candidate, ProxyError> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, v.parse().unwrap());
        }
        http_target(&http::Method::GET, &uri.parse().unwrap(), &h)
    }

    #[test]
    fn the_host_header_must_name_the_request_target() {
        // The same host, spelled as normalised or not, with the default
        // port or without; an IP target in another spelling.
        for (uri, host) in [
            ("http://a.test/x", "a.test"),
            ("http://a.test/x", "A.Test."),
            ("http://a.test:80/x", "a.test:80"),
            ("http://a.test:8080/x", "a.test:8080"),
            ("http://127.0.0.1/", "127.1"),
            ("http://[::1]/", "[::1]"),
        ] {
            assert!(target(uri, &[host]).is_ok(), "{uri} with Host {host}");
        }
        assert!(target("http://a.test/x", &[]).is_ok(), "no Host header");
        for (uri, hosts) in [
            ("http://a.test/x", &["b.test"][..]),
            ("http://a.test/x", &["a.test:8080"]),
            ("http://a.test:8080/x", &["a.test"]),
            ("http://a.test/x", &["a.test", "a.test"]),
            ("http://a.test/x", &["a.test.b.test"]),
        ] {
            assert!(
                matches!(target(uri, hosts), Err(ProxyError::BadRequest(_))),
                "{uri} with Host {hosts:?}"
            );
        }
    }
}
