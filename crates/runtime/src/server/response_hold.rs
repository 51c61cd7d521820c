//! A response holds what its request was admitted with (its in-flight slot and fair share) until
//! its last frame has been handed to HTTP/2, not merely until the handler returns, so responses
//! queued behind a client's closed flow-control window count against the in-flight bounds. It
//! also holds its size from the response byte budget (`--max-response-buffer`): a response that
//! would take the total of unwritten response bytes over the budget is answered
//! `RESOURCE_EXHAUSTED` before its headers leave, and its memory is freed at once.
//!
//! The body's first frame (tonic's encoded message) is taken here, before the headers are sent,
//! to learn its size; it was already in memory, so nothing is buffered that was not before.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The budget of response bytes not yet handed to HTTP/2.
#[derive(Debug, Clone)]
pub struct ResponseBudget {
    bytes: Arc<Semaphore>,
}

impl ResponseBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    fn take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        self.bytes.clone().try_acquire_many_owned(n).ok()
    }
}

/// A response body that keeps `H` until its last frame is taken (or it is dropped).
pub struct Held<H> {
    first: Option<Result<Frame<Bytes>, Status>>,
    rest: tonic::body::Body,
    hold: Option<(H, Option<OwnedSemaphorePermit>)>,
}

/// Takes the first frame of `response`, charges its size to `budget`, and returns the response
/// whose body keeps `hold` and the charge until written; `None` if the budget has no room.
pub async fn hold<H>(
    response: http::Response<tonic::body::Body>,
    hold: H,
    budget: &ResponseBudget,
) -> Option<http::Response<Held<H>>> {
    let (parts, mut rest) = response.into_parts();
    let first = if rest.is_end_stream() {
        None
    } else {
        rest.frame().await
    };
    let len = match &first {
        Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.len()),
        _ => 0,
    };
    let charge = if len > 0 {
        Some(budget.take(len)?)
    } else {
        None
    };
    Some(http::Response::from_parts(
        parts,
        Held {
            first,
            rest,
            hold: Some((hold, charge)),
        },
    ))
}

/// A response that holds nothing (an answer given without admission).
pub fn unheld<H>(response: http::Response<tonic::body::Body>) -> http::Response<Held<H>> {
    response.map(|rest| Held {
        first: None,
        rest,
        hold: None,
    })
}

impl<H: Unpin> Body for Held<H> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let me = &mut *self;
        if let Some(first) = me.first.take() {
            if first.is_err() {
                me.hold = None;
            }
            return Poll::Ready(Some(first));
        }
        let next = Pin::new(&mut me.rest).poll_frame(cx);
        match &next {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => me.hold = None,
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => me.hold = None,
            _ => {}
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(|f| f.as_ref().ok())
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A response whose body is `len` bytes of message, then trailers.
    fn response(len: usize) -> http::Response<tonic::body::Body> {
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0u8; len]))),
            Ok(Frame::trailers(http::HeaderMap::new())),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        http::Response::new(tonic::body::Body::new(body))
    }

    #[tokio::test]
    async fn the_hold_and_the_charge_last_until_the_last_frame() {
        let budget = ResponseBudget::new(150);
        let slot = Arc::new(());
        let mut first = hold(response(100), slot.clone(), &budget)
            .await
            .expect("within the budget")
            .into_body();
        assert_eq!(first.size_hint().lower(), 100);
        assert!(
            hold(response(100), (), &budget).await.is_none(),
            "150 bytes do not hold two responses of 100"
        );
        let data = first.frame().await.unwrap().unwrap();
        assert_eq!(data.data_ref().map(|d| d.len()), Some(100));
        assert_eq!(Arc::strong_count(&slot), 2, "held while unwritten");
        let trailers = first.frame().await.unwrap().unwrap();
        assert!(trailers.is_trailers());
        assert_eq!(Arc::strong_count(&slot), 1, "given back with the trailers");
        assert!(hold(response(100), (), &budget).await.is_some());
    }

    #[tokio::test]
    async fn a_dropped_response_gives_back_what_it_held() {
        let budget = ResponseBudget::new(100);
        let slot = Arc::new(());
        let held = hold(response(100), slot.clone(), &budget).await.unwrap();
        assert!(hold(response(1), (), &budget).await.is_none());
        drop(held);
        assert_eq!(Arc::strong_count(&slot), 1);
        assert!(hold(response(100), (), &budget).await.is_some());
    }

    #[tokio::test]
    async fn an_empty_body_costs_no_budget() {
        let budget = ResponseBudget::new(0);
        let empty = http::Response::new(tonic::body::Body::empty());
        let held = hold(empty, (), &budget).await.expect("nothing to charge");
        assert!(held.body().is_end_stream());
        let unheld = unheld::<()>(response(10));
        assert!(unheld.body().hold.is_none());
    }
}
