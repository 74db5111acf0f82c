//! A deployment's credentials: read from its variables, checked for its
//! environment (development values refused outside `dev`, named by
//! variable and never by value), counter keys bound to branches and
//! counters, device certificates, and phone tokens held to an audience and
//! a maximum lifetime.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiosk_domain::{
    AuthConfig, Binding, Caller, Credential, Credentials, Environment, mint_mobile_token,
};

const KIOSK_KEY: &str = "kq8Vd3Jw0pLr5Zt2Nx7Hc4Bm9Fs6Ye1G";
const COUNTER_KEY: &str = "cT4nW9qL2vR7xK1pZ8mB5hJ3dF6sG0yA";
const TOKEN_SECRET: &str = "p3Kx9Lm2Qv7Rw4Tz8Yb1Nc6Hd5Jf0Gs3Ua7Ve2Wi9Xo4";

fn now() -> DateTime<Utc> {
    "2026-03-02T01:00:00Z".parse().unwrap()
}

/// Variables as a deployment would give them (`name = value` pairs).
fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A production deployment's variables, with its own secrets.
fn prod() -> BTreeMap<String, String> {
    vars(&[
        ("environment", "prod"),
        (
            "kiosk_api_keys",
            &format!("kiosk-1:{KIOSK_KEY}, kiosk-gangnam-2:cert=kiosk-gangnam-2@gangnam"),
        ),
        (
            "counter_api_keys",
            &format!(
                "gangnam-4:{COUNTER_KEY}@gangnam/4, counter-demo-1:cert=counter-demo-1@demo/1+2"
            ),
        ),
        ("mobile_token_secret", TOKEN_SECRET),
    ])
}

fn read(values: &BTreeMap<String, String>) -> Result<Credentials, kiosk_domain::Misconfigured> {
    Credentials::from_variables(|name| values.get(name).cloned())
}

fn with(mut values: BTreeMap<String, String>, name: &str, value: &str) -> BTreeMap<String, String> {
    values.insert(name.to_string(), value.to_string());
    values
}

/// The development values, as `.env` beside spin.toml gives them.
fn dotenv() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env");
    let text = std::fs::read_to_string(path).expect(".env beside spin.toml");
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').expect("KEY=VALUE");
        let name = key
            .strip_prefix("SPIN_VARIABLE_")
            .expect("only app variables in .env")
            .to_ascii_lowercase();
        values.insert(name, value.to_string());
    }
    values
}

#[test]
fn the_development_values_serve_in_dev_and_nowhere_else() {
    let dev = dotenv();
    // spin.toml's default environment is dev.
    let credentials = read(&with(dev.clone(), "environment", "dev")).unwrap();
    assert_eq!(credentials.environment, Environment::Dev);
    assert_eq!(
        credentials
            .authenticate(Credential::ApiKey("dev-kiosk-key"), now())
            .unwrap()
            .0,
        Caller::Kiosk {
            id: "kiosk-dev".into()
        }
    );
    for environment in ["stag", "prod"] {
        let e = read(&with(dev.clone(), "environment", environment)).unwrap_err();
        let named: Vec<&str> = e.variables().collect();
        assert!(named.contains(&"kiosk_api_keys"), "{e}");
        assert!(named.contains(&"counter_api_keys"), "{e}");
        assert!(named.contains(&"mobile_token_secret"), "{e}");
        let message = e.to_string();
        assert!(message.contains(environment), "{message}");
        for value in dev.values() {
            assert!(!message.contains(value.as_str()), "{value} in {message}");
        }
        for value in Credentials::DEVELOPMENT_KEYS {
            assert!(!message.contains(value), "{message}");
        }
    }
}

#[test]
fn one_development_value_among_real_ones_is_refused_by_its_variable() {
    assert!(read(&prod()).is_ok());
    let mixed = format!("kiosk-1:{KIOSK_KEY},kiosk-dev:dev-kiosk-key");
    let e = read(&with(prod(), "kiosk_api_keys", &mixed)).unwrap_err();
    assert_eq!(e.variables().collect::<Vec<_>>(), ["kiosk_api_keys"]);
    assert!(e.to_string().contains("`kiosk-dev`"), "{e}");
    assert_eq!(e.environment, Some(Environment::Prod));
    // The counter key in the kiosk list is a development key too.
    let e = read(&with(prod(), "kiosk_api_keys", "x:dev-counter-key")).unwrap_err();
    assert_eq!(e.variables().collect::<Vec<_>>(), ["kiosk_api_keys"]);
    let e = read(&with(
        prod(),
        "mobile_token_secret",
        Credentials::DEVELOPMENT_TOKEN_SECRET,
    ))
    .unwrap_err();
    assert_eq!(e.variables().collect::<Vec<_>>(), ["mobile_token_secret"]);
    assert!(
        !e.to_string()
            .contains(Credentials::DEVELOPMENT_TOKEN_SECRET)
    );
    // Short secrets are refused outside dev; an empty one turns phones off.
    let e = read(&with(prod(), "mobile_token_secret", "short-secret")).unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
    assert!(
        read(&with(
            with(prod(), "mobile_token_secret", "short"),
            "environment",
            "dev"
        ))
        .is_ok()
    );
    let off = read(&with(prod(), "mobile_token_secret", "")).unwrap();
    let token = off.mint_mobile_token("c1", now().timestamp(), now().timestamp() + 60);
    assert_eq!(
        off.authenticate(Credential::MobileToken(&token), now())
            .unwrap_err()
            .code(),
        "unauthorized"
    );
}

#[test]
fn a_deployment_that_forgets_a_variable_or_its_environment_fails_closed() {
    for name in [
        "environment",
        "kiosk_api_keys",
        "counter_api_keys",
        "mobile_token_secret",
    ] {
        let mut values = prod();
        values.remove(name);
        let e = read(&values).unwrap_err();
        assert_eq!(e.variables().collect::<Vec<_>>(), [name], "{e}");
        assert!(e.to_string().contains("not set"), "{e}");
    }
    let e = read(&with(prod(), "environment", "production")).unwrap_err();
    assert_eq!(e.variables().collect::<Vec<_>>(), ["environment"]);
    assert_eq!(e.environment, None);
    // Without a known environment the development values are refused too.
    let e = read(&with(dotenv(), "environment", "qa")).unwrap_err();
    assert!(e.variables().any(|v| v == "kiosk_api_keys"), "{e}");
    for (name, value) in [
        ("mobile_token_max_lifetime_s", "0"),
        ("mobile_token_max_lifetime_s", "a day"),
        ("mobile_token_audience", " "),
        ("client_identity_header", "kiosk client cn"),
    ] {
        let e = read(&with(prod(), name, value)).unwrap_err();
        assert_eq!(e.variables().collect::<Vec<_>>(), [name], "{e}");
    }
}

#[test]
fn counter_keys_must_be_bound_to_branches_in_every_environment() {
    for environment in ["dev", "prod"] {
        let values = with(prod(), "environment", environment);
        let e = read(&with(values.clone(), "counter_api_keys", "staff:k1")).unwrap_err();
        assert_eq!(e.variables().collect::<Vec<_>>(), ["counter_api_keys"]);
        assert!(e.to_string().contains("`staff`"), "{e}");
        for bad in [
            "staff:k1@",
            "staff:k1@demo+",
            "staff:k1@de mo",
            "staff:k1@/4",
            ":k1@demo",
        ] {
            let e = read(&with(values.clone(), "counter_api_keys", bad)).unwrap_err();
            assert_eq!(
                e.variables().collect::<Vec<_>>(),
                ["counter_api_keys"],
                "{bad}"
            );
        }
        let e = read(&with(values.clone(), "kiosk_api_keys", "k:key@demo/1")).unwrap_err();
        assert_eq!(e.variables().collect::<Vec<_>>(), ["kiosk_api_keys"]);
        let e = read(&with(values, "kiosk_api_keys", "k:cert=")).unwrap_err();
        assert_eq!(e.variables().collect::<Vec<_>>(), ["kiosk_api_keys"]);
    }
}

#[test]
fn a_counter_key_acts_only_at_its_branch_and_counters() {
    let credentials = read(&prod()).unwrap();
    let (caller, binding) = credentials
        .authenticate(Credential::ApiKey(COUNTER_KEY), now())
        .unwrap();
    assert_eq!(
        caller,
        Caller::Counter {
            id: "gangnam-4".into()
        }
    );
    assert_eq!(
        binding,
        Binding {
            branches: vec!["gangnam".into()],
            counters: vec!["4".into()]
        }
    );
    let e = binding.check(&caller, "demo", Some("4")).unwrap_err();
    assert_eq!((e.code(), e.status()), ("forbidden", 403));
    assert!(e.to_string().contains("gangnam-4"), "{e}");
    assert_eq!(
        binding
            .check(&caller, "gangnam", Some("5"))
            .unwrap_err()
            .status(),
        403
    );
    assert!(binding.check(&caller, "gangnam", Some("4")).is_ok());
    assert!(binding.check(&caller, "gangnam", None).is_ok());
    // Several branches; any counter there.
    let values = with(
        prod(),
        "counter_api_keys",
        "regional:rk-0123456789@demo+jongno",
    );
    let (caller, binding) = read(&values)
        .unwrap()
        .authenticate(Credential::ApiKey("rk-0123456789"), now())
        .unwrap();
    assert!(binding.check(&caller, "jongno", Some("9")).is_ok());
    assert!(binding.check(&caller, "gangnam", Some("1")).is_err());
    // An unbound kiosk acts anywhere; a phone too.
    let (caller, binding) = credentials
        .authenticate(Credential::ApiKey(KIOSK_KEY), now())
        .unwrap();
    assert!(binding.is_unbound());
    assert!(binding.check(&caller, "anywhere", None).is_ok());
}

#[test]
fn devices_are_identified_by_their_certificates_and_each_revoked_alone() {
    let credentials = read(&prod()).unwrap();
    let (caller, binding) = credentials
        .authenticate(Credential::Certificate("kiosk-gangnam-2"), now())
        .unwrap();
    assert_eq!(
        caller,
        Caller::Kiosk {
            id: "kiosk-gangnam-2".into()
        }
    );
    assert_eq!(binding.branches, ["gangnam"]);
    let (caller, binding) = credentials
        .authenticate(Credential::Certificate("counter-demo-1"), now())
        .unwrap();
    assert_eq!(
        caller,
        Caller::Counter {
            id: "counter-demo-1".into()
        }
    );
    assert_eq!(binding.counters, ["1", "2"]);
    // A certificate entry is no key: its text presented as a key is unknown.
    for presented in ["cert=kiosk-gangnam-2", "kiosk-gangnam-2", ""] {
        let e = credentials
            .authenticate(Credential::ApiKey(presented), now())
            .unwrap_err();
        assert_eq!(e.code(), "unauthorized", "{presented:?}");
    }
    // An unregistered certificate is 401; removing one entry revokes that
    // device only.
    let e = credentials
        .authenticate(Credential::Certificate("kiosk-gangnam-9"), now())
        .unwrap_err();
    assert_eq!((e.code(), e.status()), ("unauthorized", 401));
    let revoked = read(&with(
        prod(),
        "kiosk_api_keys",
        &format!("kiosk-1:{KIOSK_KEY}"),
    ))
    .unwrap();
    assert!(
        revoked
            .authenticate(Credential::Certificate("kiosk-gangnam-2"), now())
            .is_err()
    );
    assert!(
        revoked
            .authenticate(Credential::ApiKey(KIOSK_KEY), now())
            .is_ok()
    );
}

#[test]
fn the_identity_header_is_trusted_only_where_a_variable_names_it() {
    assert_eq!(read(&prod()).unwrap().identity_header, None);
    let blank = read(&with(prod(), "client_identity_header", "")).unwrap();
    assert_eq!(blank.identity_header, None);
    let set = read(&with(prod(), "client_identity_header", " Kiosk-Client-CN ")).unwrap();
    assert_eq!(set.identity_header.as_deref(), Some("kiosk-client-cn"));
}

#[test]
fn phone_tokens_need_the_audience_and_a_bounded_lifetime() {
    let credentials = read(&prod()).unwrap();
    assert_eq!(credentials.token_audience, "kiosk-api");
    assert_eq!(credentials.token_max_lifetime_s, 24 * 3600);
    let at = now().timestamp();
    let check = |token: &str| credentials.authenticate(Credential::MobileToken(token), now());
    // A day at most, from issue to expiry.
    assert!(check(&credentials.mint_mobile_token("c1", at, at + 24 * 3600)).is_ok());
    let auth = &credentials.auth;
    let refused = [
        (
            credentials.mint_mobile_token("c1", at, at + 24 * 3600 + 1),
            "longer",
        ),
        (
            credentials.mint_mobile_token("c1", at - 86_000, at + 1000),
            "longer",
        ),
        // Valid until the year 36812.
        (
            credentials.mint_mobile_token("c1", at, 1_099_511_627_776),
            "longer",
        ),
        (
            auth.mint_mobile_token("c1", "another-api", at, at + 60),
            "audience",
        ),
        (auth.mint_mobile_token("c1", "", at, at + 60), "audience"),
        (
            credentials.mint_mobile_token("c1", at + Credentials::TOKEN_CLOCK_SKEW_S + 1, at + 600),
            "future",
        ),
        (credentials.mint_mobile_token("c1", at - 600, at), "expired"),
        (
            credentials.mint_mobile_token("c1", at + 10, at + 5),
            "before it is issued",
        ),
    ];
    for (token, why) in refused {
        let e = check(&token).unwrap_err();
        assert_eq!((e.code(), e.status()), ("unauthorized", 401), "{why}");
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // A small clock difference is tolerated.
    assert!(check(&credentials.mint_mobile_token("c1", at + 30, at + 600)).is_ok());

    // The deployment's own audience and lifetime.
    let strict = read(&with(
        with(prod(), "mobile_token_audience", "kiosk-api-prod"),
        "mobile_token_max_lifetime_s",
        "600",
    ))
    .unwrap();
    let check = |token: &str| strict.authenticate(Credential::MobileToken(token), now());
    assert!(check(&strict.mint_mobile_token("c1", at, at + 600)).is_ok());
    assert!(check(&strict.mint_mobile_token("c1", at, at + 601)).is_err());
    // A token for the default audience (as `mint_mobile_token` mints) is not this one's.
    let default = mint_mobile_token(TOKEN_SECRET.as_bytes(), "c1", at + 60);
    assert!(
        check(&default)
            .unwrap_err()
            .to_string()
            .contains("audience")
    );
    // A token another secret signed is refused whatever it claims.
    let other = AuthConfig {
        mobile_secret: b"another-secret-another-secret-another".to_vec(),
        ..AuthConfig::default()
    }
    .mint_mobile_token("c1", "kiosk-api-prod", at, at + 60);
    assert!(check(&other).unwrap_err().to_string().contains("signature"));
}
