//! Clients that reset mid-request free what they held at once: the
//! upstream connection their body was going to (it can never be reused)
//! and the process's descriptors. egressd runs as its own process, so its
//! descriptors are counted alone. Real sockets on 127.0.0.1 only.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESETS: usize = 300;

/// Connections an origin was given, and holds.
#[derive(Default)]
struct Held {
    given: AtomicUsize,
    open: AtomicUsize,
}

/// An origin that answers 200 at once (or never) and then reads request
/// bytes until the proxy closes the connection, as one taking a large
/// upload does. Over TLS with `tls`.
async fn patient_origin(
    answer: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (std::net::SocketAddr, Arc<Held>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(Held::default());
    let count = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (held, tls) = (held.clone(), tls.clone());
            held.open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                match tls {
                    Some(a) => {
                        if let Ok(s) = a.accept(s).await {
                            hold(s, answer, &held).await;
                        }
                    }
                    None => hold(s, answer, &held).await,
                }
                held.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, count)
}

async fn hold<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: bool, held: &Held) {
    let mut buf = [0u8; 16 * 1024];
    let (mut seen, mut counted) = (0, false);
    while let Ok(n @ 1..) = s.read(&mut buf).await {
        seen += n;
        // The head and the first body bytes arrived.
        if seen > 4000 && !counted {
            counted = true;
            held.given.fetch_add(1, Ordering::SeqCst);
            if answer {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = s.flush().await;
            }
        }
    }
}

/// Sends `RESETS` uploads (a head and 4 kB of a 1 MB body) over
/// `open`'s streams, each reset once the origin has its first bytes; then
/// egressd must be back to its descriptors of before within 2 s, every
/// upstream connection closed.
async fn reset_uploads<S, F, Fut>(e: &Egressd, held: &Held, target: &str, chunked: bool, open: F)
where
    S: AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (S, TcpStream)>,
{
    let baseline = e.open_fds();
    for i in 0..RESETS {
        let (mut s, tcp) = open().await;
        let framing = if chunked {
            "Transfer-Encoding: chunked"
        } else {
            "Content-Length: 1000000"
        };
        let head = format!("POST {target}{i} HTTP/1.1\r\nHost: upload.test\r\n{framing}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        if chunked {
            s.write_all(b"fa0\r\n").await.unwrap();
        }
        s.write_all(&[b'x'; 4000]).await.unwrap();
        s.flush().await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while held.given.load(Ordering::SeqCst) < i + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "upload {i} never reached the origin"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        #[allow(deprecated)] // zero linger: the close is a reset, as when a client vanishes
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
        drop((s, tcp));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (fds, open) = (e.open_fds(), held.open.load(Ordering::SeqCst));
        if fds <= baseline && open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{fds} descriptors (baseline {baseline}), {open} upstream connections still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(dir: std::path::PathBuf, policy: &str, pin: String, extra: Vec<String>) -> Egressd {
    let file = dir.join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Egressd::start(&dir, &file, &["--resolve".into(), pin], &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_uploads_cut_by_a_reset_free_their_upstream_at_once() {
    for (answer, chunked) in [(false, false), (true, false), (false, true), (true, true)] {
        let (origin, held) = patient_origin(answer, None).await;
        let dir = fresh_dir(&format!("resets-{answer}-{chunked}"));
        let pin = format!("upload.test:80={origin}");
        let e = tokio::task::spawn_blocking(move || start(dir, "allow = [\"upload.test\"]\n", pin, vec![]))
            .await
            .unwrap();
        let proxy = e.proxy;
        reset_uploads(&e, &held, "http://upload.test/up", chunked, || async move {
            let s = TcpStream::connect(proxy).await.unwrap();
            let tcp = TcpStream::from_std(clone_std(&s)).unwrap();
            (s, tcp)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspected_uploads_cut_by_a_reset_free_their_upstream_at_once() {
    let cert = test_cert(&["upload.test"]);
    for answer in [false, true] {
        let (origin, held) = patient_origin(
            answer,
            Some(tls_acceptor(
                vec![cert.der.clone()],
                cert.key.clone_key(),
                &[b"http/1.1"],
            )),
        )
        .await;
        let dir = fresh_dir(&format!("resets-inspect-{answer}"));
        let ca = test_ca(&dir);
        let roots = roots_pem(dir.join("origin-root.pem"), &[&cert]);
        let extra = vec![
            "--ca".to_string(),
            dir.join("ca").to_str().unwrap().to_string(),
            "--upstream-ca".to_string(),
            roots.to_str().unwrap().to_string(),
        ];
        let pin = format!("upload.test:443={origin}");
        let policy = "inspect = \"all\"\nallow = [\"upload.test\"]\n";
        let e = tokio::task::spawn_blocking(move || start(dir, policy, pin, extra))
            .await
            .unwrap();
        let trust = TestCert {
            der: ca.cert_der.clone(),
            key: cert.key.clone_key(),
        };
        let proxy = e.proxy;
        let trust = &trust;
        reset_uploads(&e, &held, "/up", false, || async move {
            let mut tunnel = TcpStream::connect(proxy).await.unwrap();
            tunnel
                .write_all(b"CONNECT upload.test:443 HTTP/1.1\r\nHost: upload.test:443\r\n\r\n")
                .await
                .unwrap();
            let head = read_head(&mut tunnel).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let tcp = TcpStream::from_std(clone_std(&tunnel)).unwrap();
            (tls_over(tunnel, "upload.test", trust).await, tcp)
        })
        .await;
    }
}

/// A second handle on the same socket, to reset it under a TLS stream.
fn clone_std(s: &TcpStream) -> std::net::TcpStream {
    let fd = std::os::fd::AsFd::as_fd(s).try_clone_to_owned().unwrap();
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true).unwrap();
    std
}
