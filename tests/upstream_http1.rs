//! The proxy's own upstream HTTP/1.1 client (requests without a body to
//! plain-HTTP origins), byte for byte against a scripted origin on
//! 127.0.0.1: every framing a response can have, interim answers, reuse of
//! the upstream connection, an idle connection the origin closed, and
//! malformed answers.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the origin does with one request: writes these pieces (pausing
/// between them, so that they arrive in separate reads), then keeps the
/// connection or closes it. No pieces: closes without answering.
struct Answer {
    pieces: Vec<Vec<u8>>,
    close: bool,
}

fn answer(bytes: &str) -> Answer {
    Answer {
        pieces: vec![bytes.as_bytes().to_vec()],
        close: false,
    }
}

/// The scripted origin: the connection's number, the request's number on
/// it, and the request head decide the answer.
struct Origin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

type Script = dyn Fn(usize, usize, &str) -> Answer + Send + Sync;

async fn scripted_origin(script: Arc<Script>) -> Origin {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (c, h) = (connections.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let conn = c.fetch_add(1, Ordering::SeqCst);
            let (script, heads) = (script.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for nth in 0.. {
                    let head = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                            buf.drain(..end + 4);
                            break head;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    heads.lock().unwrap().push(head.clone());
                    let a = script(conn, nth, &head);
                    if a.pieces.is_empty() {
                        return;
                    }
                    for p in &a.pieces {
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if a.close {
                        return;
                    }
                }
            });
        }
    });
    Origin {
        addr,
        connections,
        heads,
    }
}

async fn proxy_to(origin: &Origin) -> Proxy {
    start_proxy(ProxyOpts::new(builtin_policy()).pin(&format!("js.stripe.com:80={}", origin.addr))).await
}

/// One keep-alive client connection to the proxy.
async fn client(proxy: &Proxy) -> SendRequest<TestBody> {
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn send(
    c: &mut SendRequest<TestBody>,
    method: Method,
    path: &str,
) -> http::Response<hyper::body::Incoming> {
    c.ready().await.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://js.stripe.com{path}"))
        .body(full(""))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), c.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

async fn body(resp: http::Response<hyper::body::Incoming>) -> Result<String, String> {
    match tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await {
        Ok(Ok(b)) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn path_of(head: &str) -> &str {
    let target = head.split(' ').nth(1).unwrap_or("");
    target.split('?').next().unwrap_or("")
}

#[tokio::test]
async fn every_response_framing_arrives_intact_and_the_connection_is_reused() {
    let script: Arc<Script> = Arc::new(|_, _, head: &str| match path_of(head) {
        "/chunked" => Answer {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
                b"lo\r\n6;name=\"x\"\r\n wor".to_vec(),
                b"ld\r\n0\r\nX-Trailer: t\r\n".to_vec(),
                b"\r\n".to_vec(),
            ],
            close: false,
        },
        "/length" => Answer {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello".to_vec(),
                b" world".to_vec(),
            ],
            close: false,
        },
        "/head" => answer("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Head: 1\r\n\r\n"),
        "/not-modified" => answer("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"v1\"\r\n\r\n"),
        "/no-content" => answer("HTTP/1.1 204 No Content\r\n\r\n"),
        "/early" => answer(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        _ => answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    });
    let origin = scripted_origin(script).await;
    let proxy = proxy_to(&origin).await;
    let mut c = client(&proxy).await;

    let resp = send(&mut c, Method::GET, "/chunked").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("transfer-encoding").is_some(),
        "re-chunked to the client"
    );
    assert_eq!(body(resp).await.unwrap(), "hello world");

    let resp = send(&mut c, Method::GET, "/length").await;
    assert_eq!(resp.headers()["content-length"], "11");
    assert_eq!(body(resp).await.unwrap(), "hello world");

    let resp = send(&mut c, Method::HEAD, "/head").await;
    assert_eq!(
        resp.headers()["content-length"],
        "1234",
        "HEAD keeps the length it names"
    );
    assert_eq!(resp.headers()["x-head"], "1");
    assert_eq!(body(resp).await.unwrap(), "");

    let resp = send(&mut c, Method::GET, "/not-modified").await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"], "\"v1\"");
    assert_eq!(body(resp).await.unwrap(), "");

    let resp = send(&mut c, Method::GET, "/no-content").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(body(resp).await.unwrap(), "");

    let resp = send(&mut c, Method::GET, "/early").await;
    assert_eq!(resp.status(), StatusCode::OK, "the interim 103 is not the answer");
    assert_eq!(body(resp).await.unwrap(), "ok");

    // Six exchanges, each framed right, or a later one would have read the
    // rest of an earlier body: all over one upstream connection.
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    let ev = wait_access(|v| v["host"] == "js.stripe.com" && v["path"] == "/chunked").await;
    assert_eq!(ev["status"], 200);
    assert_eq!(ev["bytes_down"], 11);
    assert!(ev.get("error").is_none_or(|e| e.is_null()), "{ev}");
}

#[tokio::test]
async fn request_heads_go_upstream_as_sent_and_answers_come_back_as_sent() {
    let script: Arc<Script> = Arc::new(|_, _, head: &str| match path_of(head) {
        "/until-close" => Answer {
            pieces: vec![
                b"HTTP/1.1 200 Fine Thanks\r\nX-Odd:  spaced value \r\n\r\nuntil ".to_vec(),
                b"the origin closes".to_vec(),
            ],
            close: true,
        },
        _ => answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    });
    let origin = scripted_origin(script).await;
    let proxy = proxy_to(&origin).await;
    let sent = raw(
        proxy.addr,
        b"GET http://js.stripe.com/until-close?q=a%20b HTTP/1.1\r\nHost: js.stripe.com\r\nX-B: 2\r\nX-A: 1\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        sent.starts_with("HTTP/1.1 200 Fine Thanks\r\n"),
        "reason phrase kept: {sent}"
    );
    assert!(sent.contains("x-odd: spaced value\r\n"), "{sent}");
    // Re-framed for the client as chunked, ending when the origin closed.
    assert!(sent.contains("\r\n6\r\nuntil \r\n"), "{sent}");
    assert!(sent.ends_with("\r\nthe origin closes\r\n0\r\n\r\n"), "{sent}");
    let head = origin.heads.lock().unwrap()[0].clone();
    assert_eq!(
        head,
        "GET /until-close?q=a%20b HTTP/1.1\r\nhost: js.stripe.com\r\nx-b: 2\r\nx-a: 1\r\naccept: */*\r\n\r\n"
    );
}

#[tokio::test]
async fn an_idle_connection_the_origin_dropped_is_replaced_for_idempotent_requests_only() {
    // On its first connection the origin answers once, then drops the
    // connection when the next request comes: the proxy had pooled it.
    let script: Arc<Script> = Arc::new(|conn, nth, _: &str| {
        if conn == 0 && nth == 1 {
            return Answer {
                pieces: vec![],
                close: true,
            };
        }
        answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    });
    let origin = scripted_origin(script.clone()).await;
    let proxy = proxy_to(&origin).await;
    let mut c = client(&proxy).await;
    assert_eq!(body(send(&mut c, Method::GET, "/a").await).await.unwrap(), "ok");
    let resp = send(&mut c, Method::GET, "/b").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await.unwrap(), "ok");
    assert_eq!(
        origin.connections.load(Ordering::SeqCst),
        2,
        "sent again on a new connection"
    );

    // A POST without a body may have been acted on: not sent twice.
    let origin = scripted_origin(script).await;
    let proxy = proxy_to(&origin).await;
    let mut c = client(&proxy).await;
    assert_eq!(body(send(&mut c, Method::POST, "/a").await).await.unwrap(), "ok");
    let resp = send(&mut c, Method::POST, "/b").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_or_cut_answers_are_bad_gateway_or_a_cut_body_never_a_clean_one() {
    let script: Arc<Script> = Arc::new(|_, _, head: &str| match path_of(head) {
        "/conflicting-length" => {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
        }
        "/bad-length" => answer("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"),
        "/garbage" => answer("HTTP/1.1 two hundred\r\n\r\n"),
        "/no-head" => Answer {
            pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()],
            close: true,
        },
        "/cut-length" => Answer {
            pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec()],
            close: true,
        },
        "/cut-chunked" => Answer {
            pieces: vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab".to_vec()],
            close: true,
        },
        "/bad-chunk" => Answer {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                b"zz\r\nhello\r\n0\r\n\r\n".to_vec(),
            ],
            close: false,
        },
        "/switch" => answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
        _ => answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    });
    let origin = scripted_origin(script).await;
    let proxy = proxy_to(&origin).await;
    for path in [
        "/conflicting-length",
        "/bad-length",
        "/garbage",
        "/no-head",
        "/switch",
    ] {
        let mut c = client(&proxy).await;
        let resp = send(&mut c, Method::GET, path).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{path}");
        assert!(
            resp.headers()["proxy-status"]
                .to_str()
                .unwrap()
                .contains("error=http_response_incomplete"),
            "{path}"
        );
        let ev = wait_access(|v| v["path"] == path).await;
        assert_eq!(ev["error"], "http_response_incomplete", "{path}");
    }
    for path in ["/cut-length", "/cut-chunked", "/bad-chunk"] {
        let mut c = client(&proxy).await;
        let resp = send(&mut c, Method::GET, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            body(resp).await.is_err(),
            "{path}: the client must see the body cut"
        );
        let ev = wait_access(|v| v["path"] == path).await;
        assert_eq!(ev["error"], "http_response_incomplete", "{path}: {ev}");
    }
}
