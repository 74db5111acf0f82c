//! The thin layer every kiosk-api component shares: the domain's [`Store`]
//! over Spin key-value (`wasi:keyvalue`, store `default`), the deployment's
//! credentials from Spin variables ([`credentials`]: every handler starts
//! there), the clock and randomness, one request context
//! ([`Authenticated`], [`Session`]), outbound calls bounded by one deadline
//! ([`outbound`]), and JSON responses with the domain's stable error codes.

pub mod files;
pub mod outbound;
pub mod store_check;

use chrono::{DateTime, Utc};
use kiosk_domain::{
    Binding, Caller, Catalog, Credential, Credentials, DomainError, Kiosk, Misconfigured, Store,
    StoreError,
};
use serde::Serialize;
use spin_sdk::http::{Request, Response};
use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::batch;
use spin_sdk::wit::wasi::keyvalue::store::{self, Bucket};

/// The app's state, in the Spin key-value store `default`.
pub struct KvStore {
    bucket: Bucket,
}

impl KvStore {
    /// Opens the `default` store, refusing one whose compare-and-swap
    /// cannot be trusted ([`store_check`]: one read once it has passed).
    pub fn open() -> Result<Self, DomainError> {
        let bucket = store::open("default").map_err(|e| {
            DomainError::StoreUnavailable(StoreError(format!("opening the store: {e:?}")))
        })?;
        match store_check::check(&bucket, random16()) {
            store_check::Verdict::Exact => Ok(Self { bucket }),
            store_check::Verdict::Misreports(why) => {
                log(&format!("misconfigured: {why}"));
                Err(DomainError::Misconfigured(why))
            }
            store_check::Verdict::Failed(why) => Err(DomainError::StoreUnavailable(StoreError(
                format!("checking the store: {why}"),
            ))),
        }
    }
}

fn store_error(what: &str, e: impl std::fmt::Debug) -> StoreError {
    StoreError(format!("{what}: {e:?}"))
}

impl Store for KvStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bucket.get(key).map_err(|e| store_error("get", e))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.bucket
            .set(key, value)
            .map_err(|e| store_error("set", e))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bucket
            .delete(key)
            .map_err(|e| store_error("delete", e))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        atomics::increment(&self.bucket, key, delta).map_err(|e| store_error("increment", e))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let cas = Cas::new(&self.bucket, key).map_err(|e| store_error("cas", e))?;
        // A handle never read swaps only if the key is absent (kiosk-host;
        // Spin's swap then is the same upsert as after reading "absent"), so
        // insert-if-absent needs no read first: one round trip, not two.
        if let Some(expected) = expected {
            let current = cas.current().map_err(|e| store_error("cas current", e))?;
            if current.as_deref() != Some(expected) {
                return Ok(false);
            }
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(CasError::CasFailed(_)) => Ok(false),
            Err(CasError::StoreError(e)) => Err(store_error("swap", e)),
        }
    }

    /// One `wasi:keyvalue/batch` call. It answers only the keys that exist
    /// (as Spin does), so the answer is matched back to `keys` by name.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: std::collections::HashMap<String, Vec<u8>> = batch::get_many(&self.bucket, keys)
            .map_err(|e| store_error("get-many", e))?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// One `wasi:keyvalue/batch` call.
    fn set_many(&self, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        batch::set_many(&self.bucket, items).map_err(|e| store_error("set-many", e))
    }
}

/// The current time.
pub fn now() -> DateTime<Utc> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    DateTime::from_timestamp(since_epoch.as_secs() as i64, since_epoch.subsec_nanos())
        .unwrap_or_default()
}

/// 16 bytes from the host's secure random source.
pub fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // wasi:random never fails; a zeroed id would still be unique-checked by the domain.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// The branch catalog, from the file the manifest mounts.
pub fn catalog() -> Result<Catalog, DomainError> {
    let path =
        spin_sdk::variables::get("catalog_path").unwrap_or_else(|_| "/catalog/dev.json".into());
    let text = files::read_to_string(&path).map_err(|e| {
        DomainError::StoreUnavailable(StoreError(format!("reading the catalog {path}: {e}")))
    })?;
    Catalog::from_json(&text).map_err(|e| {
        DomainError::StoreUnavailable(StoreError(format!("invalid catalog {path}: {e}")))
    })
}

/// The deployment's credentials, from its Spin variables and checked for
/// its environment ([`Credentials::from_variables`]); otherwise the answer
/// every request gets: 503 `misconfigured`, naming the variables (never
/// their values). Every handler starts here, so a deployment left with a
/// development secret in `stag` or `prod` serves nothing, under `spin up`,
/// `spin deploy` and kiosk-host alike (whose preflight then refuses to
/// start).
pub fn credentials() -> Result<Credentials, Response> {
    Credentials::from_variables(|name| spin_sdk::variables::get(name).ok())
        .map_err(|m| misconfigured(&m))
}

/// 503 `misconfigured` for `m`, also written to the host's log.
pub fn misconfigured(m: &Misconfigured) -> Response {
    log(&format!("misconfigured: {m}"));
    api_error(503, "misconfigured", &m.to_string())
}

/// Writes `line` to the host's log (Spin and kiosk-host echo guest
/// stderr), after the environment's name: `[prod] …`.
pub fn log(line: &str) {
    let environment = spin_sdk::variables::get("environment").unwrap_or_else(|_| "?".into());
    eprintln!("[{}] {line}", environment.trim());
}

/// Who is calling: `Authorization: Bearer <api key | mobile token>`; else,
/// only where the deployment says its host verifies client certificates
/// and names their holder in a header it also strips from clients
/// (`client_identity_header`, set in kiosk-host's environments and never
/// under Spin, which passes such a header through from any client), the
/// certificate named there. Returns the caller and where it may act.
pub fn authenticate(
    credentials: &Credentials,
    req: &Request,
    now: DateTime<Utc>,
) -> Result<(Caller, Binding), DomainError> {
    let Some(header) = req.header("authorization").and_then(|v| v.as_str()) else {
        let certificate = credentials
            .identity_header
            .as_deref()
            .and_then(|name| req.header(name))
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|cn| !cn.is_empty());
        return match certificate {
            Some(cn) => credentials.authenticate(Credential::Certificate(cn), now),
            None => Err(DomainError::Unauthorized(
                "missing Authorization: Bearer credentials".into(),
            )),
        };
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            DomainError::Unauthorized("Authorization must be `Bearer <credential>`".into())
        })?
        .trim();
    // Mobile tokens are `payload.signature`; API keys have no dot.
    let credential = if token.contains('.') {
        Credential::MobileToken(token)
    } else {
        Credential::ApiKey(token)
    };
    credentials.authenticate(credential, now)
}

/// An authenticated request: when it arrived, who sent it, and where it
/// may act.
pub struct Authenticated {
    /// The time the request is handled at.
    pub at: DateTime<Utc>,
    /// Who sent it.
    pub caller: Caller,
    /// The branches (and counters) its credential is bound to.
    pub binding: Binding,
}

impl Authenticated {
    /// Reads the clock and authenticates `req` (`unauthorized` without valid
    /// credentials).
    pub fn from_request(credentials: &Credentials, req: &Request) -> Result<Self, DomainError> {
        let at = now();
        let (caller, binding) = authenticate(credentials, req, at)?;
        Ok(Authenticated {
            at,
            caller,
            binding,
        })
    }

    /// `forbidden` unless the caller's credential may act at `branch` (as
    /// `counter`, when one is named).
    pub fn may_act_at(&self, branch: &str, counter: Option<&str>) -> Result<(), DomainError> {
        self.binding.check(&self.caller, branch, counter)
    }

    /// Opens what the ticket and queue operations need: the catalog and the store.
    pub fn open(self) -> Result<Session, DomainError> {
        Ok(Session {
            catalog: catalog()?,
            store: KvStore::open()?,
            auth: self,
        })
    }
}

/// An authenticated request with the catalog loaded and the store open.
pub struct Session {
    /// When and who.
    pub auth: Authenticated,
    catalog: Catalog,
    store: KvStore,
}

impl Session {
    /// Authenticates `req`, then opens the catalog and the store.
    pub fn open(credentials: &Credentials, req: &Request) -> Result<Self, DomainError> {
        Authenticated::from_request(credentials, req)?.open()
    }

    /// The domain operations over this session's catalog and store.
    pub fn kiosk(&self) -> Kiosk<'_, KvStore> {
        Kiosk::new(&self.catalog, &self.store)
    }
}

/// The client's `x-request-id` when it is a sane token (1–64 letters,
/// digits, `-` or `_`), else a new random one.
pub fn request_id(req: &Request) -> String {
    req.header("x-request-id")
        .and_then(|v| v.as_str())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| random16().iter().map(|b| format!("{b:02x}")).collect())
}

/// A JSON response.
pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(serde_json::to_vec(value).unwrap_or_default())
        .build()
}

/// The error response for a domain error: `{"error":{"code","message"}}`.
pub fn error(e: &DomainError) -> Response {
    let mut response = json(e.status(), &serde_json::json!({ "error": e.body() }));
    if let DomainError::StoreUnavailable(cause) = e {
        // Clients get a generic message; the operator gets the cause (on
        // the host's stderr, as Spin echoes guest output).
        log(&format!("{}: {cause}", e.code()));
    }
    if let Some(seconds) = e.retry_after_s() {
        response.set_header("retry-after", seconds.to_string());
    }
    if matches!(e, DomainError::Unauthorized(_)) {
        response.set_header("www-authenticate", "Bearer");
    }
    response
}

/// An error response with a code of the API layer (routing, methods, size).
pub fn api_error(status: u16, code: &str, message: &str) -> Response {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

/// 405 `method_not_allowed` with `Allow: allow` (the methods the resource
/// takes, e.g. `GET, DELETE`), as RFC 9110 requires of every 405.
pub fn method_not_allowed(allow: &str, message: &str) -> Response {
    let mut response = api_error(405, "method_not_allowed", message);
    response.set_header("allow", allow);
    response
}

/// The request path below the component's route (`spin-path-info`), split
/// into segments.
pub fn path_segments(req: &Request) -> Vec<String> {
    req.header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Largest request body the components read.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Refuses bodies over [`MAX_BODY_BYTES`].
pub fn check_body_size(req: &Request) -> Result<(), Response> {
    if req.body().len() > MAX_BODY_BYTES {
        return Err(api_error(
            413,
            "body_too_large",
            &format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok(())
}
