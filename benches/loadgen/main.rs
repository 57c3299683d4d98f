//! A small load generator that speaks to proxies: absolute-form HTTP,
//! CONNECT tunnels with TLS inside, bulk downloads and idle tunnels. Used
//! by `benches/compare.sh`; prints one JSON line per run.
//!
//! ```text
//! loadgen MODE --target HOST:PORT [--proxy ADDR] [--host NAME] [--path /p]
//!         [--concurrency N] [--duration SECS] [--bytes N] [--ca cert.pem]
//!         [--rate REQ_PER_SEC]
//! MODE: http | http-new | tunnel-https | tunnel-new | bulk | idle
//! (`*-new`: a new connection, or a new CONNECT tunnel with its own TLS
//! handshake, for every request)
//! ```
//! Every run is bounded by `--duration` (and `bulk` by `--bytes`). With
//! `--rate`, requests are sent on a fixed schedule (spread over the
//! connections) instead of back to back; latency is counted from the send
//! (the timer's millisecond granularity would otherwise dominate it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Opts {
    mode: String,
    target: String,
    proxy: Option<SocketAddr>,
    host: String,
    path: String,
    concurrency: usize,
    duration: Duration,
    bytes: u64,
    ca: Option<String>,
    /// Requests per second over all connections; back to back when absent.
    rate: Option<f64>,
    /// Speak TLS to the proxy itself, verifying this name (with `--ca`).
    proxy_tls: Option<String>,
}

fn parse() -> Opts {
    let mut a = std::env::args().skip(1);
    let mode = a.next().unwrap_or_else(|| usage());
    let mut o = Opts {
        mode,
        target: String::new(),
        proxy: None,
        host: String::new(),
        path: "/".into(),
        concurrency: 50,
        duration: Duration::from_secs(5),
        bytes: 256 << 20,
        ca: None,
        rate: None,
        proxy_tls: None,
    };
    while let Some(k) = a.next() {
        let v = a.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--target" => o.target = v,
            "--proxy" => o.proxy = Some(v.parse().unwrap_or_else(|_| usage())),
            "--host" => o.host = v,
            "--path" => o.path = v,
            "--concurrency" => o.concurrency = v.parse().unwrap_or_else(|_| usage()),
            "--duration" => o.duration = Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage())),
            "--bytes" => o.bytes = v.parse().unwrap_or_else(|_| usage()),
            "--ca" => o.ca = Some(v),
            "--rate" => o.rate = Some(v.parse().unwrap_or_else(|_| usage())),
            "--proxy-tls" => o.proxy_tls = Some(v),
            _ => usage(),
        }
    }
    if o.target.is_empty() {
        usage();
    }
    if o.host.is_empty() {
        o.host = o
            .target
            .rsplit_once(':')
            .map_or(o.target.clone(), |(h, _)| h.to_string());
    }
    o
}

fn usage() -> ! {
    eprintln!("usage: loadgen http|http-new|tunnel-https|tunnel-new|tunnel-h2|garbage|bulk|idle --target HOST:PORT [--proxy ADDR] [--host NAME] [--path P] [--concurrency N] [--duration S] [--bytes N] [--ca PEM] [--rate R] [--proxy-tls NAME]");
    std::process::exit(2)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where to connect: the proxy if any (over TLS with `--proxy-tls`), else
/// the target (resolved locally).
async fn dial(o: &Opts) -> std::io::Result<Box<dyn Io>> {
    let s = match o.proxy {
        Some(p) => TcpStream::connect(p).await?,
        None => TcpStream::connect(&o.target).await?,
    };
    s.set_nodelay(true)?;
    match (&o.proxy, &o.proxy_tls) {
        (Some(_), Some(name)) => {
            let name =
                rustls::pki_types::ServerName::try_from(name.clone()).map_err(std::io::Error::other)?;
            Ok(Box::new(tls_connector(o).connect(name, s).await?))
        }
        _ => Ok(Box::new(s)),
    }
}

/// Reads one response (head + Content-Length body); returns body bytes.
async fn read_response(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
            if !head.starts_with("HTTP/1.1 2") && !head.starts_with("HTTP/1.0 2") {
                return Err(std::io::Error::other(
                    head.lines().next().unwrap_or("").to_string(),
                ));
            }
            let len: u64 = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let have = (buf.len() - end - 4) as u64;
            let mut need = len.saturating_sub(have);
            buf.drain(..end + 4 + (len.min(have)) as usize);
            while need > 0 {
                let n = io.read(&mut tmp).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let take = (n as u64).min(need) as usize;
                need -= take as u64;
                buf.extend_from_slice(&tmp[take..n]);
            }
            return Ok(len);
        }
        let n = io.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Opens a CONNECT tunnel through the proxy (or a plain connection).
async fn tunnel(o: &Opts) -> std::io::Result<Box<dyn Io>> {
    let mut s = dial(o).await?;
    if o.proxy.is_some() {
        s.write_all(format!("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n", o.target, o.target).as_bytes())
            .await?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while find(&head, b"\r\n\r\n").is_none() {
            if s.read(&mut b).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            return Err(std::io::Error::other(String::from_utf8_lossy(&head).to_string()));
        }
    }
    Ok(s)
}

fn tls_connector(o: &Opts) -> tokio_rustls::TlsConnector {
    tls_connector_alpn(o, &[])
}

fn tls_connector_alpn(o: &Opts, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &o.ca {
        let pem = std::fs::read(ca).expect("read --ca");
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer = cert.expect("PEM certificate");
            roots.add(cert).expect("add CA");
        }
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls(o: &Opts, s: Box<dyn Io>) -> std::io::Result<Box<dyn Io>> {
    let name = rustls::pki_types::ServerName::try_from(o.host.clone()).map_err(std::io::Error::other)?;
    Ok(Box::new(tls_connector(o).connect(name, s).await?))
}

struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    lat_us: Mutex<Vec<u32>>,
}

fn request_bytes(o: &Opts, absolute: bool) -> Vec<u8> {
    let target = if absolute {
        format!("http://{}{}", o.target.replace(&o.target, &host_port(o)), o.path)
    } else {
        o.path.clone()
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen\r\n\r\n",
        host_port(o)
    )
    .into_bytes()
}

/// The authority as the client names it: `--host` with the target's port.
fn host_port(o: &Opts) -> String {
    let port = o.target.rsplit_once(':').map_or("80", |(_, p)| p);
    if port == "80" {
        o.host.clone()
    } else {
        format!("{}:{port}", o.host)
    }
}

/// Streams each `tunnel-h2` connection keeps in flight.
const H2_STREAMS: usize = 10;

/// HTTP/2 in a tunnel, as a browser speaks it to an inspecting proxy: one
/// connection with `H2_STREAMS` requests in flight at a time, each
/// answered in full before its stream's next request.
async fn h2_worker(o: Arc<Opts>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    use http_body_util::{BodyExt, Empty};
    while !stop.load(Ordering::Relaxed) {
        let conn = async {
            let s = tunnel(&o).await?;
            let name =
                rustls::pki_types::ServerName::try_from(o.host.clone()).map_err(std::io::Error::other)?;
            let tls = tls_connector_alpn(&o, &[b"h2"]).connect(name, s).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(std::io::Error::other("the proxy did not choose h2"));
            }
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(sender)
        };
        let sender = match conn.await {
            Ok(s) => s,
            Err(e) => {
                if std::env::var_os("LOADGEN_DEBUG").is_some() {
                    eprintln!("h2 connect: {e}");
                }
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let uri = format!("https://{}{}", host_port(&o), o.path);
        let streams: Vec<_> = (0..H2_STREAMS)
            .map(|_| {
                let (mut sender, stats, stop, uri) =
                    (sender.clone(), stats.clone(), stop.clone(), uri.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(1 << 14);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let req = http::Request::get(&uri)
                            .body(Empty::<bytes::Bytes>::new())
                            .unwrap();
                        let done = async {
                            let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
                            if !resp.status().is_success() {
                                return Err(std::io::Error::other(resp.status().to_string()));
                            }
                            let body = resp.into_body().collect().await.map_err(std::io::Error::other)?;
                            Ok::<_, std::io::Error>(body.to_bytes().len() as u64)
                        };
                        match done.await {
                            Ok(n) => {
                                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                                stats.requests.fetch_add(1, Ordering::Relaxed);
                                stats.bytes.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(_) => {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    stats.lat_us.lock().unwrap().extend(lat);
                })
            })
            .collect();
        for s in streams {
            let _ = s.await;
        }
    }
}

async fn worker(o: Arc<Opts>, stats: Arc<Stats>, stop: Arc<AtomicBool>, index: usize) {
    if o.mode == "tunnel-h2" {
        return h2_worker(o, stats, stop).await;
    }
    let mut lat = Vec::with_capacity(1 << 16);
    let mut buf = Vec::with_capacity(64 * 1024);
    // Fixed schedule: each connection sends every `period`, the connections
    // staggered evenly across it.
    let period = o.rate.map(|r| Duration::from_secs_f64(o.concurrency as f64 / r));
    let mut next =
        period.map(|p| tokio::time::Instant::now() + p.mul_f64(index as f64 / o.concurrency as f64));
    'outer: while !stop.load(Ordering::Relaxed) {
        if o.mode == "garbage" {
            let t = Instant::now();
            match garbage(&o).await {
                Ok(()) => {
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        let conn: std::io::Result<Box<dyn Io>> = match o.mode.as_str() {
            "http" | "http-new" => dial(&o).await,
            _ => match tunnel(&o).await {
                Ok(s) => tls(&o, s).await,
                Err(e) => Err(e),
            },
        };
        let mut io = match conn {
            Ok(c) => c,
            Err(e) => {
                if std::env::var_os("LOADGEN_DEBUG").is_some() {
                    eprintln!("connect: {e}");
                }
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let req = request_bytes(&o, o.proxy.is_some() && o.mode.starts_with("http"));
        buf.clear();
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            if let (Some(n), Some(p)) = (next.as_mut(), period) {
                tokio::time::sleep_until(*n).await;
                *n += p;
            }
            let t = Instant::now();
            let r = async {
                io.write_all(&req).await?;
                read_response(&mut io, &mut buf).await
            }
            .await;
            match r {
                Ok(n) => {
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    if std::env::var_os("LOADGEN_DEBUG").is_some() {
                        eprintln!("request: {e}");
                    }
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if o.mode == "http-new" || o.mode == "tunnel-new" {
                break;
            }
        }
    }
    stats.lat_us.lock().unwrap().extend(lat);
}

/// A request that does not parse (a header line with no colon), as a
/// scanner sends it, on a connection of its own: one 400 and the close.
async fn garbage(o: &Opts) -> std::io::Result<()> {
    let mut io = dial(o).await?;
    let req = format!(
        "GET http://{}{} HTTP/1.1\r\nHost: {}\r\nBad Header\r\n\r\n",
        host_port(o),
        o.path,
        host_port(o)
    );
    io.write_all(req.as_bytes()).await?;
    let mut out = Vec::with_capacity(512);
    io.read_to_end(&mut out).await?;
    if out.starts_with(b"HTTP/1.1 400") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out[..out.len().min(40)]).into_owned(),
        ))
    }
}

async fn bulk(o: &Opts) -> serde_json::Value {
    let start = Instant::now();
    let r = async {
        let s = tunnel(o).await?;
        let mut io = tls(o, s).await?;
        io.write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                o.path, o.host
            )
            .as_bytes(),
        )
        .await?;
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 || start.elapsed() > o.duration {
                break;
            }
            total += n as u64;
        }
        Ok::<u64, std::io::Error>(total)
    };
    match r.await {
        Ok(total) => {
            let secs = start.elapsed().as_secs_f64();
            serde_json::json!({"mode": "bulk", "bytes": total, "secs": secs, "mbps": total as f64 / secs / 1e6})
        }
        Err(e) => serde_json::json!({"mode": "bulk", "error": e.to_string()}),
    }
}

async fn idle(o: &Opts) -> serde_json::Value {
    let mut held = Vec::with_capacity(o.concurrency);
    let mut errors = 0;
    for _ in 0..o.concurrency {
        match tunnel(o).await {
            Ok(s) => held.push(s),
            Err(_) => errors += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({"mode": "idle", "open": held.len(), "errors": errors, "state": "holding"})
    );
    tokio::time::sleep(o.duration).await;
    serde_json::json!({"mode": "idle", "open": held.len(), "errors": errors, "state": "done"})
}

fn main() {
    let o = parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        match o.mode.as_str() {
            "bulk" => bulk(&o).await,
            "idle" => idle(&o).await,
            "http" | "http-new" | "tunnel-https" | "tunnel-new" | "tunnel-h2" | "garbage" => {
                let stats = Arc::new(Stats {
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    lat_us: Mutex::new(Vec::new()),
                });
                let stop = Arc::new(AtomicBool::new(false));
                let o = Arc::new(o.clone());
                let start = Instant::now();
                let tasks: Vec<_> = (0..o.concurrency)
                    .map(|i| tokio::spawn(worker(o.clone(), stats.clone(), stop.clone(), i)))
                    .collect();
                tokio::time::sleep(o.duration).await;
                stop.store(true, Ordering::Relaxed);
                for t in tasks {
                    let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
                }
                let secs = start.elapsed().as_secs_f64();
                let mut lat = stats.lat_us.lock().unwrap().clone();
                lat.sort_unstable();
                let pct = |p: f64| {
                    if lat.is_empty() {
                        0.0
                    } else {
                        lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
                    }
                };
                let n = stats.requests.load(Ordering::Relaxed);
                serde_json::json!({
                    "mode": o.mode, "requests": n, "errors": stats.errors.load(Ordering::Relaxed),
                    "secs": secs, "rps": n as f64 / secs, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                    "max_ms": pct(1.0),
                })
            }
            _ => usage(),
        }
    });
    println!("{out}");
}
