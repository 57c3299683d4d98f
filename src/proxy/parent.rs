//! A parent proxy (`--upstream-proxy http[s]://[user:pass@]host:port`):
//! the corporate proxy egressd sits in front of. egressd decides first;
//! only what it allows reaches the parent, tunnels as `CONNECT host:port`,
//! plain HTTP as absolute-form requests over pooled connections. Names are
//! the parent's to resolve.
//!
//! The credentials become one `Proxy-Authorization` value, marked
//! sensitive; they never reach a log, a metric or an admin page (the
//! parent is shown as [`Parent::display`]).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::respond::ProxyError;
use crate::policy::Resolved;

/// The longest answer head a parent may send to a CONNECT.
const MAX_HEAD: usize = 16 * 1024;

/// A parent proxy, parsed from its URL.
pub struct Parent {
    /// `scheme://host:port`, without credentials: what logs show.
    pub display: String,
    host: String,
    port: u16,
    /// Verified TLS to the parent itself (`https://`).
    tls: Option<(ServerName<'static>, Arc<rustls::ClientConfig>)>,
    auth: Option<HeaderValue>,
    /// `SO_MARK` for connections to the parent (`--mark`).
    mark: Option<u32>,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("url", &self.display)
            .field("credentials", &self.auth.is_some())
            .finish()
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8".to_string())
}

impl Parent {
    /// Reads `http://[user[:pass]@]host:port` (or `https://`). The password
    /// may come from `password_file` instead (first line), so that it does
    /// not show in `ps`. `tls` verifies an `https://` parent.
    pub fn parse(
        url: &str,
        password_file: Option<&Path>,
        tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
    ) -> Result<Parent, String> {
        let bad = |why: &str| format!("--upstream-proxy: {why} (expected http://[user:pass@]host:port)");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("a parent proxy URL has no path"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = crate::target::split_host_port(hostport).map_err(|_| bad("a bad host or port"))?;
        let port = port.unwrap_or(if secure { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut user_pass = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((
                    percent_decode(user).map_err(|e| bad(&e))?,
                    percent_decode(pass).map_err(|e| bad(&e))?,
                ))
            }
            None => None,
        };
        if let Some(f) = password_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--upstream-proxy-password-file {}: {e}", f.display()))?;
            let pass = text.lines().next().unwrap_or("").to_string();
            match &mut user_pass {
                Some((_, p)) => *p = pass,
                None => {
                    return Err(bad(
                        "a password file needs a user in the URL (http://user@host:port)",
                    ))
                }
            }
        }
        let auth = match user_pass {
            Some((user, pass)) => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                let mut v =
                    HeaderValue::from_str(&format!("Basic {token}")).map_err(|_| bad("bad credentials"))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let tls = if secure {
            let name = ServerName::try_from(host.clone()).map_err(|_| bad("not a TLS server name"))?;
            Some((name, tls()?))
        } else {
            None
        };
        let shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Parent {
            display: format!("{}://{shown}:{port}", if secure { "https" } else { "http" }),
            host,
            port,
            tls,
            auth,
            mark: None,
        })
    }

    /// Connections to the parent carry `SO_MARK` `mark` (`--mark`).
    pub fn with_mark(mut self, mark: Option<u32>) -> Parent {
        self.mark = mark;
        self
    }

    /// The `Proxy-Authorization` egressd sends the parent, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// A connection to the parent (TLS when it is `https://`), and the
    /// address reached. The parent's name is the operator's: resolved by
    /// the system, never judged by the policy.
    pub async fn dial(&self, timeout: Duration) -> Result<(ParentStream, Resolved), ProxyError> {
        let unreachable = |e: String| ProxyError::ParentUnreachable(format!("{}: {e}", self.display));
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(timeout, tokio::net::lookup_host((self.host.as_str(), self.port)))
                .await
                .map_err(|_| ProxyError::ParentTimeout)?
                .map_err(|e| unreachable(e.to_string()))?
                .collect();
        let mut last = unreachable("no address".into());
        for addr in addrs {
            let tcp = match tokio::time::timeout(timeout, super::dial::connect_tcp(addr, self.mark)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    last = unreachable(e.to_string());
                    continue;
                }
                Err(_) => {
                    last = ProxyError::ParentTimeout;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let reached = Resolved { addr, pinned: true };
            let Some((name, config)) = &self.tls else {
                return Ok((ParentStream::Plain(tcp), reached));
            };
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| ProxyError::ParentTimeout)?
                .map_err(|e| unreachable(format!("TLS: {}", ProxyError::from_tls(&e))))?;
            return Ok((ParentStream::Tls(Box::new(tls)), reached));
        }
        Err(last)
    }

    /// A tunnel through the parent to `authority` (`host:port`): the stream
    /// after the parent's `2xx`, with any bytes the parent sent past its
    /// answer. Any other answer is the parent's refusal.
    pub async fn tunnel(
        &self,
        authority: &str,
        timeout: Duration,
        response_timeout: Duration,
    ) -> Result<(ParentStream, Bytes, Resolved), ProxyError> {
        let (mut s, reached) = self.dial(timeout).await?;
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(a) = &self.auth {
            req.push_str("Proxy-Authorization: ");
            req.push_str(a.to_str().unwrap_or(""));
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let io_err = |e: io::Error| ProxyError::ParentUnreachable(format!("{}: {e}", self.display));
        s.write_all(req.as_bytes()).await.map_err(io_err)?;
        let mut buf = BytesMut::with_capacity(1024);
        let head_len = tokio::time::timeout(response_timeout, async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return Ok(end + 4);
                }
                if buf.len() >= MAX_HEAD {
                    return Err(ProxyError::ParentUnreachable(format!(
                        "{}: answer head over {MAX_HEAD} bytes",
                        self.display
                    )));
                }
                if s.read_buf(&mut buf).await.map_err(io_err)? == 0 {
                    return Err(ProxyError::ParentUnreachable(format!(
                        "{}: closed before answering the CONNECT",
                        self.display
                    )));
                }
            }
        })
        .await
        .map_err(|_| ProxyError::ParentTimeout)??;
        let head = buf.split_to(head_len);
        let answer = read_answer(&head)
            .map_err(|e| ProxyError::ParentUnreachable(format!("{}: {e}", self.display)))?;
        if (200..300).contains(&answer.status) {
            return Ok((s, buf.freeze(), reached));
        }
        Err(answer.refusal())
    }
}

/// A parent's answer head: status and what it said of itself.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub proxy_status: Option<String>,
}

impl Answer {
    /// The parent said no (or could not reach the destination).
    pub fn refusal(self) -> ProxyError {
        ProxyError::ParentRefused {
            status: self.status,
            proxy_status: self.proxy_status,
        }
    }

    /// Whether a response to a plain HTTP request is the parent's own answer
    /// rather than the origin's: `407` always is; an error that carries a
    /// `Proxy-Status` (RFC 9209) or Squid's `X-Squid-Error` is.
    pub fn of_response<B>(resp: &http::Response<B>) -> Option<Answer> {
        let status = resp.status().as_u16();
        let proxy_status = resp
            .headers()
            .get("proxy-status")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(1024).collect::<String>());
        let own = status == 407
            || (status >= 400 && (proxy_status.is_some() || resp.headers().contains_key("x-squid-error")));
        own.then_some(Answer { status, proxy_status })
    }
}

fn read_answer(head: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("not an HTTP answer to CONNECT".into()),
    }
    let status = r.code.ok_or("no status")?;
    let proxy_status = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-status"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(|v| v.chars().take(1024).collect());
    Ok(Answer { status, proxy_status })
}

/// A connection to the parent: plain TCP, or TLS.
pub enum ParentStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ParentStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ParentStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ParentStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ParentStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ParentStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ParentStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ParentStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ParentStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ParentStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ParentStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_tls() -> Result<Arc<rustls::ClientConfig>, String> {
        Err("no TLS here".into())
    }

    #[test]
    fn urls_with_and_without_credentials() {
        let p = Parent::parse("http://alice:p%40ss@proxy.corp:8080", None, no_tls).unwrap();
        assert_eq!(p.display, "http://proxy.corp:8080");
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:p@ss")
        );
        assert_eq!(p.authorization().unwrap().to_str().unwrap(), want);
        assert!(p.authorization().unwrap().is_sensitive());
        assert!(!format!("{p:?}").contains("p@ss") && !format!("{p:?}").contains(&want));
        let p = Parent::parse("http://[::1]:3128/", None, no_tls).unwrap();
        assert_eq!(p.display, "http://[::1]:3128");
        assert!(p.authorization().is_none());
        assert_eq!(Parent::parse("http://proxy.corp", None, no_tls).unwrap().port, 80);
        for bad in [
            "proxy:3128",
            "socks5://p:1",
            "http://p:1/path",
            "http://:1",
            "http://p:99999",
        ] {
            assert!(Parent::parse(bad, None, no_tls).is_err(), "{bad}");
        }
        assert!(
            Parent::parse("https://proxy.corp:443", None, no_tls).is_err(),
            "TLS config errors surface"
        );
    }

    #[test]
    fn a_password_file_replaces_the_url_s_password() {
        let f = std::env::temp_dir().join(format!("egressd-parent-pw-{}", std::process::id()));
        std::fs::write(&f, "s3cret\n").unwrap();
        let p = Parent::parse("http://bob@proxy.corp:3128", Some(&f), no_tls).unwrap();
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:s3cret")
        );
        assert_eq!(p.authorization().unwrap().to_str().unwrap(), want);
        assert!(Parent::parse("http://proxy.corp:3128", Some(&f), no_tls).is_err());
    }

    #[test]
    fn answers_name_the_parent_s_own_refusals() {
        let a =
            read_answer(b"HTTP/1.1 403 Forbidden\r\nProxy-Status: corp; error=http_request_denied\r\n\r\n")
                .unwrap();
        assert_eq!(
            (a.status, a.proxy_status.as_deref()),
            (403, Some("corp; error=http_request_denied"))
        );
        assert!(read_answer(b"SSH-2.0-x\r\n\r\n").is_err());
        let origin_403 = http::Response::builder().status(403).body(()).unwrap();
        assert!(
            Answer::of_response(&origin_403).is_none(),
            "an origin's own 403 passes through"
        );
        let squid = http::Response::builder()
            .status(403)
            .header("x-squid-error", "ERR_ACCESS_DENIED 0")
            .body(())
            .unwrap();
        assert_eq!(Answer::of_response(&squid).unwrap().status, 403);
        let auth = http::Response::builder().status(407).body(()).unwrap();
        assert_eq!(Answer::of_response(&auth).unwrap().status, 407);
    }
}
