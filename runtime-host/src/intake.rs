//! What a request must get through before it may take an instance slot:
//! the rate of its client's address, a verified client certificate where
//! the path needs one (the identity headers come from the host alone), and
//! its whole body, bounded in size, time and the host's byte budget.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request};
use hyper::body::Incoming;

use crate::config::ServerSettings;
use crate::error::HostError;
use crate::rate_limit::RateLimiter;
use crate::request_body::{self, BodyBudget, BodyShare};
use crate::tls::ClientIdentity;

/// The header carrying the verified client certificate's common name.
pub const CLIENT_CN_HEADER: &str = "kiosk-client-cn";
/// The header carrying its serial number (hex).
pub const CLIENT_SERIAL_HEADER: &str = "kiosk-client-serial";

/// What the connection a request came on says about it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address.
    pub client: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The verified client certificate's holder, if it presented one.
    pub identity: Option<ClientIdentity>,
}

/// What a request must get through before it may take an instance slot.
pub struct Intake {
    /// Requests per client address.
    pub rate: RateLimiter,
    /// Bytes of bodies held at once.
    pub budget: BodyBudget,
    /// How long a body may take to arrive.
    pub body_timeout: Duration,
    /// Path prefixes only clients with a verified certificate may request.
    pub require_client_cert: Vec<String>,
}

impl Intake {
    /// The intake the server settings describe.
    pub fn new(server: &ServerSettings) -> Self {
        Self {
            rate: RateLimiter::new(server),
            budget: BodyBudget::new(server.body_budget_bytes),
            body_timeout: server.body_timeout,
            require_client_cert: server
                .tls
                .as_ref()
                .map(|tls| tls.require_client_cert.clone())
                .unwrap_or_default(),
        }
    }
}

impl Intake {
    /// Checks `req` before routing: its client's rate, the client
    /// certificate its path needs; sets the identity headers from
    /// `connection` (and only from it).
    pub fn admit(
        &self,
        req: &mut Request<Incoming>,
        connection: &Connection,
    ) -> Result<(), HostError> {
        let caller = self.rate.client_addr(connection.client.ip(), req.headers());
        self.rate
            .check(caller, Instant::now())
            .map_err(|retry_after_s| HostError::RateLimited { retry_after_s })?;
        let needs_certificate = self
            .require_client_cert
            .iter()
            .any(|prefix| req.uri().path().starts_with(prefix.as_str()));
        let headers = req.headers_mut();
        headers.remove(CLIENT_CN_HEADER);
        headers.remove(CLIENT_SERIAL_HEADER);
        match &connection.identity {
            Some(identity) => {
                if let Ok(cn) = HeaderValue::from_str(&identity.common_name) {
                    headers.insert(CLIENT_CN_HEADER, cn);
                }
                if let Ok(serial) = HeaderValue::from_str(&identity.serial) {
                    headers.insert(CLIENT_SERIAL_HEADER, serial);
                }
                Ok(())
            }
            None if needs_certificate => Err(HostError::ClientCertificateRequired),
            None => Ok(()),
        }
    }

    /// Reads the whole body, at most `limit` bytes (see [`request_body::read`]).
    pub async fn read_body(
        &self,
        req: Request<Incoming>,
        limit: u64,
    ) -> Result<(Request<Bytes>, BodyShare), HostError> {
        request_body::read(req, limit, self.body_timeout, &self.budget).await
    }
}
