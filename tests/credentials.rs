//! Credentials per environment and device identities, on the real
//! kiosk-host serving the real app (spin.toml, development values from
//! `.env` beside it): a `prod` deployment holding a development secret
//! answers every request 503 `misconfigured` and kiosk-host's preflight
//! refuses to start it; counter keys act only at their branches and
//! counters; phone tokens need the deployment's audience and a bounded
//! lifetime; kiosks and counters identified by their client certificates
//! (mTLS), each revocable on its own, and trusted only where the deployment
//! says its host verifies them.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kiosk_domain::{AuthConfig, Credentials};
use serde_json::{Value, json};
use support::ca::Ca;
use support::{Host, client, guest_wasm, repo};

/// Secrets a production deployment could hold (none is a development value).
const PROD_KIOSK_KEY: &str = "kq8Vd3Jw0pLr5Zt2Nx7Hc4Bm9Fs6Ye1G";
const PROD_COUNTER_KEY: &str = "cT4nW9qL2vR7xK1pZ8mB5hJ3dF6sG0yA";
const PROD_TOKEN_SECRET: &str = "p3Kx9Lm2Qv7Rw4Tz8Yb1Nc6Hd5Jf0Gs3Ua7Ve2Wi9Xo4";

/// The development token secret (`.env`).
fn dev_secret() -> &'static [u8] {
    Credentials::DEVELOPMENT_TOKEN_SECRET.as_bytes()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The app (repo spin.toml) on kiosk-host with these environment variables
/// and host configuration lines (none: no `--config`).
fn start(env: &[(&str, &str)], config: Option<&str>) -> (tempfile::TempDir, Host) {
    guest_wasm("ticket");
    let state = tempfile::tempdir().unwrap();
    let mut extra: Vec<String> = Vec::new();
    if let Some(config) = config {
        let path = state.path().join("host.toml");
        std::fs::write(&path, config).unwrap();
        extra.extend(["--config".to_string(), path.to_str().unwrap().to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let host = Host::start_with_env(&repo().join("spin.toml"), state.path(), &extra, env);
    (state, host)
}

/// Sends `method url` with these headers and JSON body: status and body.
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method.parse().unwrap(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Method, path, headers and JSON body of one request.
type Request<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Option<Value>);

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn ticket_at(branch: &str, channel: &str) -> Value {
    json!({"branch": branch, "service": "deposit", "channel": channel})
}

fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

// ------------------------------------------------------- environments

#[tokio::test(flavor = "multi_thread")]
async fn prod_with_a_development_secret_answers_every_request_503_misconfigured_naming_it() {
    // Keys of its own, but the token secret still the development one.
    let (_state, host) = start(
        &[
            ("SPIN_VARIABLE_ENVIRONMENT", "prod"),
            (
                "SPIN_VARIABLE_KIOSK_API_KEYS",
                &format!("kiosk-1:{PROD_KIOSK_KEY}"),
            ),
            (
                "SPIN_VARIABLE_COUNTER_API_KEYS",
                &format!("counter-1:{PROD_COUNTER_KEY}@demo"),
            ),
        ],
        None,
    );
    let http = client();
    let kiosk = bearer(PROD_KIOSK_KEY);
    let counter = bearer(PROD_COUNTER_KEY);
    let requests: Vec<Request> = vec![
        ("GET", "/health", vec![], None),
        ("GET", "/api/v1/queues/demo", vec![], None),
        (
            "POST",
            "/api/v1/tickets",
            vec![("authorization", &kiosk), ("idempotency-key", "k-1")],
            Some(ticket_at("demo", "kiosk")),
        ),
        (
            "GET",
            "/api/v1/tickets/aaaaaaaaaaaaaaaaaaaaaaaaaa",
            vec![("authorization", &kiosk)],
            None,
        ),
        (
            "POST",
            "/api/v1/queues/demo/call",
            vec![("authorization", &counter)],
            Some(json!({"counter": "1"})),
        ),
        (
            "GET",
            "/api/v1/core/customers/c-1",
            vec![("authorization", &counter)],
            None,
        ),
        ("DELETE", "/api/v1/queues/demo", vec![], None),
    ];
    for (method, path, headers, body) in requests {
        let (status, body) = send(&http, method, &host.url(path), &headers, body).await;
        assert_eq!(
            (status, code(&body)),
            (503, "misconfigured"),
            "{method} {path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("mobile_token_secret"), "{message}");
        assert!(message.contains("prod"), "{message}");
        // Only the variable that is wrong, and never a value.
        assert!(!message.contains("kiosk_api_keys"), "{message}");
        assert!(
            !message.contains(Credentials::DEVELOPMENT_TOKEN_SECRET),
            "{message}"
        );
    }
    assert!(
        host.wait_for_log("[prod] misconfigured"),
        "{}",
        host.stderr()
    );
    assert!(
        !host
            .stderr()
            .contains(Credentials::DEVELOPMENT_TOKEN_SECRET)
    );

    // Everything from `.env`: each development value is named.
    let (_state, host) = start(&[("SPIN_VARIABLE_ENVIRONMENT", "prod")], None);
    let (status, body) = send(&http, "GET", &host.url("/health"), &[], None).await;
    assert_eq!((status, code(&body)), (503, "misconfigured"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for variable in ["kiosk_api_keys", "counter_api_keys", "mobile_token_secret"] {
        assert!(message.contains(variable), "{message}");
    }
    for value in Credentials::DEVELOPMENT_KEYS {
        assert!(!message.contains(value), "{message}");
    }
}

/// Runs `kiosk-host up` with `config` to its end (bounded): whether it
/// exited, its stdout and stderr.
fn run_to_exit(config: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    guest_wasm("ticket");
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("host.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = support::kiosk_host()
        .args(["up", "-f"])
        .arg(repo().join("spin.toml"))
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .arg("--config")
        .arg(&path)
        .env("KIOSK_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        match child.try_wait().unwrap() {
            Some(status) => break !status.success(),
            None if Instant::now() > until => {
                let _ = child.kill();
                break false;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let out = child.wait_with_output().unwrap();
    (
        exited,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kiosk_host_refuses_to_start_prod_with_a_development_secret_naming_it() {
    let config = "environment = \"prod\"\n[server]\npreflight = \"/health\"\n";
    let (refused, stdout, stderr) = run_to_exit(config, &[]);
    assert!(refused, "kiosk-host kept serving:\n{stderr}");
    assert!(!stdout.contains("Serving"), "{stdout}");
    assert!(stderr.contains("preflight"), "{stderr}");
    assert!(stderr.contains("misconfigured"), "{stderr}");
    for variable in ["kiosk_api_keys", "counter_api_keys", "mobile_token_secret"] {
        assert!(stderr.contains(variable), "{variable} not named:\n{stderr}");
    }
    assert!(!stderr.contains("dev-kiosk-key"), "{stderr}");
    assert!(
        !stderr.contains(Credentials::DEVELOPMENT_TOKEN_SECRET),
        "{stderr}"
    );

    // Only the variable still at its development value is named.
    let (refused, _, stderr) = run_to_exit(
        config,
        &[
            (
                "SPIN_VARIABLE_KIOSK_API_KEYS",
                &format!("kiosk-1:{PROD_KIOSK_KEY}"),
            ),
            ("SPIN_VARIABLE_MOBILE_TOKEN_SECRET", PROD_TOKEN_SECRET),
        ],
    );
    assert!(refused, "{stderr}");
    assert!(stderr.contains("counter_api_keys"), "{stderr}");
    assert!(!stderr.contains("kiosk_api_keys holds"), "{stderr}");
    assert!(!stderr.contains("mobile_token_secret"), "{stderr}");

    // A stray variable cannot talk a production host into `dev`.
    let (refused, _, stderr) = run_to_exit(config, &[("SPIN_VARIABLE_ENVIRONMENT", "dev")]);
    assert!(refused, "{stderr}");
    assert!(
        stderr.contains("`environment`") && stderr.contains("SPIN_VARIABLE_ENVIRONMENT"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_into_prod_with_development_secrets_is_refused_and_dev_keeps_serving() {
    let dev = "environment = \"dev\"\n[server]\npreflight = \"/health\"\n";
    let (state, host) = start(&[], Some(dev));
    let http = client();
    let issue = |key: &'static str| {
        let (http, url) = (http.clone(), host.url("/api/v1/tickets"));
        async move {
            send(
                &http,
                "POST",
                &url,
                &[
                    ("authorization", "Bearer dev-kiosk-key"),
                    ("idempotency-key", key),
                ],
                Some(ticket_at("demo", "kiosk")),
            )
            .await
        }
    };
    assert_eq!(issue("r-1").await.0, 201);

    // The same secrets, but the configuration now says prod: the new
    // version fails its preflight, so nothing of it is put in force.
    let config = state.path().join("host.toml");
    std::fs::write(&config, dev.replace("dev", "prod")).unwrap();
    host.hangup();
    assert!(host.wait_for_log("reload refused"), "{}", host.stderr());
    let log = host.stderr();
    assert!(
        log.contains("misconfigured") && log.contains("kiosk_api_keys"),
        "{log}"
    );
    assert!(!log.contains("dev-kiosk-key"), "{log}");
    let (status, body) = issue("r-2").await;
    assert_eq!(status, 201, "{body}");
    let (_, health) = send(&http, "GET", &host.url("/health"), &[], None).await;
    assert_eq!(health["version"]["environment"], "dev", "{health}");
}

// ------------------------------------------------------- counter keys

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_key_acts_only_at_its_branches_and_counters() {
    let (_state, host) = start(
        &[
            (
                "SPIN_VARIABLE_COUNTER_API_KEYS",
                "counter-dev:dev-counter-key@demo+jongno, gangnam-4:gangnam-4-key@gangnam/4, \
                 demo-1:demo-1-key@demo/1",
            ),
            (
                "SPIN_VARIABLE_KIOSK_API_KEYS",
                "kiosk-dev:dev-kiosk-key, kiosk-demo:kiosk-demo-key@demo",
            ),
        ],
        None,
    );
    let http = client();
    let url = |path: &str| host.url(path);
    let call = |auth: &str, branch: &str, counter: &str| {
        let (http, url, auth) = (
            http.clone(),
            url(&format!("/api/v1/queues/{branch}/call")),
            bearer(auth),
        );
        let counter = counter.to_string();
        async move {
            send(
                &http,
                "POST",
                &url,
                &[("authorization", &auth)],
                Some(json!({ "counter": counter })),
            )
            .await
        }
    };

    // The development counter key no longer acts at gangnam counter 4.
    let (status, body) = call("dev-counter-key", "gangnam", "4").await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("demo"));
    // gangnam's counter 4 key: not at demo, not as counter 5; as itself it
    // gets past the binding (gangnam keeps real hours).
    let (status, _) = call("gangnam-4-key", "demo", "4").await;
    assert_eq!(status, 403);
    let (status, body) = call("gangnam-4-key", "gangnam", "5").await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = call("gangnam-4-key", "gangnam", "4").await;
    assert!(status != 401 && status != 403, "{status} {body}");

    // A kiosk bound to demo issues only there.
    let kiosk_demo = bearer("kiosk-demo-key");
    let (status, body) = send(
        &http,
        "POST",
        &url("/api/v1/tickets"),
        &[("authorization", &kiosk_demo), ("idempotency-key", "kd-1")],
        Some(ticket_at("jongno", "kiosk")),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");

    // Tickets at demo and jongno.
    let kiosk = bearer("dev-kiosk-key");
    let mut ids = Vec::new();
    for (i, branch) in ["demo", "jongno", "demo"].iter().enumerate() {
        let (status, body) = send(
            &http,
            "POST",
            &url("/api/v1/tickets"),
            &[
                ("authorization", &kiosk),
                ("idempotency-key", &format!("t-{i}")),
            ],
            Some(ticket_at(branch, "kiosk")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // demo's counter 1 key cannot see or cancel jongno's ticket.
    let demo_1 = bearer("demo-1-key");
    let jongno_ticket = format!("/api/v1/tickets/{}", ids[1]);
    for method in ["GET", "DELETE"] {
        let (status, body) = send(
            &http,
            method,
            &url(&jongno_ticket),
            &[("authorization", &demo_1)],
            None,
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (403, "forbidden"),
            "{method}: {body}"
        );
    }
    // Nor finish a ticket counter 2 called.
    let (status, called) = call("dev-counter-key", "demo", "2").await;
    assert_eq!(status, 200, "{called}");
    let complete = format!(
        "/api/v1/queues/demo/tickets/{}/complete",
        called["id"].as_str().unwrap()
    );
    let (status, body) = send(
        &http,
        "POST",
        &url(&complete),
        &[("authorization", &demo_1)],
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = send(
        &http,
        "POST",
        &url(&complete),
        &[("authorization", &bearer("dev-counter-key"))],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // As counter 1 at demo it works.
    let (status, body) = call("demo-1-key", "demo", "1").await;
    assert_eq!(status, 200, "{body}");
    let demo_ticket = format!("/api/v1/tickets/{}", body["id"].as_str().unwrap());
    let (status, _) = send(
        &http,
        "GET",
        &url(&demo_ticket),
        &[("authorization", &demo_1)],
        None,
    )
    .await;
    assert_eq!(status, 200);

    // And /health names the environment.
    let (status, health) = send(&http, "GET", &url("/health"), &[], None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["version"]["environment"], "dev", "{health}");
    assert!(health["version"]["app"].is_string(), "{health}");
}

// ------------------------------------------------------- phone tokens

#[tokio::test(flavor = "multi_thread")]
async fn phone_tokens_for_another_audience_or_living_too_long_are_401() {
    let (_state, host) = start(
        &[
            ("SPIN_VARIABLE_MOBILE_TOKEN_AUDIENCE", "kiosk-api-dev"),
            ("SPIN_VARIABLE_MOBILE_TOKEN_MAX_LIFETIME_S", "600"),
        ],
        None,
    );
    let http = client();
    let auth = AuthConfig {
        mobile_secret: dev_secret().to_vec(),
        ..AuthConfig::default()
    };
    let now = unix_now();
    let issue = |token: String, customer: &str| {
        let (http, url) = (http.clone(), host.url("/api/v1/tickets"));
        let key = format!("phone-{customer}");
        async move {
            send(
                &http,
                "POST",
                &url,
                &[
                    ("authorization", &bearer(&token)),
                    ("idempotency-key", &key),
                ],
                Some(ticket_at("demo", "mobile")),
            )
            .await
        }
    };
    let refused = [
        // Another audience.
        (
            auth.mint_mobile_token("c1", "kiosk-api", now, now + 300),
            "audience",
        ),
        (
            auth.mint_mobile_token("c1", "other-app", now, now + 300),
            "audience",
        ),
        // Longer than 600 s from issue to expiry, however soon it expires.
        (
            auth.mint_mobile_token("c1", "kiosk-api-dev", now - 3000, now + 300),
            "longer",
        ),
        (
            auth.mint_mobile_token("c1", "kiosk-api-dev", now, 1_099_511_627_776),
            "longer",
        ),
        // Issued in the future.
        (
            auth.mint_mobile_token("c1", "kiosk-api-dev", now + 3600, now + 3900),
            "future",
        ),
        // The old `{sub, exp}` shape (and the default audience).
        (
            kiosk_domain::mint_mobile_token(dev_secret(), "c1", now + 300),
            "audience",
        ),
    ];
    for (token, why) in refused {
        let (status, body) = issue(token, "c1").await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{why}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
    }
    let good = auth.mint_mobile_token("c2", "kiosk-api-dev", now, now + 600);
    let (status, body) = issue(good, "c2").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_phone_tokens_live_at_most_a_day_for_kiosk_api() {
    let (_state, host) = start(&[], None);
    let http = client();
    let auth = AuthConfig {
        mobile_secret: dev_secret().to_vec(),
        ..AuthConfig::default()
    };
    let now = unix_now();
    let url = host.url("/api/v1/tickets");
    // A token valid until the year 36812.
    let far = auth.mint_mobile_token("c1", "kiosk-api", now, 1_099_511_627_776);
    let day_and_a_bit = auth.mint_mobile_token("c1", "kiosk-api", now, now + 24 * 3600 + 1);
    for token in [far, day_and_a_bit] {
        let (status, body) = send(
            &http,
            "POST",
            &url,
            &[("authorization", &bearer(&token))],
            Some(ticket_at("demo", "mobile")),
        )
        .await;
        assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    }
    let day = auth.mint_mobile_token("c1", "kiosk-api", now, now + 24 * 3600);
    let (status, body) = send(
        &http,
        "POST",
        &url,
        &[("authorization", &bearer(&day))],
        Some(ticket_at("demo", "mobile")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

// ------------------------------------------------------- device certificates

const DEV: &str = "devkiosk.domain.com";

/// Writes `ca.pem`, a server certificate `server.pem`/`.key` for [`DEV`]
/// and an empty `crl.pem` into `dir`.
fn init_certs(ca: &Ca, dir: &Path) {
    ca.write_pem(dir);
    ca.issue(dir, "server", &[DEV], 1);
    ca.revoke(dir, &[], 1);
}

/// An HTTPS client reaching [`DEV`] at `addr`, presenting `device`.
fn dev_client(ca: &Ca, addr: SocketAddr, device: Option<&(String, String)>) -> reqwest::Client {
    ca.client_as(&[(DEV, addr)], device)
}

/// A host configuration serving HTTPS with device certificates from `ca`
/// (plus a plain listener), and `more` lines at the top.
fn mtls_config(dir: &Path, more: &str, variables: &str) -> String {
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    format!(
        r#"{more}
[server]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
preflight = "/health"
[server.tls]
cert = "{}"
key = "{}"
client_ca = "{}"
client_crl = ["{}"]
[variables]
{variables}
"#,
        file("server.pem"),
        file("server.key"),
        file("ca.pem"),
        file("crl.pem"),
    )
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://{DEV}:{}{path}", addr.port())
}

#[tokio::test(flavor = "multi_thread")]
async fn kiosks_and_counters_identified_by_their_certificates_each_revocable_on_its_own() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    init_certs(&ca, certs.path());
    // PROD, with its own secrets: the preflight lets it start.
    let config = mtls_config(
        certs.path(),
        "environment = \"prod\"",
        "client_identity_header = \"kiosk-client-cn\"",
    );
    let kiosks = format!(
        "kiosk-demo-1:cert=kiosk-demo-1@demo, kiosk-demo-2:cert=kiosk-demo-2, kiosk-old:{PROD_KIOSK_KEY}"
    );
    let counters = "counter-demo-1:cert=counter-demo-1@demo/1";
    let (_state, host) = start(
        &[
            ("SPIN_VARIABLE_KIOSK_API_KEYS", &kiosks),
            ("SPIN_VARIABLE_COUNTER_API_KEYS", counters),
            ("SPIN_VARIABLE_MOBILE_TOKEN_SECRET", PROD_TOKEN_SECRET),
        ],
        Some(&config),
    );
    assert!(host.wait_for_log("preflight passed"), "{}", host.stderr());
    assert!(
        host.stderr().contains("environment=prod"),
        "{}",
        host.stderr()
    );
    let tls = host.tls_addr.expect("HTTPS");
    let kiosk_1 = ca.device("kiosk-demo-1", 101);
    let kiosk_2 = ca.device("kiosk-demo-2", 102);
    let counter_1 = ca.device("counter-demo-1", 103);
    let stranger = ca.device("kiosk-unregistered", 104);

    let issue = |device: Option<&(String, String)>, key: &str, headers: Vec<(&str, &str)>| {
        let http = dev_client(&ca, tls, device);
        let key = key.to_string();
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        async move {
            let mut all: Vec<(&str, &str)> = vec![("idempotency-key", &key)];
            all.extend(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            send(
                &http,
                "POST",
                &https(tls, "/api/v1/tickets"),
                &all,
                Some(ticket_at("demo", "kiosk")),
            )
            .await
        }
    };

    // A kiosk with its certificate and no key issues a ticket; so does the other.
    let (status, first) = issue(Some(&kiosk_1), "c-1", vec![]).await;
    assert_eq!(status, 201, "{first}");
    let (status, body) = issue(Some(&kiosk_2), "c-2", vec![]).await;
    assert_eq!(status, 201, "{body}");
    // A device without a certificate still uses its key.
    let key = bearer(PROD_KIOSK_KEY);
    let (status, body) = issue(None, "c-3", vec![("authorization", &key)]).await;
    assert_eq!(status, 201, "{body}");
    // kiosk-demo-1 is bound to demo.
    let http = dev_client(&ca, tls, Some(&kiosk_1));
    let (status, body) = send(
        &http,
        "POST",
        &https(tls, "/api/v1/tickets"),
        &[("idempotency-key", "c-4")],
        Some(ticket_at("jongno", "kiosk")),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    // A certificate the CA issued but no list names identifies no one.
    let (status, body) = issue(Some(&stranger), "c-5", vec![]).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    // A counter with its certificate calls at its own counter.
    let http = dev_client(&ca, tls, Some(&counter_1));
    let (status, called) = send(
        &http,
        "POST",
        &https(tls, "/api/v1/queues/demo/call"),
        &[],
        Some(json!({"counter": "1"})),
    )
    .await;
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["id"], first["id"]);
    // … and sees health's checks, which name the environment.
    let (status, health) = send(&http, "GET", &https(tls, "/health"), &[], None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["version"]["environment"], "prod");
    assert!(health["checks"].is_object(), "{health}");

    // Over plain HTTP the header claims nothing: the host strips it.
    let (status, body) = send(
        &client(),
        "POST",
        &host.url("/api/v1/tickets"),
        &[
            ("kiosk-client-cn", "kiosk-demo-2"),
            ("idempotency-key", "c-6"),
        ],
        Some(ticket_at("demo", "kiosk")),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");

    // kiosk-demo-1's certificate is revoked: it is refused, the others are not.
    ca.revoke(certs.path(), &[101], 2);
    host.hangup();
    assert!(host.wait_for_log("reloaded"), "{}", host.stderr());
    let revoked = dev_client(&ca, tls, Some(&kiosk_1))
        .post(https(tls, "/api/v1/tickets"))
        .header("idempotency-key", "c-7")
        .json(&ticket_at("demo", "kiosk"))
        .send()
        .await;
    assert!(revoked.is_err(), "a revoked certificate got an answer");
    let (status, body) = issue(Some(&kiosk_2), "c-8", vec![]).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_identifies_no_one_unless_the_deployment_trusts_the_hosts_header() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    init_certs(&ca, certs.path());
    // The same host, but the app is not told the host verifies certificates.
    let config = mtls_config(certs.path(), "", "");
    let (_state, host) = start(
        &[(
            "SPIN_VARIABLE_KIOSK_API_KEYS",
            "kiosk-dev:dev-kiosk-key, kiosk-demo-1:cert=kiosk-demo-1",
        )],
        Some(&config),
    );
    let tls = host.tls_addr.expect("HTTPS");
    let kiosk_1 = ca.device("kiosk-demo-1", 201);
    let with_certificate = dev_client(&ca, tls, Some(&kiosk_1));
    let (status, body) = send(
        &with_certificate,
        "POST",
        &https(tls, "/api/v1/tickets"),
        &[("idempotency-key", "n-1")],
        Some(ticket_at("demo", "kiosk")),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    // A client naming itself in the header over plain HTTP: ignored.
    let (status, body) = send(
        &client(),
        "POST",
        &host.url("/api/v1/tickets"),
        &[
            ("kiosk-client-cn", "kiosk-demo-1"),
            ("idempotency-key", "n-2"),
        ],
        Some(ticket_at("demo", "kiosk")),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    // The key still works, with or without a certificate.
    for http in [with_certificate, dev_client(&ca, tls, None)] {
        let (status, body) = send(
            &http,
            "POST",
            &https(tls, "/api/v1/tickets"),
            &[
                ("authorization", "Bearer dev-kiosk-key"),
                ("idempotency-key", &format!("n-{}", unix_now())),
            ],
            Some(ticket_at("demo", "kiosk")),
        )
        .await;
        assert!(status == 201 || status == 200, "{status} {body}");
    }
}
