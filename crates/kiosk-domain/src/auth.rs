//! Who is calling: kiosks and counters with API keys, phones with signed tokens.
//!
//! Mobile token format: `base64url(payload) "." base64url(hmac_sha256(secret, payload))`
//! (base64url without padding), where `payload` is the JSON
//! `{"sub": "<customer_ref>", "exp": <unix seconds>}`. A token is rejected
//! (`unauthorized`) when malformed, wrongly signed, or when `exp <= now`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::error::DomainError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A kiosk at a branch, identified by the id of its API key.
    Kiosk { id: String },
    /// Counter staff (or the counter terminal), identified by the id of its API key.
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
}

/// A configured API key. `Debug` does not print the key.
#[derive(Clone)]
pub struct ApiKey {
    /// Who holds it (e.g. `"gangnam-kiosk-1"`); becomes the caller's id.
    pub id: String,
    /// The secret presented by the caller.
    pub key: String,
}

impl ApiKey {
    /// Parses a key list as configured: `id:key,id:key`, where an entry
    /// without `:` is a bare key with id `default_id`. Entries are trimmed
    /// and empty ones skipped; the key is everything after the first `:`.
    /// Never fails: an entry with an empty key is kept and never matches
    /// (see [`AuthConfig::authenticate_api_key`]).
    pub fn parse_list(spec: &str, default_id: &str) -> Vec<ApiKey> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| match entry.split_once(':') {
                Some((id, key)) => ApiKey {
                    id: id.to_string(),
                    key: key.to_string(),
                },
                None => ApiKey {
                    id: default_id.to_string(),
                    key: entry.to_string(),
                },
            })
            .collect()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
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
}

/// Configured credentials. `Debug` does not print secrets.
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
    /// Authenticates any credential.
    pub fn authenticate(
        &self,
        credential: Credential<'_>,
        now: DateTime<Utc>,
    ) -> Result<Caller, DomainError> {
        match credential {
            Credential::ApiKey(key) => self.authenticate_api_key(key),
            Credential::MobileToken(token) => self.authenticate_mobile_token(token, now),
        }
    }

    /// Finds the kiosk or counter key equal to `presented`. Every configured
    /// key is compared, each in constant time (over SHA-256 digests, so the
    /// key length does not leak either).
    pub fn authenticate_api_key(&self, presented: &str) -> Result<Caller, DomainError> {
        let presented_digest = Sha256::digest(presented.as_bytes());
        let mut found: Option<Caller> = None;
        let keys = self
            .kiosk_keys
            .iter()
            .map(|k| (k, true))
            .chain(self.counter_keys.iter().map(|k| (k, false)));
        for (k, is_kiosk) in keys {
            let configured = Sha256::digest(k.key.as_bytes());
            let equal = constant_time_eq(&presented_digest, &configured);
            // An empty configured key never matches.
            if equal && !k.key.is_empty() && found.is_none() {
                found = Some(if is_kiosk {
                    Caller::Kiosk { id: k.id.clone() }
                } else {
                    Caller::Counter { id: k.id.clone() }
                });
            }
        }
        found.ok_or_else(|| DomainError::Unauthorized("unknown API key".into()))
    }

    /// Verifies a mobile token; see the module docs for its format.
    pub fn authenticate_mobile_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Caller, DomainError> {
        if self.mobile_secret.is_empty() {
            return Err(DomainError::Unauthorized(
                "mobile tokens are not accepted by this deployment".into(),
            ));
        }
        let customer_ref = verify_mobile_token(&self.mobile_secret, token, now)?;
        Ok(Caller::Mobile { customer_ref })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenPayload {
    sub: String,
    exp: i64,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Mints a mobile token for `customer_ref`, valid until `exp` (unix seconds).
pub fn mint_mobile_token(secret: &[u8], customer_ref: &str, exp: i64) -> String {
    let payload = serde_json::to_vec(&TokenPayload {
        sub: customer_ref.to_owned(),
        exp,
    })
    .expect("a struct of a string and an integer serializes");
    let mut m = mac(secret);
    m.update(&payload);
    let sig = m.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Longest token accepted (well above any real one).
const MAX_TOKEN_LEN: usize = 2048;

/// Verifies a mobile token and returns its customer reference.
pub fn verify_mobile_token(
    secret: &[u8],
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, DomainError> {
    let malformed = || {
        DomainError::Unauthorized(
            "malformed mobile token; expected base64url(payload).base64url(signature)".into(),
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
    if claims.exp <= now.timestamp() {
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

    fn config() -> AuthConfig {
        AuthConfig {
            kiosk_keys: vec![ApiKey {
                id: "kiosk-1".into(),
                key: "kiosk-secret".into(),
            }],
            counter_keys: vec![
                ApiKey {
                    id: "staff-1".into(),
                    key: "counter-secret".into(),
                },
                ApiKey {
                    id: "disabled".into(),
                    key: "".into(),
                },
            ],
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
        assert_eq!(v, serde_json::json!({"sub": "cust-42", "exp": exp}));
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
            sign(br#"{"sub":"","exp":99999999999}"#),
            sign(br#"{"sub":"x","exp":99999999999,"admin":true}"#),
        ];
        for t in cases {
            let e = c.authenticate_mobile_token(&t, now()).unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{t:?}");
        }
        assert!(
            c.authenticate_mobile_token(&sign(br#"{"sub":"x","exp":99999999999}"#), now())
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
