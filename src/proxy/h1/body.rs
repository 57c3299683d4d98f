//! A response body read from the upstream connection as the client side
//! polls it, framed by [`super::Framing`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::chunked::{Chunked, Step};
use super::conn::Conn;
use super::framing::Framing;
use super::{IdleConns, READ_SPACE};
use crate::proxy::respond::{BoxError, ProxyError};

/// Told how a response body ended: the bytes it carried down, and whether
/// it ended whole. The caller's record of the exchange (its access event)
/// implements it; the body knows nothing of events.
pub trait BodyEnd: Unpin {
    fn ended(self, down: u64, end: Result<(), &ProxyError>);
}

/// A response body read from the upstream connection as the client side
/// polls it.
pub struct ResponseBody<E: BodyEnd> {
    pub(super) conn: Option<Conn>,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    pub(super) down: u64,
    /// Inline: the body is boxed once, by the client side, with it.
    pub(super) end: Option<E>,
    pub(super) idle: Arc<IdleConns>,
    /// The error to return at the next poll ([`ResponseBody::fail`]).
    pub(super) failing: Option<String>,
}

impl<E: BodyEnd> ResponseBody<E> {
    fn at_end(&self) -> bool {
        matches!(self.framing, Framing::Length(0) | Framing::Chunked(Chunked::Done))
    }

    /// Tells the caller how the body ended, once; a connection whose body
    /// ended cleanly, with nothing read past it, goes back to the pool.
    fn end(&mut self, end: Result<(), ProxyError>) {
        if let Some(e) = self.end.take() {
            e.ended(self.down, end.as_ref().map(|_| ()));
        }
        if let Some(mut conn) = self.conn.take() {
            if end.is_ok() && self.keep_alive && self.framing != Framing::Close && conn.buf.is_empty() {
                conn.reused = true;
                self.idle.checkin(conn);
            }
        }
    }

    /// Ends the event with `e`; the error itself is returned at the next
    /// poll. Until a body is pending the client side has not written the
    /// response head: failing at once would close the client's connection
    /// with nothing sent, where the client should see the status and the
    /// bytes that came before the cut.
    fn fail(&mut self, e: ProxyError, cx: &Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failing = Some(e.to_string());
        self.end(Err(e));
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn data(&mut self, n: usize) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.down += n as u64;
        // A body being read has its connection: it goes only at the end.
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(n).freeze()))))
    }
}

impl<E: BodyEnd> HttpBody for ResponseBody<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(msg) = this.failing.take() {
            return Poll::Ready(Some(Err(msg.into())));
        }
        loop {
            if this.at_end() {
                this.end(Ok(()));
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = conn.buf.len();
            match &mut this.framing {
                Framing::Length(left) if buffered > 0 => {
                    let n = (buffered as u64).min(*left);
                    *left -= n;
                    return this.data(n as usize);
                }
                Framing::Close if buffered > 0 => return this.data(buffered),
                Framing::Chunked(c) => match c.step(&mut conn.buf) {
                    Ok(Step::Data(n)) => return this.data(n),
                    Ok(Step::Done) => continue,
                    Ok(Step::More) => {}
                    Err(e) => return this.fail(e, cx),
                },
                _ => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if conn.buf.capacity() - conn.buf.len() < READ_SPACE / 4 {
                conn.buf.reserve(READ_SPACE);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) if this.framing == Framing::Close => {
                    this.end(Ok(()));
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(
                        ProxyError::UpstreamResponse("closed before the end of the response body".into()),
                        cx,
                    )
                }
                Ok(_) => {}
                Err(e) => return this.fail(ProxyError::UpstreamResponse(e.to_string()), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl<E: BodyEnd> Drop for ResponseBody<E> {
    fn drop(&mut self) {
        // Not polled to the end: a body known to be empty has ended (the
        // server side does not poll those); otherwise the client went.
        if self.at_end() {
            self.end(Ok(()));
        } else {
            self.end(Err(ProxyError::ClientGone));
        }
    }
}
