//! Mints a development mobile token, as the bank's mobile backend would:
//!
//!     cargo run -p kiosk-domain --bin mint-token -- CUSTOMER_REF [TTL_SECONDS]
//!
//! The secret is `SPIN_VARIABLE_MOBILE_TOKEN_SECRET` (the variable the app
//! reads), else the development default from spin.toml.

const DEV_SECRET: &str = "dev-mobile-token-secret-do-not-use-in-production";

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
        .unwrap_or_else(|_| DEV_SECRET.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    println!(
        "{}",
        kiosk_domain::mint_mobile_token(secret.as_bytes(), &customer, now + ttl)
    );
}
