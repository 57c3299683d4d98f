//! The shared pipeline's dialling: plain HTTP keeps upstream connections
//! alive between requests, and recovers when the origin closed one.
//! Real sockets on 127.0.0.1 only.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A raw HTTP/1.1 origin answering `ok` to every request; it counts the
/// connections it accepts and, with `close_after_one`, closes each after
/// its first answer without saying so (as an origin whose keep-alive
/// timeout has passed does).
async fn counting_origin(close_after_one: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                        if close_after_one {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn keep_alive_requests_reuse_one_upstream_connection() {
    let (origin, accepted) = counting_origin(false).await;
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"pooled.test\"]")).pin(&format!("pooled.test:80={origin}")),
    )
    .await;
    for i in 0..5 {
        let resp = get(proxy.addr, &format!("http://pooled.test/{i}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_text(resp).await, "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection for five requests"
    );
    let ev = wait_access(|v| v["host"] == "pooled.test" && v["path"] == "/4").await;
    assert_eq!(ev["addr"], origin.to_string());
    assert_eq!(ev["bytes_down"], 2);
}

#[tokio::test]
async fn an_upstream_connection_the_origin_closed_is_not_reused() {
    let (origin, accepted) = counting_origin(true).await;
    let proxy = start_proxy(
        ProxyOpts::new(policy("allow = [\"closing.test\"]")).pin(&format!("closing.test:80={origin}")),
    )
    .await;
    for i in 0..3 {
        let resp = get(proxy.addr, &format!("http://closing.test/{i}")).await;
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert_eq!(body_text(resp).await, "ok");
        // Let the proxy see the close before the next request.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
