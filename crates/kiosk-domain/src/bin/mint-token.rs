//! Mints a mobile token, as the bank's mobile backend would:
//!
//!     cargo run -p kiosk-domain --bin mint-token -- CUSTOMER_REF [TTL_SECONDS]
//!
//! Issued now, valid for TTL_SECONDS (default 3600; the app refuses tokens
//! living longer than its `mobile_token_max_lifetime_s`, 24 h by default).
//! The secret is `SPIN_VARIABLE_MOBILE_TOKEN_SECRET` (the variable the app
//! reads), else the development secret (`.env`); the audience
//! `SPIN_VARIABLE_MOBILE_TOKEN_AUDIENCE`, else the app's default.

use kiosk_domain::{AuthConfig, Credentials};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(customer) = args.next() else {
        eprintln!("usage: mint-token CUSTOMER_REF [TTL_SECONDS]");
        std::process::exit(2);
    };
    let ttl: i64 = match args.next().map(|t| t.parse()) {
        None => 3600,
        Some(Ok(ttl)) => ttl,
        Some(Err(e)) => {
            eprintln!("TTL_SECONDS must be a whole number: {e}");
            std::process::exit(2);
        }
    };
    let secret = std::env::var("SPIN_VARIABLE_MOBILE_TOKEN_SECRET")
        .unwrap_or_else(|_| Credentials::DEVELOPMENT_TOKEN_SECRET.to_string());
    let audience = std::env::var("SPIN_VARIABLE_MOBILE_TOKEN_AUDIENCE")
        .unwrap_or_else(|_| Credentials::DEFAULT_TOKEN_AUDIENCE.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let auth = AuthConfig {
        mobile_secret: secret.into_bytes(),
        ..AuthConfig::default()
    };
    println!(
        "{}",
        auth.mint_mobile_token(&customer, &audience, now, now + ttl)
    );
}
