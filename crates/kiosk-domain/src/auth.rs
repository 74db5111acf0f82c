//! Who is calling, and with what a deployment lets them in.
//!
//! - **Kiosks and counters** present an API key (`Authorization: Bearer
//!   KEY`) or, where the host verifies client certificates, the certificate
//!   itself ([`Credential::Certificate`]: its common name, as the host
//!   names it). Both come from one key list per kind of device
//!   ([`ApiKey::parse_list`]), so each device can be revoked on its own by
//!   removing its entry. Counter entries are bound to branches (and
//!   optionally counters): a [`Binding`].
//! - **Phones** present a token the bank's mobile backend signs:
//!   `base64url(payload) "." base64url(hmac_sha256(secret, payload))`
//!   (base64url without padding), where `payload` is the JSON
//!   `{"sub": "<customer_ref>", "aud": "<audience>", "iat": <unix s>, "exp": <unix s>}`.
//!   A token is `unauthorized` when malformed, wrongly signed, for another
//!   audience, issued in the future (beyond [`Credentials::TOKEN_CLOCK_SKEW_S`]), living
//!   longer than the maximum lifetime (`exp - iat`, 24 hours by default),
//!   or expired (`exp <= now`).
//! - **A deployment** ([`Credentials::from_variables`]) knows its
//!   environment (`dev`, `stag`, `prod`); outside `dev` it refuses the
//!   development credentials ([`Credentials::DEVELOPMENT_KEYS`],
//!   [`Credentials::DEVELOPMENT_TOKEN_SECRET`]) and weak token secrets, so
//!   a production deployment with a variable left at its development value
//!   serves nothing ([`Misconfigured`]) instead of accepting it.
//!
//! Key list entries, separated by `,` (whitespace around them is ignored):
//!
//! | entry | meaning |
//! | --- | --- |
//! | `ID:KEY` | an API key held by device `ID` |
//! | `ID:cert=CN` | the device `ID` holding a client certificate whose common name is `CN` |
//! | `…@BRANCH+BRANCH` | bound to those branches (required for counters) |
//! | `…@BRANCH/COUNTER+COUNTER` | … and to those counters (counters only) |
//! | `KEY` | a key with the list's default id (kept for old lists) |
//!
//! Keys and common names cannot contain `,` or `@`; an entry with an empty
//! key is kept and never matches (a disabled device).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DomainError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A kiosk at a branch, identified by the id of its key-list entry.
    Kiosk { id: String },
    /// Counter staff (or the counter terminal), identified by the id of its key-list entry.
    Counter { id: String },
    /// A phone, acting for one customer.
    Mobile { customer_ref: String },
}

impl Caller {
    /// The scope idempotency keys live in: keys are per caller.
    pub(crate) fn idempotency_scope(&self) -> String {
        match self {
            Caller::Kiosk { id } => format!("kiosk/{id}"),
            Caller::Counter { id } => format!("counter/{id}"),
            Caller::Mobile { customer_ref } => format!("mobile/{customer_ref}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Caller::Kiosk { id } => format!("kiosk `{id}`"),
            Caller::Counter { id } => format!("counter `{id}`"),
            Caller::Mobile { .. } => "this phone".into(),
        }
    }
}

/// Where a credential may act: the branches (and counters) its key-list
/// entry names after `@`. Empty lists mean anywhere (phones, and kiosks
/// whose entry names no branch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Branch ids; empty: every branch.
    pub branches: Vec<String>,
    /// Counter ids (at each of `branches`); empty: every counter.
    pub counters: Vec<String>,
}

impl Binding {
    /// Whether it binds to nothing (acts anywhere).
    pub fn is_unbound(&self) -> bool {
        self.branches.is_empty() && self.counters.is_empty()
    }

    /// `forbidden` (403) unless `caller` may act at `branch`, as `counter`
    /// when one is given.
    pub fn check(
        &self,
        caller: &Caller,
        branch: &str,
        counter: Option<&str>,
    ) -> Result<(), DomainError> {
        if !self.branches.is_empty() && !self.branches.iter().any(|b| b == branch) {
            return Err(DomainError::Forbidden(format!(
                "{} may act only at branch {}, not at {branch:?}",
                caller.describe(),
                self.branches.join(", ")
            )));
        }
        if let Some(counter) = counter
            && !self.counters.is_empty()
            && !self.counters.iter().any(|c| c == counter)
        {
            return Err(DomainError::Forbidden(format!(
                "{} may act only as counter {}, not as counter {counter:?}",
                caller.describe(),
                self.counters.join(", ")
            )));
        }
        Ok(())
    }

    /// Reads `BRANCH+BRANCH[/COUNTER+COUNTER]`.
    fn parse(text: &str) -> Result<Binding, String> {
        let (branches, counters) = match text.split_once('/') {
            Some((b, c)) => (b, Some(c)),
            None => (text, None),
        };
        let list = |text: &str, what: &str| -> Result<Vec<String>, String> {
            text.split('+')
                .map(str::trim)
                .map(|id| {
                    if !id.is_empty()
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        Ok(id.to_string())
                    } else {
                        Err(format!(
                            "`{id}` is not a {what} id (letters, digits, `-`, `_`; several joined with `+`)"
                        ))
                    }
                })
                .collect()
        };
        Ok(Binding {
            branches: list(branches, "branch")?,
            counters: match counters {
                Some(c) => list(c, "counter")?,
                None => Vec::new(),
            },
        })
    }
}

/// A configured key-list entry: an API key, or a device certificate.
/// `Debug` does not print the key.
#[derive(Clone, Default)]
pub struct ApiKey {
    /// Who holds it (e.g. `"gangnam-kiosk-1"`); becomes the caller's id.
    pub id: String,
    /// The secret presented by the caller; empty for a certificate entry
    /// (an empty key never matches).
    pub key: String,
    /// For a certificate entry (`ID:cert=CN`): the common name of the
    /// device's client certificate.
    pub certificate_cn: Option<String>,
    /// Where it may act.
    pub binding: Binding,
}

impl ApiKey {
    /// Parses a key list as configured (see the module docs for the
    /// syntax), where an entry without `:` is a bare key with id
    /// `default_id`. Entries are trimmed and empty ones skipped; the key is
    /// everything after the first `:` up to an `@`. Never fails: an entry
    /// that does not parse is left out (it never matches), and an entry
    /// with an empty key is kept and never matches. [`Credentials`] reads
    /// the lists strictly instead, naming what is wrong.
    pub fn parse_list(spec: &str, default_id: &str) -> Vec<ApiKey> {
        entries(spec)
            .filter_map(|entry| parse_entry(entry, default_id).ok())
            .collect()
    }

    fn label(&self) -> &str {
        if self.id.is_empty() { "?" } else { &self.id }
    }
}

fn entries(spec: &str) -> impl Iterator<Item = &str> {
    spec.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_entry(entry: &str, default_id: &str) -> Result<ApiKey, String> {
    let (id, rest) = match entry.split_once(':') {
        Some((id, rest)) => (id.trim(), rest),
        None => (default_id, entry),
    };
    let (credential, binding) = match rest.split_once('@') {
        Some((credential, binding)) => (credential, Some(binding)),
        None => (rest, None),
    };
    let binding = match binding {
        Some(text) => Binding::parse(text).map_err(|e| format!("entry `{id}`: {e}"))?,
        None => Binding::default(),
    };
    let (key, certificate_cn) = match credential.strip_prefix("cert=") {
        Some(cn) if cn.trim().is_empty() => {
            return Err(format!("entry `{id}`: `cert=` needs a common name"));
        }
        Some(cn) => (String::new(), Some(cn.trim().to_string())),
        None => (credential.to_string(), None),
    };
    Ok(ApiKey {
        id: id.to_string(),
        key,
        certificate_cn,
        binding,
    })
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("certificate_cn", &self.certificate_cn)
            .field("binding", &self.binding)
            .finish()
    }
}

/// The credentials a caller presents, as extracted from the HTTP request.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A kiosk or counter API key.
    ApiKey(&'a str),
    /// A mobile bearer token.
    MobileToken(&'a str),
    /// The common name of a client certificate the host verified (chain
    /// and revocation) and named in a header it sets and strips from
    /// clients. Only ever built from a header the deployment says its host
    /// provides ([`Credentials::identity_header`]).
    Certificate(&'a str),
}

/// Configured keys and the token secret. `Debug` does not print secrets.
#[derive(Clone, Default)]
pub struct AuthConfig {
    pub kiosk_keys: Vec<ApiKey>,
    pub counter_keys: Vec<ApiKey>,
    /// HMAC-SHA256 key for mobile tokens (use ≥ 32 random bytes). Empty = mobile disabled.
    pub mobile_secret: Vec<u8>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("kiosk_keys", &self.kiosk_keys)
            .field("counter_keys", &self.counter_keys)
            .field("mobile_secret", &"<redacted>")
            .finish()
    }
}

impl AuthConfig {
    /// Authenticates any credential; mobile tokens with the default
    /// audience and maximum lifetime.
    pub fn authenticate(
        &self,
        credential: Credential<'_>,
        now: DateTime<Utc>,
    ) -> Result<Caller, DomainError> {
        self.identify(
            credential,
            now,
            Credentials::DEFAULT_TOKEN_AUDIENCE,
            Credentials::DEFAULT_TOKEN_MAX_LIFETIME_S,
        )
        .map(|(caller, _)| caller)
    }

    /// Finds the kiosk or counter key equal to `presented`. Every configured
    /// key is compared, each in constant time (over SHA-256 digests, so the
    /// key length does not leak either).
    pub fn authenticate_api_key(&self, presented: &str) -> Result<Caller, DomainError> {
        self.api_key_entry(presented).map(|(caller, _)| caller)
    }

    /// Finds the kiosk or counter whose certificate has common name `cn`.
    pub fn authenticate_certificate(&self, cn: &str) -> Result<Caller, DomainError> {
        self.certificate_entry(cn).map(|(caller, _)| caller)
    }

    /// Verifies a mobile token with the default audience and maximum
    /// lifetime; see the module docs for its format.
    pub fn authenticate_mobile_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Caller, DomainError> {
        self.identify(
            Credential::MobileToken(token),
            now,
            Credentials::DEFAULT_TOKEN_AUDIENCE,
            Credentials::DEFAULT_TOKEN_MAX_LIFETIME_S,
        )
        .map(|(caller, _)| caller)
    }

    /// Mints a mobile token for `customer_ref` with this secret, as the
    /// bank's mobile backend does: for `audience`, issued at `iat`, valid
    /// until `exp` (unix seconds).
    pub fn mint_mobile_token(
        &self,
        customer_ref: &str,
        audience: &str,
        iat: i64,
        exp: i64,
    ) -> String {
        mint(&self.mobile_secret, customer_ref, audience, iat, exp)
    }

    fn identify(
        &self,
        credential: Credential<'_>,
        now: DateTime<Utc>,
        audience: &str,
        max_lifetime_s: i64,
    ) -> Result<(Caller, Binding), DomainError> {
        match credential {
            Credential::ApiKey(key) => self.api_key_entry(key),
            Credential::Certificate(cn) => self.certificate_entry(cn),
            Credential::MobileToken(token) => {
                if self.mobile_secret.is_empty() {
                    return Err(DomainError::Unauthorized(
                        "mobile tokens are not accepted by this deployment".into(),
                    ));
                }
                let customer_ref =
                    verify(&self.mobile_secret, token, now, audience, max_lifetime_s)?;
                Ok((Caller::Mobile { customer_ref }, Binding::default()))
            }
        }
    }

    fn entries(&self) -> impl Iterator<Item = (&ApiKey, bool)> {
        self.kiosk_keys
            .iter()
            .map(|k| (k, true))
            .chain(self.counter_keys.iter().map(|k| (k, false)))
    }

    fn api_key_entry(&self, presented: &str) -> Result<(Caller, Binding), DomainError> {
        let presented_digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for (k, is_kiosk) in self.entries() {
            let configured = Sha256::digest(k.key.as_bytes());
            let equal = constant_time_eq(&presented_digest, &configured);
            // An empty configured key (a certificate entry, or a disabled
            // one) never matches.
            if equal && !k.key.is_empty() && found.is_none() {
                found = Some(caller_of(k, is_kiosk));
            }
        }
        found.ok_or_else(|| DomainError::Unauthorized("unknown API key".into()))
    }

    fn certificate_entry(&self, cn: &str) -> Result<(Caller, Binding), DomainError> {
        self.entries()
            .find(|(k, _)| k.certificate_cn.as_deref() == Some(cn))
            .map(|(k, is_kiosk)| caller_of(k, is_kiosk))
            .ok_or_else(|| {
                DomainError::Unauthorized(format!(
                    "the client certificate `{cn}` is not registered with this deployment"
                ))
            })
    }
}

fn caller_of(k: &ApiKey, is_kiosk: bool) -> (Caller, Binding) {
    let caller = if is_kiosk {
        Caller::Kiosk { id: k.id.clone() }
    } else {
        Caller::Counter { id: k.id.clone() }
    };
    (caller, k.binding.clone())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The environment a deployment runs in (the Spin variable `environment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Development: laptops, tests and the DEV hosts; development
    /// credentials are accepted.
    Dev,
    /// Staging.
    Stag,
    /// Production.
    Prod,
}

impl Environment {
    /// `dev`, `stag` or `prod`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Stag => "stag",
            Environment::Prod => "prod",
        }
    }

    /// Reads `dev`, `stag` or `prod` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Option<Environment> {
        match text.trim() {
            "dev" => Some(Environment::Dev),
            "stag" => Some(Environment::Stag),
            "prod" => Some(Environment::Prod),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a deployment may not serve: each variable that is wrong and what is
/// wrong with it, never its value. The API answers every request with 503
/// `misconfigured` and this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misconfigured {
    /// The environment, when its variable could be read.
    pub environment: Option<Environment>,
    /// `(variable, what is wrong)`, in the order the variables are read.
    pub problems: Vec<(&'static str, String)>,
}

impl Misconfigured {
    /// The variables named.
    pub fn variables(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.problems.iter().map(|(variable, _)| *variable)
    }
}

impl fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.environment {
            Some(env) => write!(f, "this {env} deployment is misconfigured: ")?,
            None => write!(f, "this deployment is misconfigured: ")?,
        }
        for (i, (variable, problem)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{variable} {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Misconfigured {}

/// What a deployment authenticates with, read from its variables and
/// checked for its environment. `Debug` does not print secrets.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Where it runs.
    pub environment: Environment,
    /// The key lists and the token secret.
    pub auth: AuthConfig,
    /// The `aud` mobile tokens must carry.
    pub token_audience: String,
    /// The longest a mobile token may live (`exp - iat`), in seconds.
    pub token_max_lifetime_s: i64,
    /// The request header in which the host names the holder of a verified
    /// client certificate; `None` (the default, and always under Spin,
    /// which passes any client-sent header through): certificates identify
    /// no one.
    pub identity_header: Option<String>,
}

impl Credentials {
    /// The audience of mobile tokens when the deployment names none.
    pub const DEFAULT_TOKEN_AUDIENCE: &'static str = "kiosk-api";

    /// The longest a mobile token may live (`exp - iat`) when the
    /// deployment sets no maximum: 24 hours.
    pub const DEFAULT_TOKEN_MAX_LIFETIME_S: i64 = 24 * 3600;

    /// How far in the future a token's `iat` may lie (clocks differ).
    pub const TOKEN_CLOCK_SKEW_S: i64 = 60;

    /// The variables read, in order.
    pub const VARIABLES: [&'static str; 7] = [
        "environment",
        "kiosk_api_keys",
        "counter_api_keys",
        "mobile_token_secret",
        "mobile_token_audience",
        "mobile_token_max_lifetime_s",
        "client_identity_header",
    ];

    /// The development API keys (`.env` beside spin.toml, README); refused
    /// outside `dev` wherever they appear in a key list.
    pub const DEVELOPMENT_KEYS: [&'static str; 2] = ["dev-kiosk-key", "dev-counter-key"];

    /// The development token secret; refused outside `dev`.
    pub const DEVELOPMENT_TOKEN_SECRET: &'static str =
        "dev-mobile-token-secret-do-not-use-in-production";

    /// The shortest token secret accepted outside `dev`, in bytes.
    pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

    /// Reads the deployment's credentials from its variables (`variable`
    /// answers a name with its value, `None` when unset):
    ///
    /// - `environment`: `dev`, `stag` or `prod` (required);
    /// - `kiosk_api_keys`, `counter_api_keys`: key lists (required; may be
    ///   empty); every counter entry names its branches;
    /// - `mobile_token_secret` (required; empty: phones are not accepted);
    /// - `mobile_token_audience` (default [`Self::DEFAULT_TOKEN_AUDIENCE`]),
    ///   `mobile_token_max_lifetime_s` (default 86400);
    /// - `client_identity_header`: the header the host names verified
    ///   client certificates in (default: none).
    ///
    /// Outside `dev`, a development key in either list, the development
    /// token secret, or a token secret shorter than
    /// [`Self::MIN_TOKEN_SECRET_BYTES`] is refused. Every problem is named
    /// by its variable in the error; values never appear in it.
    pub fn from_variables(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Credentials, Misconfigured> {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let environment = match variable("environment") {
            Some(text) => match Environment::parse(&text) {
                Some(env) => Some(env),
                None => {
                    problems.push(("environment", "must be dev, stag or prod".into()));
                    None
                }
            },
            None => {
                problems.push(("environment", "is not set (dev, stag or prod)".into()));
                None
            }
        };
        // Until the environment is known, hold it to production's rules.
        let strict = environment != Some(Environment::Dev);
        let mut required = |name: &'static str| {
            let value = variable(name);
            if value.is_none() {
                problems.push((name, "is not set".into()));
            }
            value.unwrap_or_default()
        };
        let kiosk_spec = required("kiosk_api_keys");
        let counter_spec = required("counter_api_keys");
        let secret = required("mobile_token_secret");

        let kiosk_keys = key_list(&kiosk_spec, "kiosk", false, strict);
        let counter_keys = key_list(&counter_spec, "counter", true, strict);
        let (kiosk_keys, counter_keys) = match (kiosk_keys, counter_keys) {
            (Ok(k), Ok(c)) => (k, c),
            (k, c) => {
                for (list, variable) in [(k, "kiosk_api_keys"), (c, "counter_api_keys")] {
                    if let Err(errors) = list {
                        problems.extend(errors.into_iter().map(|e| (variable, e)));
                    }
                }
                (Vec::new(), Vec::new())
            }
        };
        if strict && !secret.is_empty() {
            if secret == Self::DEVELOPMENT_TOKEN_SECRET {
                problems.push((
                    "mobile_token_secret",
                    "is the development secret, refused outside dev (anyone could mint tokens)"
                        .into(),
                ));
            } else if secret.len() < Self::MIN_TOKEN_SECRET_BYTES {
                problems.push((
                    "mobile_token_secret",
                    format!(
                        "is shorter than {} bytes, refused outside dev",
                        Self::MIN_TOKEN_SECRET_BYTES
                    ),
                ));
            }
        }
        let token_audience = variable("mobile_token_audience")
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| Credentials::DEFAULT_TOKEN_AUDIENCE.to_string());
        if token_audience.is_empty() {
            problems.push(("mobile_token_audience", "is empty".into()));
        }
        let token_max_lifetime_s = match variable("mobile_token_max_lifetime_s") {
            None => Credentials::DEFAULT_TOKEN_MAX_LIFETIME_S,
            Some(text) => match text.trim().parse::<i64>() {
                Ok(s) if s > 0 => s,
                _ => {
                    problems.push((
                        "mobile_token_max_lifetime_s",
                        "must be a whole number of seconds above 0".into(),
                    ));
                    Credentials::DEFAULT_TOKEN_MAX_LIFETIME_S
                }
            },
        };
        let identity_header = variable("client_identity_header")
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        if let Some(header) = &identity_header
            && !header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push((
                "client_identity_header",
                "must be a header name (letters, digits, `-`)".into(),
            ));
        }
        match environment {
            Some(environment) if problems.is_empty() => Ok(Credentials {
                environment,
                auth: AuthConfig {
                    kiosk_keys,
                    counter_keys,
                    mobile_secret: secret.into_bytes(),
                },
                token_audience,
                token_max_lifetime_s,
                identity_header,
            }),
            _ => Err(Misconfigured {
                environment,
                problems,
            }),
        }
    }

    /// Authenticates `credential`: the caller, and where it may act.
    /// Mobile tokens must carry this deployment's audience and live no
    /// longer than its maximum.
    pub fn authenticate(
        &self,
        credential: Credential<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Caller, Binding), DomainError> {
        self.auth.identify(
            credential,
            now,
            &self.token_audience,
            self.token_max_lifetime_s,
        )
    }

    /// Mints a token for this deployment (its secret and audience), issued
    /// at `iat` and valid until `exp`.
    pub fn mint_mobile_token(&self, customer_ref: &str, iat: i64, exp: i64) -> String {
        self.auth
            .mint_mobile_token(customer_ref, &self.token_audience, iat, exp)
    }
}

/// Reads one key list strictly: every entry parses, counter entries are
/// bound to branches, kiosk entries to no counters, and (when `strict`) no
/// development key appears.
fn key_list(
    spec: &str,
    default_id: &str,
    counters: bool,
    strict: bool,
) -> Result<Vec<ApiKey>, Vec<String>> {
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for entry in entries(spec) {
        match parse_entry(entry, default_id) {
            Err(e) => errors.push(e),
            Ok(key) if key.id.is_empty() => {
                errors.push("has an entry without an id before `:`".into());
            }
            Ok(key) if counters && key.binding.branches.is_empty() => errors.push(format!(
                "entry `{}` is bound to no branch (write `{}:…@BRANCH`)",
                key.label(),
                key.label()
            )),
            Ok(key) if !counters && !key.binding.counters.is_empty() => errors.push(format!(
                "entry `{}` names counters; only counter keys are bound to counters",
                key.label()
            )),
            Ok(key)
                if strict
                    && Credentials::DEVELOPMENT_KEYS
                        .iter()
                        .any(|dev| key.key.as_bytes() == dev.as_bytes()) =>
            {
                errors.push(format!(
                    "holds a development key (entry `{}`), refused outside dev",
                    key.label()
                ));
            }
            Ok(key) => keys.push(key),
        }
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenPayload {
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn mint(secret: &[u8], customer_ref: &str, audience: &str, iat: i64, exp: i64) -> String {
    let payload = serde_json::to_vec(&TokenPayload {
        sub: customer_ref.to_owned(),
        aud: audience.to_owned(),
        iat,
        exp,
    })
    .expect("a struct of strings and integers serializes");
    let mut m = mac(secret);
    m.update(&payload);
    let sig = m.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Mints an hour-long mobile token for `customer_ref` that expires at
/// `exp` (unix seconds; `iat = exp - 3600`), for the default audience.
/// Tokens for a deployment's own audience and lifetime:
/// [`Credentials::mint_mobile_token`], [`AuthConfig::mint_mobile_token`].
pub fn mint_mobile_token(secret: &[u8], customer_ref: &str, exp: i64) -> String {
    mint(
        secret,
        customer_ref,
        Credentials::DEFAULT_TOKEN_AUDIENCE,
        exp - 3600,
        exp,
    )
}

/// Longest token accepted (well above any real one).
const MAX_TOKEN_LEN: usize = 2048;

/// Verifies a mobile token for the default audience and maximum lifetime
/// and returns its customer reference.
pub fn verify_mobile_token(
    secret: &[u8],
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, DomainError> {
    verify(
        secret,
        token,
        now,
        Credentials::DEFAULT_TOKEN_AUDIENCE,
        Credentials::DEFAULT_TOKEN_MAX_LIFETIME_S,
    )
}

fn verify(
    secret: &[u8],
    token: &str,
    now: DateTime<Utc>,
    audience: &str,
    max_lifetime_s: i64,
) -> Result<String, DomainError> {
    let malformed = || {
        DomainError::Unauthorized(
            "malformed mobile token; expected base64url(payload).base64url(signature) with payload {sub, aud, iat, exp}".into(),
        )
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed());
    }
    let (payload_b64, sig_b64) = token.split_once('.').ok_or_else(malformed)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| malformed())?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| malformed())?;
    let mut m = mac(secret);
    m.update(&payload);
    m.verify_slice(&sig)
        .map_err(|_| DomainError::Unauthorized("mobile token signature is not valid".into()))?;
    let claims: TokenPayload = serde_json::from_slice(&payload).map_err(|_| malformed())?;
    if claims.aud != audience {
        return Err(DomainError::Unauthorized(
            "mobile token is for another audience".into(),
        ));
    }
    let now = now.timestamp();
    if claims.iat > now.saturating_add(Credentials::TOKEN_CLOCK_SKEW_S) {
        return Err(DomainError::Unauthorized(
            "mobile token is issued in the future; check the clock of its issuer".into(),
        ));
    }
    if claims.exp <= claims.iat {
        return Err(DomainError::Unauthorized(
            "mobile token expires before it is issued".into(),
        ));
    }
    if claims.exp.saturating_sub(claims.iat) > max_lifetime_s {
        return Err(DomainError::Unauthorized(format!(
            "mobile token lives longer than {max_lifetime_s} s (exp - iat); sign in again"
        )));
    }
    if claims.exp <= now {
        return Err(DomainError::Unauthorized(
            "mobile token has expired; sign in again".into(),
        ));
    }
    crate::model::validate_customer_ref(&claims.sub)
        .map_err(|_| DomainError::Unauthorized("mobile token has an invalid subject".into()))?;
    Ok(claims.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> DateTime<Utc> {
        "2026-03-02T01:00:00Z".parse().unwrap()
    }

    fn key(id: &str, key: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            key: key.into(),
            ..ApiKey::default()
        }
    }

    fn config() -> AuthConfig {
        AuthConfig {
            kiosk_keys: vec![key("kiosk-1", "kiosk-secret")],
            counter_keys: vec![key("staff-1", "counter-secret"), key("disabled", "")],
            mobile_secret: SECRET.to_vec(),
        }
    }

    #[test]
    fn api_keys_map_to_callers() {
        let c = config();
        assert_eq!(
            c.authenticate_api_key("kiosk-secret").unwrap(),
            Caller::Kiosk {
                id: "kiosk-1".into()
            }
        );
        assert_eq!(
            c.authenticate(Credential::ApiKey("counter-secret"), now())
                .unwrap(),
            Caller::Counter {
                id: "staff-1".into()
            }
        );
        for bad in ["", "kiosk-secreT", "kiosk-secret ", "counter"] {
            let e = c.authenticate_api_key(bad).unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{bad:?}");
            assert!(!e.to_string().contains("secret"));
        }
    }

    #[test]
    fn api_key_lists_take_ids_or_defaults() {
        let keys = ApiKey::parse_list("k1:aaa, bbb ,,k2:c:d", "kiosk");
        let pairs: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k.id.as_str(), k.key.as_str()))
            .collect();
        assert_eq!(pairs, [("k1", "aaa"), ("kiosk", "bbb"), ("k2", "c:d")]);
        assert!(ApiKey::parse_list(" , ", "kiosk").is_empty());
    }

    #[test]
    fn entries_take_bindings_and_certificates() {
        let keys = ApiKey::parse_list(
            "c1:k1@gangnam/4+5, c2:cert=counter-gangnam-6@gangnam/6, c3:k3@demo+jongno, bad:k@x y",
            "counter",
        );
        assert_eq!(keys.len(), 3, "the entry that does not parse is left out");
        assert_eq!(keys[0].key, "k1");
        assert_eq!(keys[0].binding.branches, ["gangnam"]);
        assert_eq!(keys[0].binding.counters, ["4", "5"]);
        assert_eq!(keys[1].key, "");
        assert_eq!(keys[1].certificate_cn.as_deref(), Some("counter-gangnam-6"));
        assert_eq!(keys[2].binding.branches, ["demo", "jongno"]);
        assert!(keys[2].binding.counters.is_empty());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = format!("{:?}", config());
        assert!(!s.contains("kiosk-secret"));
        assert!(!s.contains("0123456789abcdef"));
        assert!(s.contains("kiosk-1"));
    }

    #[test]
    fn mobile_token_round_trip() {
        let exp = now().timestamp() + 3600;
        let token = mint_mobile_token(SECRET, "cust-42", exp);
        assert!(!token.contains('='));
        assert_eq!(
            config()
                .authenticate(Credential::MobileToken(&token), now())
                .unwrap(),
            Caller::Mobile {
                customer_ref: "cust-42".into()
            }
        );
        // The payload is the documented JSON.
        let payload = URL_SAFE_NO_PAD
            .decode(token.split_once('.').unwrap().0)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"sub": "cust-42", "aud": "kiosk-api", "iat": exp - 3600, "exp": exp})
        );
    }

    #[test]
    fn expired_token_is_rejected() {
        let c = config();
        let token = mint_mobile_token(SECRET, "cust-42", now().timestamp());
        let e = c.authenticate_mobile_token(&token, now()).unwrap_err();
        assert_eq!(e.code(), "unauthorized");
        assert!(e.to_string().contains("expired"));
        let token = mint_mobile_token(SECRET, "cust-42", now().timestamp() + 1);
        assert!(c.authenticate_mobile_token(&token, now()).is_ok());
    }

    #[test]
    fn bad_signature_is_rejected() {
        let c = config();
        let exp = now().timestamp() + 3600;
        let other = mint_mobile_token(b"another secret", "cust-42", exp);
        let e = c.authenticate_mobile_token(&other, now()).unwrap_err();
        assert!(e.to_string().contains("signature"));

        // Payload swapped for another customer's, signature kept.
        let mine = mint_mobile_token(SECRET, "cust-42", exp);
        let theirs = mint_mobile_token(SECRET, "cust-43", exp);
        let forged = format!(
            "{}.{}",
            theirs.split_once('.').unwrap().0,
            mine.split_once('.').unwrap().1
        );
        assert_eq!(
            c.authenticate_mobile_token(&forged, now())
                .unwrap_err()
                .code(),
            "unauthorized"
        );
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let c = config();
        let sign = |payload: &[u8]| {
            let mut m = mac(SECRET);
            m.update(payload);
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
            )
        };
        let long = "a".repeat(5000);
        let cases = [
            "".to_string(),
            "abc".to_string(),
            "a.b.c".to_string(),
            "!!!.???".to_string(),
            long,
            sign(b"not json"),
            sign(br#"{"sub":"x"}"#),
            // The old payload: no audience, no issue time.
            sign(br#"{"sub":"x","exp":1772416800}"#),
            sign(br#"{"sub":"","aud":"kiosk-api","iat":1772413200,"exp":1772416800}"#),
            sign(
                br#"{"sub":"x","aud":"kiosk-api","iat":1772413200,"exp":1772416800,"admin":true}"#,
            ),
        ];
        for t in cases {
            let e = c.authenticate_mobile_token(&t, now()).unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{t:?}");
        }
        assert!(
            c.authenticate_mobile_token(
                &sign(br#"{"sub":"x","aud":"kiosk-api","iat":1772413200,"exp":1772416800}"#),
                now()
            )
            .is_ok()
        );
    }

    #[test]
    fn mobile_disabled_without_secret() {
        let c = AuthConfig::default();
        let token = mint_mobile_token(b"", "cust", now().timestamp() + 60);
        assert_eq!(
            c.authenticate_mobile_token(&token, now())
                .unwrap_err()
                .code(),
            "unauthorized"
        );
    }
}
