//! Outbound HTTP with per-call timeouts (wasi:http request options), which
//! spin-sdk's `send` does not expose: the core passthrough and the health
//! check must answer quickly even when the core does not.

use std::time::Duration;

use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

/// A buffered response.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (at most `MAX_REPLY_BYTES`).
    pub body: Vec<u8>,
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer within the timeout.
    Timeout,
    /// The host refused the destination (`allowed_outbound_hosts`).
    Denied,
    /// Connection refused, reset, DNS, protocol…
    Unavailable(String),
}

/// Largest body read from a reply.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

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

fn classify(code: ErrorCode) -> CallError {
    match code {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout => CallError::Timeout,
        ErrorCode::HttpRequestDenied => CallError::Denied,
        other => CallError::Unavailable(format!("{other:?}")),
    }
}

/// Sends one request and waits for the whole reply, each phase bounded by `timeout`.
pub fn call(
    method_name: &str,
    scheme_https: bool,
    authority: &str,
    path_and_query: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, CallError> {
    let fields = Fields::from_list(headers)
        .map_err(|e| CallError::Unavailable(format!("headers: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| CallError::Unavailable(format!("invalid {what}"));
    request
        .set_method(&method(method_name))
        .map_err(|_| invalid("method"))?;
    request
        .set_scheme(Some(if scheme_https {
            &Scheme::Https
        } else {
            &Scheme::Http
        }))
        .map_err(|_| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|_| invalid("authority"))?;
    request
        .set_path_with_query(Some(path_and_query))
        .map_err(|_| invalid("path"))?;
    let outgoing_body = request.body().map_err(|_| invalid("body"))?;
    let nanos = timeout.as_nanos() as u64;
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let pending = outgoing_handler::handle(request, Some(options)).map_err(classify)?;
    if !body.is_empty() {
        let stream = outgoing_body.write().map_err(|_| invalid("body stream"))?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| CallError::Unavailable(format!("sending the body: {e:?}")))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing_body, None).map_err(classify)?;
    let response = loop {
        match pending.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => return Err(classify(code)),
            Some(Err(())) => return Err(CallError::Unavailable("response already taken".into())),
            None => pending.subscribe().block(),
        }
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|_| invalid("response body"))?;
    let stream = incoming.stream().map_err(|_| invalid("response stream"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_REPLY_BYTES {
                    return Err(CallError::Unavailable("reply too large".into()));
                }
            }
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(CallError::Unavailable(format!("reading the reply: {e:?}"))),
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    Ok(Reply {
        status,
        headers,
        body,
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
}
