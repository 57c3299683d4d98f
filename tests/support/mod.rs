//! Test support: a proxy started in-process on 127.0.0.1:0, origins started
//! by the test (plain HTTP, TLS with an rcgen certificate, raw TCP), clients
//! that speak to the proxy with hyper, and the captured access log.
//! Every address is on loopback; every wait is bounded.

#![allow(dead_code)]

pub mod dnsmasq;
pub mod netns;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use egressd::policy::{Pin, Policy};
use egressd::proxy::resolve::{DnsMode, Resolver};
use egressd::proxy::{ProxyConfig, Shared};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type TestBody = BoxBody<Bytes, Infallible>;
pub const WAIT: Duration = Duration::from_secs(10);

// === captured logs ===

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
static INIT: Once = Once::new();

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the JSON subscriber that every test of this binary shares.
pub fn init_logs() {
    INIT.call_once(|| {
        let buf = LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new()))).clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("info")
            .with_writer({
                let buf = buf.clone();
                move || Sink(buf.clone())
            })
            .init();
        // Access events are written as they come, so a test reads them at once.
        egressd::logsink::set_access(egressd::logsink::Sink::direct(Box::new(Sink(buf))), true);
    });
}

/// Access events logged so far.
pub fn access_events() -> Vec<serde_json::Value> {
    let buf = LOGS.get().map(|b| b.lock().unwrap().clone()).unwrap_or_default();
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "egressd::access")
        .collect()
}

/// Waits (bounded) for an access event that satisfies `pred`.
pub async fn wait_access(pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = access_events().into_iter().find(|v| pred(v)) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no matching access event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === the proxy ===

pub struct Proxy {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

/// Options for a test proxy; DNS is pins-only so nothing leaves the machine.
pub struct ProxyOpts {
    pub policy: Policy,
    pub pins: Vec<Pin>,
    pub dns: DnsMode,
    pub configure: Box<dyn FnOnce(&mut ProxyConfig) + Send>,
}

impl ProxyOpts {
    pub fn new(policy: Policy) -> ProxyOpts {
        ProxyOpts {
            policy,
            pins: Vec::new(),
            dns: DnsMode::Static,
            configure: Box::new(|_| {}),
        }
    }
    pub fn pin(mut self, spec: &str) -> ProxyOpts {
        self.pins.push(spec.parse().unwrap());
        self
    }
    pub fn config(mut self, f: impl FnOnce(&mut ProxyConfig) + Send + 'static) -> ProxyOpts {
        self.configure = Box::new(f);
        self
    }
    pub fn dns(mut self, dns: DnsMode) -> ProxyOpts {
        self.dns = dns;
        self
    }
}

pub fn builtin_policy() -> Policy {
    Policy::from_toml(egressd::DEFAULT_POLICY, egressd::DEFAULT_POLICY_ORIGIN).unwrap()
}

pub fn policy(src: &str) -> Policy {
    Policy::from_toml(src, "test.toml").unwrap()
}

pub async fn start_proxy(opts: ProxyOpts) -> Proxy {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ProxyConfig::new(vec![addr]);
    config.connect_timeout = Duration::from_secs(2);
    config.resolver = Resolver::new(opts.pins, opts.dns, Duration::from_secs(2));
    (opts.configure)(&mut config);
    let shared = egressd::daemon::spawn_proxy(opts.policy, config, vec![listener]);
    Proxy { addr, shared }
}

// === origins ===

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

/// Deterministic content: byte i is `(i * 31 + i / 4096) % 251`.
pub fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| ((i * 31 + i / 4096) % 251) as u8)
        .collect()
}

pub fn pattern_sha256(total: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < total {
        let n = (total - off).min(1 << 16) as usize;
        h.update(pattern_chunk(off, n));
        off += n as u64;
    }
    hex(&h.finalize())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The plain origin's routes (by first segment, so tests can tag paths):
/// - `/big/...?n=N`: N bytes of the pattern, streamed;
/// - `/upload/...`: reads the body, answers its length and sha256;
/// - `/ws/...`: answers 101 to an upgrade, then echoes bytes;
/// - `/reset/...`: resets the connection without answering;
/// - anything else: the request line and headers as text.
async fn origin_service(mut req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    let route = path.split('/').nth(1).unwrap_or("");
    let resp = match route {
        "big" => {
            let n: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Response::new(BodyExt::boxed(PatternBody::new(n)))
        }
        "upload" => {
            let mut h = Sha256::new();
            let mut len = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(d) = frame.unwrap().into_data() {
                    len += d.len() as u64;
                    h.update(&d);
                }
            }
            Response::new(full(format!("{len} {}", hex(&h.finalize()))))
        }
        "ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(full(""))
                .unwrap()
        }
        _ => {
            let mut text = format!("{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
    };
    Ok(resp)
}

/// A body of `n` pattern bytes, produced in 64 KiB frames as it is read.
pub struct PatternBody {
    off: u64,
    n: u64,
}

impl PatternBody {
    pub fn new(n: u64) -> PatternBody {
        PatternBody { off: 0, n }
    }
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.off >= self.n {
            return std::task::Poll::Ready(None);
        }
        let len = (self.n - self.off).min(1 << 16) as usize;
        let chunk = pattern_chunk(self.off, len);
        self.off += len as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

async fn serve_http<IO>(io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service_fn(origin_service))
        .with_upgrades()
        .await;
}

/// A plain HTTP origin on 127.0.0.1.
pub async fn start_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            if s.peer_addr().is_ok() {
                tokio::spawn(async move {
                    // `/reset` is handled at the socket level: peek the request line.
                    let mut peek = [0u8; 16];
                    if let Ok(n) = s.peek(&mut peek).await {
                        if peek[..n].starts_with(b"GET /reset") {
                            #[allow(deprecated)] // zero linger: close sends RST, never blocks
                            let _ = s.set_linger(Some(Duration::ZERO));
                            let mut s = s;
                            let mut buf = [0u8; 1024];
                            let _ = s.read(&mut buf).await;
                            drop(s);
                            return;
                        }
                    }
                    serve_http(s).await;
                });
            }
        }
    });
    addr
}

/// A test certificate authority: a self-signed certificate for `names`.
pub struct TestCert {
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCert {
    /// The certificate and key as PEM files in `dir` (`name.pem`, `name.key`).
    pub fn write_pem(&self, dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        use base64::Engine;
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, egressd::ca::pem_certificate(&self.der)).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.key.secret_der());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        std::fs::write(
            &key,
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
        )
        .unwrap();
        (cert, key)
    }
}

pub fn test_cert(names: &[&str]) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    TestCert {
        der: ck.cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server presenting `chain` (with `key`), offering `alpn`.
pub fn tls_acceptor(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsAcceptor {
    tls_acceptor_with(provider(), chain, key, alpn)
}

/// The crypto provider with one key exchange only: the hybrid
/// post-quantum X25519MLKEM768 that current browsers and curl offer first.
pub fn post_quantum_only() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    Arc::new(p)
}

/// [`tls_acceptor`] with another crypto provider.
pub fn tls_acceptor_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl TestCert {
    /// A TLS server presenting this certificate.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        tls_acceptor(vec![self.der.clone()], self.key.clone_key(), alpn)
    }
}

/// An HTTPS origin on 127.0.0.1 serving the same routes with `cert`.
pub async fn start_tls_origin(cert: &TestCert) -> SocketAddr {
    start_tls_origin_on(cert.acceptor(&[])).await
}

/// [`start_tls_origin`] with its own TLS configuration.
pub async fn start_tls_origin_on(acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve_http(tls).await;
                }
            });
        }
    });
    addr
}

/// A raw TCP origin: reads until EOF, then answers `got N` and closes.
/// Shows that a client's half-close reaches the origin and the answer still
/// flows back.
pub async fn start_half_close_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                let _ = s.write_all(format!("got {}", buf.len()).as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A port on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

// === clients ===

/// Sends one request through the proxy with hyper (absolute-form target).
pub async fn proxy_request(proxy: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

pub async fn get(proxy: SocketAddr, url: &str) -> Response<Incoming> {
    let req = Request::get(url).body(full("")).unwrap();
    proxy_request(proxy, req).await
}

pub async fn body_text(resp: Response<Incoming>) -> String {
    let b = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&b.to_bytes()).into_owned()
}

/// Opens a CONNECT tunnel with hyper; on 200 returns the tunnel.
pub async fn connect(
    proxy: SocketAddr,
    target: &str,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, Response<Incoming>> {
    let req = Request::connect(target).body(full("")).unwrap();
    let resp = proxy_request(proxy, req).await;
    if resp.status() != StatusCode::OK {
        return Err(resp);
    }
    let up = tokio::time::timeout(WAIT, hyper::upgrade::on(resp))
        .await
        .unwrap()
        .unwrap();
    Ok(TokioIo::new(up))
}

/// TLS over a tunnel, verifying `name` against `cert`.
pub async fn tls_over<IO>(io: IO, name: &str, cert: &TestCert) -> tokio_rustls::client::TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, io))
        .await
        .unwrap()
        .unwrap()
}

/// One HTTP/1.1 request over an established stream (e.g. TLS in a tunnel).
pub async fn request_over<IO>(io: IO, req: Request<TestBody>) -> Response<Incoming>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

/// Reads a response head (up to the blank line) and nothing more, so that
/// the stream can go on as an upgraded connection.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A rustls client configuration trusting `roots` only, offering `alpn`.
pub fn client_config(
    roots: &[&rustls::pki_types::CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    client_config_with(provider(), roots, alpn)
}

/// [`client_config`] with another crypto provider.
pub fn client_config_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: &[&rustls::pki_types::CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// Writes raw bytes to the proxy and reads until the peer closes or the
/// response head and `Content-Length` body are in.
pub async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_response(&mut s).await
}

pub async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => break,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A CA from `ca init` in `dir/ca` (30 days), as egressd's `--ca` takes it.
pub fn test_ca(dir: &std::path::Path) -> egressd::ca::Authority {
    egressd::ca::init(&egressd::ca::InitOptions {
        dir: dir.join("ca"),
        days: 30,
        force: false,
        permit: vec![],
    })
    .unwrap()
}

/// `certs` as one PEM file at `path` (roots for `--upstream-ca`).
pub fn roots_pem(path: std::path::PathBuf, certs: &[&TestCert]) -> std::path::PathBuf {
    let pem: String = certs
        .iter()
        .map(|c| egressd::ca::pem_certificate(&c.der))
        .collect();
    std::fs::write(&path, pem).unwrap();
    path
}

/// A credentials file (`--auth`) with these users and passwords.
pub fn users_file(dir: &std::path::Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("users.toml");
    let text: String = users
        .iter()
        .map(|(name, pw)| {
            let hash = egressd::proxy::auth::hash_password(pw).unwrap();
            format!("[[user]]\nname = \"{name}\"\npassword = \"{hash}\"\n")
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh directory for one test's files, named by `tag` and this process.
pub fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("egressd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// === the egressd binary ===

/// The egressd binary, writing its JSON log (access events included) to a
/// file in `dir`.
pub struct Egressd {
    child: std::process::Child,
    /// The first plain listener (the TLS one when there is none).
    pub proxy: SocketAddr,
    /// The first TLS listener (`--listen-tls`), if any.
    pub proxy_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub log: std::path::PathBuf,
}

impl Drop for Egressd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Egressd {
    pub fn start(
        dir: &std::path::Path,
        policy: &std::path::Path,
        pins: &[String],
        extra: &[&str],
    ) -> Egressd {
        let mut args: Vec<String> = ["--policy", policy.to_str().unwrap(), "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec();
        args.extend(["--dns", "static"].map(String::from));
        args.extend(pins.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        Egressd::start_with(dir, &args)
    }

    /// `egressd run ARGS --admin 127.0.0.1:0 --log-format json`, and no
    /// other defaults (no listener unless ARGS give one).
    // The child is waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn start_with(dir: &std::path::Path, args: &[String]) -> Egressd {
        Egressd::start_wrapped(dir, &[], args)
    }

    /// [`Egressd::start_with`] under `wrapper` (e.g. `ip netns exec NS`).
    pub fn start_wrapped(dir: &std::path::Path, wrapper: &[&str], args: &[String]) -> Egressd {
        Egressd::start_admin(dir, wrapper, args, "127.0.0.1:0")
    }

    /// [`Egressd::start_wrapped`] with the admin listener on `admin`.
    // The child is waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn start_admin(dir: &std::path::Path, wrapper: &[&str], args: &[String], admin: &str) -> Egressd {
        let log = dir.join("access.log");
        let bin = env!("CARGO_BIN_EXE_egressd");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = std::process::Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        let child = cmd
            .arg("run")
            .args(args)
            .args(["--admin", admin, "--log-format", "json"])
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains("egressd listening")) {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let first = |k: &str| v[k].as_str().and_then(|s| s.split(',').next()?.parse().ok());
                let proxy_tls = first("listen_tls");
                return Egressd {
                    child,
                    proxy: first("listen").or(proxy_tls).unwrap(),
                    proxy_tls,
                    admin: v["admin"].as_str().unwrap().parse().unwrap(),
                    log,
                };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "egressd did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `GET path` on the admin listener: the whole answer, head and body.
    pub fn admin_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Sends a signal (`-HUP`, `-TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The log once what happened so far is surely written: the writer
    /// empties its buffers at least every `FLUSH_EVERY`.
    pub fn settled_log(&self) -> String {
        std::thread::sleep(3 * egressd::logsink::FLUSH_EVERY);
        std::fs::read_to_string(&self.log).unwrap()
    }

    pub fn access_events(&self) -> Vec<serde_json::Value> {
        let text = self.settled_log();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "egressd::access")
            .collect()
    }
}
