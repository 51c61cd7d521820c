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
