//! Outbound HTTP bounded by one deadline for the whole call: connect,
//! response head and the whole body. The wait is a `wasi:io/poll` on the
//! response's (or body stream's) pollable together with a
//! `wasi:clocks/monotonic-clock` timer, so the bound holds on any host,
//! Spin included: a core that trickles a byte a second is cut at the
//! deadline.
//!
//! kiosk-host's outbound policy may answer a call itself, without touching
//! the destination: a 503 with `Retry-After` and `kiosk-outbound-refused:
//! busy | circuit-open`. [`call`] reports that as [`CallError::Refused`].

use std::time::Duration;

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method,
    OutgoingBody, OutgoingRequest, RequestOptions, Scheme, http_error_code,
};
use wasi::clocks::monotonic_clock;
use wasi::io::poll::{Pollable, poll};
use wasi::io::streams::{OutputStream, StreamError};

/// The header kiosk-host sets on a call its outbound policy refused.
pub const REFUSED_HEADER: &str = "kiosk-outbound-refused";

/// A buffered response.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (at most [`MAX_REPLY_BYTES`]).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why the host's outbound policy refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The destination's concurrency cap was reached and the short queue
    /// for it timed out.
    Busy,
    /// The destination's circuit breaker is open.
    CircuitOpen,
}

impl Refusal {
    /// The header value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::CircuitOpen => "circuit-open",
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The host's outbound policy answered instead of the destination.
    Refused {
        /// Which rule refused it.
        reason: Refusal,
        /// The host's `Retry-After`, in seconds.
        retry_after_s: u64,
    },
    /// The host does not allow the destination (`allowed_outbound_hosts`,
    /// or a call to itself).
    Denied,
    /// The request could not be built (bad header, method or URL).
    Invalid(&'static str),
    /// No connection could be made (DNS, refused, unroutable): not sent.
    Unreachable(&'static str),
    /// The deadline passed before the whole reply arrived.
    Timeout,
    /// The connection broke or the reply was malformed, after the request
    /// may have been sent.
    Failed(&'static str),
}

impl CallError {
    /// Whether the request certainly never reached the destination.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            CallError::Refused { .. }
                | CallError::Denied
                | CallError::Invalid(_)
                | CallError::Unreachable(_)
        )
    }

    /// A short description without host internals, e.g. `timeout` or
    /// `refused (circuit-open)`.
    pub fn detail(&self) -> String {
        match self {
            CallError::Refused { reason, .. } => format!("refused ({})", reason.as_str()),
            CallError::Denied => "denied by allowed_outbound_hosts".into(),
            CallError::Invalid(what) => format!("invalid request ({what})"),
            CallError::Unreachable(why) | CallError::Failed(why) => (*why).into(),
            CallError::Timeout => "timeout".into(),
        }
    }
}

/// Largest body read from a reply.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Default `Retry-After` when a refusal carries none (or an unreadable one).
const DEFAULT_REFUSAL_RETRY_AFTER_S: u64 = 1;

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

fn classify(code: &ErrorCode) -> CallError {
    match code {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => CallError::Timeout,
        ErrorCode::HttpRequestDenied => CallError::Denied,
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) => CallError::Unreachable("dns error"),
        ErrorCode::DestinationNotFound => CallError::Unreachable("destination not found"),
        ErrorCode::DestinationUnavailable => CallError::Unreachable("destination unavailable"),
        ErrorCode::DestinationIpProhibited | ErrorCode::DestinationIpUnroutable => {
            CallError::Unreachable("destination unroutable")
        }
        ErrorCode::ConnectionRefused => CallError::Unreachable("connection refused"),
        ErrorCode::ConnectionLimitReached => CallError::Unreachable("connection limit reached"),
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => CallError::Failed("tls error"),
        ErrorCode::ConnectionTerminated => CallError::Failed("connection terminated"),
        ErrorCode::HttpResponseIncomplete => CallError::Failed("incomplete response"),
        ErrorCode::HttpRequestUriInvalid => CallError::Invalid("uri"),
        _ => CallError::Failed("protocol error"),
    }
}

/// A point on the monotonic clock after which nothing more is waited for.
struct Deadline(u64);

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Deadline(monotonic_clock::now().saturating_add(nanos))
    }

    /// Waits until `ready` is ready (`true`) or the deadline has passed
    /// (`false`), whichever comes first.
    fn wait(&self, ready: &Pollable) -> bool {
        let remaining = self.0.saturating_sub(monotonic_clock::now());
        if remaining == 0 {
            return ready.ready();
        }
        let timer = monotonic_clock::subscribe_duration(remaining);
        poll(&[ready, &timer]).contains(&0)
    }
}

/// The error of a failed stream operation.
fn stream_error(e: StreamError, what: &'static str) -> CallError {
    match e {
        StreamError::LastOperationFailed(e) => match http_error_code(&e) {
            Some(code) => classify(&code),
            // wasmtime 48 keeps a body's error as its own error type, which
            // `http-error-code` does not recognise; its text still says what
            // happened ("connection read timeout" at the host's deadline).
            None if e.to_debug_string().to_ascii_lowercase().contains("timeout") => {
                CallError::Timeout
            }
            None => CallError::Failed(what),
        },
        StreamError::Closed => CallError::Failed(what),
    }
}

/// Sends one request and waits for the whole reply, everything bounded by
/// `timeout` from now.
pub fn call(
    method_name: &str,
    scheme_https: bool,
    authority: &str,
    path_and_query: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, CallError> {
    let deadline = Deadline::after(timeout);
    let fields = Fields::from_list(headers).map_err(|_| CallError::Invalid("headers"))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&method(method_name))
        .map_err(|_| CallError::Invalid("method"))?;
    request
        .set_scheme(Some(if scheme_https {
            &Scheme::Https
        } else {
            &Scheme::Http
        }))
        .map_err(|_| CallError::Invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|_| CallError::Invalid("authority"))?;
    request
        .set_path_with_query(Some(path_and_query))
        .map_err(|_| CallError::Invalid("path"))?;
    let outgoing_body = request.body().map_err(|_| CallError::Invalid("body"))?;
    // The host's own per-phase bounds, as a backstop to the deadline.
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let pending = outgoing_handler::handle(request, Some(options)).map_err(|e| classify(&e))?;
    if !body.is_empty() {
        let stream = outgoing_body
            .write()
            .map_err(|_| CallError::Invalid("body stream"))?;
        write_all(&stream, body, &deadline)?;
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| classify(&e))?;
    let response = response_head(&pending, &deadline)?;
    let status = response.status();
    let headers = response.headers().entries();
    if status == 503
        && let Some(refused) = refusal(&headers)
    {
        return Err(refused);
    }
    let body = read_body(&response, &deadline)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Writes `body`, waiting for room and for the flush within the deadline.
fn write_all(stream: &OutputStream, body: &[u8], deadline: &Deadline) -> Result<(), CallError> {
    let mut rest = body;
    while !rest.is_empty() {
        let room = stream
            .check_write()
            .map_err(|e| stream_error(e, "connection closed while sending"))?;
        if room == 0 {
            if !deadline.wait(&stream.subscribe()) {
                return Err(CallError::Timeout);
            }
            continue;
        }
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
        stream
            .write(&rest[..n])
            .map_err(|e| stream_error(e, "connection closed while sending"))?;
        rest = &rest[n..];
    }
    stream
        .flush()
        .map_err(|e| stream_error(e, "connection closed while sending"))?;
    if !deadline.wait(&stream.subscribe()) {
        return Err(CallError::Timeout);
    }
    stream
        .check_write()
        .map(|_| ())
        .map_err(|e| stream_error(e, "connection closed while sending"))
}

fn response_head(
    pending: &FutureIncomingResponse,
    deadline: &Deadline,
) -> Result<IncomingResponse, CallError> {
    loop {
        match pending.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(classify(&code)),
            Some(Err(())) => return Err(CallError::Failed("response already taken")),
            None => {
                if !deadline.wait(&pending.subscribe()) {
                    return Err(CallError::Timeout);
                }
            }
        }
    }
}

/// The whole body, read without blocking past the deadline.
fn read_body(response: &IncomingResponse, deadline: &Deadline) -> Result<Vec<u8>, CallError> {
    let incoming = response
        .consume()
        .map_err(|_| CallError::Failed("response body"))?;
    let stream = incoming
        .stream()
        .map_err(|_| CallError::Failed("response body"))?;
    let mut body = Vec::new();
    loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                if !deadline.wait(&stream.subscribe()) {
                    return Err(CallError::Timeout);
                }
            }
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_REPLY_BYTES {
                    return Err(CallError::Failed("reply too large"));
                }
            }
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error(e, "connection broke while reading the reply")),
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    Ok(body)
}

/// The host's refusal, if these are the headers of one.
fn refusal(headers: &[(String, Vec<u8>)]) -> Option<CallError> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    };
    let reason = match value(REFUSED_HEADER)? {
        "busy" => Refusal::Busy,
        "circuit-open" => Refusal::CircuitOpen,
        _ => return None,
    };
    let retry_after_s = value("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_REFUSAL_RETRY_AFTER_S);
    Some(CallError::Refused {
        reason,
        retry_after_s,
    })
}

/// `http(s)://host:port` → (https, authority); `None` for anything else
/// (another scheme, a path, no host).
pub fn split_base(base: &str) -> Option<(bool, String)> {
    let (https, rest) = if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, base.strip_prefix("http://")?)
    };
    let authority = rest.trim_end_matches('/');
    (!authority.is_empty() && !authority.contains('/')).then(|| (https, authority.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_scheme_and_authority() {
        assert_eq!(
            split_base("http://127.0.0.1:3999"),
            Some((false, "127.0.0.1:3999".into()))
        );
        assert_eq!(
            split_base("https://core.bank.example/"),
            Some((true, "core.bank.example".into()))
        );
        assert_eq!(split_base("ftp://x"), None);
        assert_eq!(split_base("http://x/api"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn host_refusals_are_recognised_with_their_retry_after() {
        match refusal(&headers(&[
            ("Kiosk-Outbound-Refused", "busy"),
            ("retry-after", "2"),
        ])) {
            Some(CallError::Refused {
                reason: Refusal::Busy,
                retry_after_s: 2,
            }) => {}
            other => panic!("{other:?}"),
        }
        match refusal(&headers(&[("kiosk-outbound-refused", "circuit-open")])) {
            Some(CallError::Refused {
                reason: Refusal::CircuitOpen,
                retry_after_s: DEFAULT_REFUSAL_RETRY_AFTER_S,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(refusal(&headers(&[("retry-after", "5")])).is_none());
        assert!(refusal(&headers(&[("kiosk-outbound-refused", "other")])).is_none());
    }

    #[test]
    fn only_calls_that_never_left_count_as_not_sent() {
        assert!(CallError::Denied.never_sent());
        assert!(
            CallError::Refused {
                reason: Refusal::Busy,
                retry_after_s: 1
            }
            .never_sent()
        );
        assert!(CallError::Unreachable("connection refused").never_sent());
        assert!(!CallError::Timeout.never_sent());
        assert!(!CallError::Failed("connection terminated").never_sent());
        assert_eq!(
            CallError::Refused {
                reason: Refusal::CircuitOpen,
                retry_after_s: 5
            }
            .detail(),
            "refused (circuit-open)"
        );
    }
}
