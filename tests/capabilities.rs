//! Key-value (SQLite and Redis), variables and outbound HTTP, driven over
//! real sockets against the real binary.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use kiosk_kv::testing::RedisServer;
use support::{Host, app, check_fails, client, guest_wasm, run};

const API_KEY: (&str, &str) = ("SPIN_VARIABLE_API_KEY", "s3cret-value");

/// Which backend the stores `default` and `shared` live on.
enum Backend {
    Sqlite,
    Redis(RedisServer),
}

fn runtime_config(dir: &Path, backend: &Backend) -> PathBuf {
    let text = match backend {
        Backend::Sqlite => {
            "[key_value_store.shared]\ntype = \"spin\"\npath = \"shared.db\"\n".to_string()
        }
        Backend::Redis(redis) => format!(
            // Separate Redis databases, so the two labels are separate stores.
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{0}/0\"\n\n[key_value_store.shared]\ntype = \"redis\"\nurl = \"{0}/1\"\n",
            redis.url()
        ),
    };
    let path = dir.join("runtime-config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One host of the capabilities app on SQLite stores, with `env` set.
fn caps_host(state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Host {
    let config = runtime_config(state, &Backend::Sqlite);
    let mut args = vec!["--runtime-config-file", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    Host::start_with_env(&app("caps").join("spin.toml"), state, &args, env)
}

/// Two hosts sharing one state dir and one runtime config.
fn two_hosts(backend: &Backend, state: &Path, extra_env: &[(&str, &str)]) -> (Host, Host) {
    guest_wasm("kv-ops");
    let config = runtime_config(state, backend);
    let config = config.to_str().unwrap().to_string();
    let manifest = app("caps").join("spin.toml");
    let mut env = vec![API_KEY];
    env.extend_from_slice(extra_env);
    let args = ["--runtime-config-file", config.as_str()];
    let a = Host::start_with_env(&manifest, state, &args, &env);
    let b = Host::start_with_env(&manifest, state, &args, &env);
    (a, b)
}

async fn kv_semantics(backend: Backend) {
    let state = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&backend, state.path(), &[]);
    let http = client();
    // Written through one host, read through the other.
    let put = http
        .put(a.url("/kv/default/greeting"))
        .body("안녕")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let got = http
        .get(b.url("/kv/default/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "안녕");
    assert_eq!(
        http.head(b.url("/kv/default/greeting"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Labels are separate stores.
    assert_eq!(
        http.get(a.url("/kv/shared/greeting"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    http.put(a.url("/kv/shared/other"))
        .body("x")
        .send()
        .await
        .unwrap();
    let keys = http
        .get(b.url("/kv/shared"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(keys, "[\"other\"]");
    // Delete.
    assert_eq!(
        http.delete(b.url("/kv/default/greeting"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.get(a.url("/kv/default/greeting"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A label the component did not declare: access denied, seen by the guest.
    let denied = http.get(a.url("/kv/sessions/x")).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied.text().await.unwrap().contains("access-denied"));
    let denied = http
        .get(a.url("/kv-denied/default/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(a.stderr().contains("access denied"), "{}", a.stderr());
    // wasi:keyvalue batch: set many at once, read back only what exists.
    let set = http
        .put(a.url("/batch"))
        .body(r#"{"b1":"one","b2":"two","b3":"three"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 204);
    let got = http
        .get(b.url("/batch?keys=b1,b3,missing"))
        .send()
        .await
        .unwrap();
    let got: serde_json::Value = got.json().await.unwrap();
    assert_eq!(got, serde_json::json!({"b1": "one", "b3": "three"}));
    let deleted = http
        .delete(b.url("/batch?keys=b1,b2"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let got: serde_json::Value = http
        .get(a.url("/batch?keys=b1,b2,b3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, serde_json::json!({"b3": "three"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_works_across_two_hosts_on_sqlite() {
    kv_semantics(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn key_value_works_across_two_hosts_on_redis() {
    kv_semantics(Backend::Redis(RedisServer::start())).await;
}

/// 16 clients x 100 increments at one key through two hosts: every value
/// from 1 to 1600 is handed out exactly once.
async fn concurrent_increments(backend: Backend) {
    let state = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&backend, state.path(), &[]);
    let urls = [a.url("/incr/ticket-counter"), b.url("/incr/ticket-counter")];
    let http = client();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let http = http.clone();
            let url = urls[i % 2].clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(100);
                for _ in 0..100 {
                    let response = http.post(&url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    seen.push(response.text().await.unwrap().parse::<i64>().unwrap());
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1600).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_increments_through_two_hosts_on_sqlite_never_repeat() {
    concurrent_increments(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_increments_through_two_hosts_on_redis_never_repeat() {
    concurrent_increments(Backend::Redis(RedisServer::start())).await;
}

/// Compare-and-swap appends from many clients through two hosts: no update lost.
async fn concurrent_swaps(backend: Backend) {
    let state = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(&backend, state.path(), &[]);
    let urls = [a.url("/cas/log"), b.url("/cas/log")];
    let http = client();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let http = http.clone();
            let url = urls[i % 2].clone();
            tokio::spawn(async move {
                for j in 0..20 {
                    let response = http
                        .post(&url)
                        .body(format!("{i}-{j}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = http
        .get(a.url("/kv/default/log"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let entries: Vec<&str> = log.trim_end_matches(',').split(',').collect();
    let unique: BTreeSet<&str> = entries.iter().copied().collect();
    assert_eq!(entries.len(), 160, "lost or doubled updates: {log}");
    assert_eq!(unique.len(), 160);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_swaps_through_two_hosts_on_sqlite_lose_nothing() {
    concurrent_swaps(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_swaps_through_two_hosts_on_redis_lose_nothing() {
    concurrent_swaps(Backend::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn increment_of_a_non_number_is_an_error_the_guest_sees() {
    let state = tempfile::tempdir().unwrap();
    let (a, _b) = two_hosts(&Backend::Sqlite, state.path(), &[]);
    let http = client();
    http.put(a.url("/kv/default/word"))
        .body("not a number")
        .send()
        .await
        .unwrap();
    let response = http.post(a.url("/incr/word")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("increment"));
    assert_eq!(
        http.get(a.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_goes_down_gives_errors_not_hangs() {
    let redis = RedisServer::start();
    let state = tempfile::tempdir().unwrap();
    let backend = Backend::Redis(redis);
    let (a, _b) = two_hosts(&backend, state.path(), &[]);
    let http = client();
    assert_eq!(
        http.post(a.url("/incr/n")).send().await.unwrap().status(),
        200
    );
    drop(backend); // stops redis-server
    let response = http.post(a.url("/incr/n")).send().await.unwrap();
    assert_eq!(response.status(), 503, "the guest sees the store error");
    // The rest of the app is unaffected.
    assert_eq!(
        http.get(a.url("/hello")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn variables_resolve_from_env_dotenv_and_defaults() {
    let state = tempfile::tempdir().unwrap();
    let host = caps_host(
        state.path(),
        &[],
        &[API_KEY, ("SPIN_VARIABLE_GREETING", "annyeong")],
    );
    let http = client();
    let get = |path: &str| {
        let http = http.clone();
        let url = host.url(path);
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/var/message").await, (200, "annyeong, world".into()));
    assert_eq!(get("/var/key").await, (200, "s3cret-value".into()));
    assert_eq!(
        get("/var/message?via=config").await,
        (200, "annyeong, world".into())
    );
    // Not declared by the component: an error the guest sees.
    let (status, body) = get("/var/greeting").await;
    assert_eq!(status, 404);
    assert!(body.contains("undefined"), "{body}");
    assert_eq!(get("/var/greeting?via=config").await, (404, "none".into()));
    assert_eq!(get("/var/Bad").await.0, 400);
    assert_eq!(
        get("/var?via=config").await,
        (200, "key=s3cret-value\nmessage=annyeong, world".into())
    );
    assert!(
        !host.stderr().contains("s3cret-value"),
        "a secret reached the log"
    );
}

#[test]
fn a_required_variable_without_a_value_stops_start_up() {
    let out = run(&[
        "check",
        "-f",
        app("caps").join("spin.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("api_key"), "{}", out.stderr);
}

/// A tiny upstream on loopback: answers every request with `body`, or never
/// answers when `body` is None.
fn upstream(body: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            let mut stream = stream.unwrap();
            match body {
                Some(body) => {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                None => held.push(stream),
            }
        }
    });
    port
}

#[tokio::test]
async fn outbound_http_reaches_only_allowed_hosts() {
    let port = upstream(Some("from upstream"));
    let allowed = format!("127.0.0.1:{port}");
    let other = upstream(Some("should not be reached"));
    let state = tempfile::tempdir().unwrap();
    let host = caps_host(
        state.path(),
        &[],
        &[API_KEY, ("SPIN_VARIABLE_UPSTREAM", &allowed)],
    );
    let http = client();
    let ok = http
        .get(host.url(&format!("/fetch?url=http://127.0.0.1:{port}/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "200 from upstream");
    let denied = http
        .get(host.url(&format!("/fetch?url=http://127.0.0.1:{other}/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 502);
    assert!(
        denied
            .text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("denied")
    );
    assert!(host.wait_for_log("outbound request denied"));
    assert!(host.stderr().contains("component=fetch-url"));
    assert!(host.stderr().contains(&format!("http://127.0.0.1:{other}")));
    // `self` requests reach this host's own routes.
    let own = http
        .get(host.url("/fetch-self?url=http://self.alt/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.text().await.unwrap(), "200 Hello, world!\n");
}

#[tokio::test]
async fn a_dead_upstream_gives_the_guest_an_error_before_its_deadline() {
    let port = upstream(None);
    let allowed = format!("127.0.0.1:{port}");
    let state = tempfile::tempdir().unwrap();
    let host = caps_host(
        state.path(),
        &["--outbound-timeout", "1s", "--request-timeout", "20s"],
        &[API_KEY, ("SPIN_VARIABLE_UPSTREAM", &allowed)],
    );
    let response = client()
        .get(host.url(&format!("/fetch?url=http://127.0.0.1:{port}/slow")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        502,
        "the guest answered, not the deadline"
    );
}

#[test]
fn check_names_unprovided_imports_and_unknown_stores() {
    guest_wasm("uses-sqlite");
    let broken = app("broken");
    check_fails(
        &broken.join("imports-sqlite.toml"),
        &["uses-sqlite", "sqlite"],
    );
    check_fails(
        &broken.join("unknown-store.toml"),
        &["unknown-store.toml:10", "sessions"],
    );
    check_fails(
        &broken.join("needs-sqlite.toml"),
        &["needs-sqlite.toml:12", "sqlite_databases"],
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rc.toml");
    std::fs::write(
        &config,
        "[key_value_store.default]\ntype = \"azure_cosmos\"\n",
    )
    .unwrap();
    let bad_config = run(&[
        "check",
        "-f",
        app("basics").join("spin.toml").to_str().unwrap(),
        "--runtime-config-file",
        config.to_str().unwrap(),
    ]);
    assert!(!bad_config.status.success());
    assert!(
        bad_config.stderr.contains("rc.toml:1"),
        "{}",
        bad_config.stderr
    );
}

/// `kiosk-host check` of the caps app with `config` as its runtime config.
fn check_caps(config: &Path, state: &Path) -> support::Finished {
    let out = support::kiosk_host()
        .args(["check", "-f"])
        .arg(app("caps").join("spin.toml"))
        .arg("--runtime-config-file")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .env(API_KEY.0, API_KEY.1)
        .output()
        .unwrap();
    support::Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_accepts_a_good_app() {
    let dir = tempfile::tempdir().unwrap();
    let config = runtime_config(dir.path(), &Backend::Sqlite);
    let out = check_caps(&config, dir.path());
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("ok"));
}

/// `kiosk-host check` of the caps app with its stores on `redis`, plus
/// `extra` lines in each store's table.
fn check_on_redis(redis: &RedisServer, extra: &str) -> support::Finished {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rc.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{0}/0\"\n{extra}\n\
             [key_value_store.shared]\ntype = \"redis\"\nurl = \"{0}/1\"\n{extra}\n",
            redis.url()
        ),
    )
    .unwrap();
    check_caps(&config, dir.path())
}

#[test]
fn a_redis_that_would_forget_acknowledged_writes_is_refused_unless_declared_volatile() {
    let volatile = RedisServer::start_volatile();
    let refused = check_on_redis(&volatile, "");
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("appendonly no"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("durability = \"volatile\""));

    let accepted = check_on_redis(&volatile, "durability = \"volatile\"");
    assert!(accepted.status.success(), "{}", accepted.stderr);
    assert!(
        accepted.stderr.contains("restart loses"),
        "{}",
        accepted.stderr
    );

    // An append-only file synced every second: accepted, with the risk named.
    let durable = RedisServer::start();
    let everysec = check_on_redis(&durable, "");
    assert!(everysec.status.success(), "{}", everysec.stderr);
    assert!(everysec.stderr.contains("appendfsync everysec"));
}
