//! A body sent one byte at a time: a core that answers at once but never
//! seems to finish.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Interval, MissedTickBehavior};

use crate::stats::InFlight;

/// The shortest trickled body: at one byte a second, over a minute.
pub const MIN_LEN: usize = 64;

/// Sends `data` one byte per tick, the first at once; the request stays in
/// flight until the last byte is sent or the body is dropped.
#[derive(Debug)]
pub struct Trickle {
    data: Bytes,
    every: Interval,
    in_flight: Option<InFlight>,
}

impl Trickle {
    /// Trickles `data`, padded with spaces to [`MIN_LEN`] bytes.
    pub fn new(data: Bytes, every: Duration, in_flight: InFlight) -> Trickle {
        let mut every = tokio::time::interval(every.max(Duration::from_millis(1)));
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Trickle {
            data: pad(data, MIN_LEN),
            every,
            in_flight: Some(in_flight),
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        ready!(this.every.poll_tick(cx));
        let byte = this.data.split_to(1);
        if this.data.is_empty() {
            this.in_flight = None;
        }
        Poll::Ready(Some(Ok(Frame::data(byte))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// `data` followed by spaces up to `len` bytes (JSON stays valid).
fn pad(data: Bytes, len: usize) -> Bytes {
    if data.len() >= len {
        return data;
    }
    let mut padded = BytesMut::from(&data[..]);
    padded.resize(len, b' ');
    padded.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn sends_one_byte_per_frame_then_leaves_flight() {
        let stats = Arc::new(Stats::default());
        let (_, in_flight) = stats.arrive("/health");
        let mut body = Trickle::new(
            Bytes::from_static(b"{\"status\":\"ok\"}"),
            Duration::from_millis(1),
            in_flight,
        );
        assert_eq!(body.size_hint().exact(), Some(MIN_LEN as u64));
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert_eq!(data.len(), 1);
            received.extend_from_slice(&data);
            let expected = u64::from(received.len() < MIN_LEN);
            assert_eq!(stats.to_json()["in_flight"], expected);
        }
        assert_eq!(received.len(), MIN_LEN);
        let text = String::from_utf8(received).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["status"],
            "ok"
        );
    }

    #[tokio::test]
    async fn dropping_the_body_leaves_flight() {
        let stats = Arc::new(Stats::default());
        let (_, in_flight) = stats.arrive("/health");
        let body = Trickle::new(Bytes::new(), Duration::from_secs(1), in_flight);
        assert_eq!(stats.to_json()["in_flight"], 1);
        drop(body);
        assert_eq!(stats.to_json()["in_flight"], 0);
    }

    #[test]
    fn long_bodies_are_not_padded() {
        let long = Bytes::from(vec![b'x'; 100]);
        assert_eq!(pad(long.clone(), MIN_LEN), long);
    }
}
