//! Request bodies are read whole, bounded in size and time, before the
//! request takes an instance slot: a client that announces a body and sends
//! it slowly (or never) holds its own socket and nothing else. Bodies held
//! in the host count against one byte budget for all requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::HostError;

/// The budget is counted in units of this many bytes.
const UNIT: u64 = 1024;

/// The bytes of request bodies the host may hold at once.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
}

/// A body's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct BodyShare(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        Self {
            units: Arc::new(Semaphore::new(units)),
        }
    }

    fn take(&self, bytes: u64) -> Result<BodyShare, HostError> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        self.units
            .clone()
            .try_acquire_many_owned(units)
            .map(|permit| BodyShare(Some(permit)))
            .map_err(|_| HostError::Overloaded { retry_after_s: 1 })
    }
}

/// Reads `req`'s body: at most `limit` bytes (413 at once when
/// `Content-Length` says more, or when a chunked body passes it), within
/// `timeout` (408), within the budget (503).
pub async fn read(
    req: Request<Incoming>,
    limit: u64,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<(Request<Bytes>, BodyShare), HostError> {
    let declared = declared_length(&req);
    if declared.is_some_and(|length| length > limit) {
        return Err(HostError::BodyTooLarge { limit });
    }
    if declared == Some(0) || req.body().is_end_stream() {
        return Ok((req.map(|_| Bytes::new()), BodyShare(None)));
    }
    let share = budget.take(declared.unwrap_or(limit))?;
    let (parts, body) = req.into_parts();
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_elapsed) => {
            return Err(HostError::BodyTimeout {
                timeout_ms: timeout.as_millis() as u64,
            });
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(HostError::BodyTooLarge { limit });
        }
        Ok(Err(_)) => return Err(HostError::BodyIncomplete),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok((Request::from_parts(parts, bytes), share))
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(64 * 1024);
        let a = budget.take(40 * 1024).unwrap();
        assert!(budget.take(40 * 1024).is_err());
        let _small = budget.take(1).unwrap();
        drop(a);
        budget.take(40 * 1024).unwrap();
    }
}
