//! The body of an admitted unary request, checked as it is read: it must end within the body
//! timeout from admission (so a client that sends HEADERS and never the body cannot hold an
//! in-flight slot), and it must carry exactly the one gRPC message a unary call has (a second
//! message is refused with gRPC-Go's cardinality-violation status, `INTERNAL`).
//!
//! Follows the 5-byte gRPC message prefixes only; decoding and the size limit stay tonic's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;

const PREFIX_LEN: usize = 5;

/// gRPC-Go's status for a second request message on a unary call.
pub const SECOND_MESSAGE: &str =
    "cardinality violation: received multiple request messages for non-client-streaming RPC";

/// Counts the messages in a gRPC body from their length prefixes.
#[derive(Debug, Default)]
struct Messages {
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    payload_left: u64,
    count: u32,
}

impl Messages {
    /// Follows `data`; returns the number of messages begun so far.
    fn follow(&mut self, mut data: &[u8]) -> u32 {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (PREFIX_LEN - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == PREFIX_LEN {
                self.prefix_len = 0;
                self.count += 1;
                let p = &self.prefix;
                self.payload_left = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
            }
        }
        self.count
    }
}

/// A unary request body under its deadline and message count.
pub struct UnaryBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    messages: Messages,
    ended: bool,
}

impl<B> UnaryBody<B> {
    /// `inner`, which must end within `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            messages: Messages::default(),
            ended: false,
        }
    }
}

impl<B> Body for UnaryBody<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let me = &mut *self;
        if me.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if me.messages.follow(data) > 1 {
                        me.ended = true;
                        return Poll::Ready(Some(Err(Status::internal(SECOND_MESSAGE))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                me.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => match me.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    me.ended = true;
                    Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "request body not received within {:?}",
                        me.timeout
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7, len as usize));
        m
    }

    type Chunks =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Status>>>>;

    fn body(chunks: Vec<Vec<u8>>) -> Chunks {
        StreamBody::new(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok(Frame::data(Bytes::from(c))))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn counts_messages_split_anywhere() {
        let two: Vec<u8> = [message(300), message(0)].concat();
        for step in [1, 3, 5, 6, 400] {
            let mut m = Messages::default();
            let mut counts = Vec::new();
            for chunk in two.chunks(step) {
                counts.push(m.follow(chunk));
            }
            assert_eq!(*counts.last().unwrap(), 2, "step {step}");
            assert_eq!(counts.iter().filter(|c| **c == 2).count(), 1, "step {step}");
        }
    }

    #[tokio::test]
    async fn one_message_passes_a_second_is_refused() {
        let one = message(10);
        let got = UnaryBody::new(
            body(vec![one[..3].to_vec(), one[3..].to_vec()]),
            Duration::from_secs(5),
        )
        .collect()
        .await
        .unwrap()
        .to_bytes();
        assert_eq!(got.as_ref(), one.as_slice());
        let err = UnaryBody::new(body(vec![message(10), message(1)]), Duration::from_secs(5))
            .collect()
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert_eq!(err.message(), SECOND_MESSAGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_fails_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let never = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, Status>,
        >());
        let err = UnaryBody::new(never, Duration::from_secs(10))
            .collect()
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
