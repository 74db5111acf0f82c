//! The kiosk-api app (spin.toml) on kiosk-host, with the core simulator:
//! tickets, queues, counters, the core passthrough and health, over real
//! sockets.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{CoreSim, Host, client, guest_wasm, redis_runtime_config, repo};

const KIOSK: &str = "Bearer dev-kiosk-key";
const COUNTER: &str = "Bearer dev-counter-key";
const MOBILE_SECRET: &str = "dev-mobile-token-secret-do-not-use-in-production";

struct App {
    _state: tempfile::TempDir,
    host: Host,
    core: CoreSim,
    http: reqwest::Client,
}

fn start(core_args: &[&str], env: &[(&str, &str)]) -> App {
    guest_wasm("ticket");
    let core = CoreSim::start(core_args);
    let state = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("SPIN_VARIABLE_CORE_BASE_URL", &core.url));
    let host = Host::start_with_env(&repo().join("spin.toml"), state.path(), &[], &env);
    App {
        _state: state,
        host,
        core,
        http: client(),
    }
}

fn mobile_token(customer: &str) -> String {
    let exp = chrono_now() + 3600;
    format!(
        "Bearer {}",
        kiosk_domain::mint_mobile_token(MOBILE_SECRET.as_bytes(), customer, exp)
    )
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl App {
    /// `POST path` as `auth` with an `Idempotency-Key` when given.
    async fn post_keyed(
        &self,
        path: &str,
        auth: &str,
        key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.host.url(path))
            .header("authorization", auth)
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    async fn issue(&self, auth: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let response = self.post_keyed("/api/v1/tickets", auth, key, &body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn call(&self, counter: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.host.url("/api/v1/queues/demo/call"))
            .header("authorization", COUNTER)
            .json(&json!({ "counter": counter }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.host.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl App {
    /// `GET` or `POST` a core-sim control endpoint (`/_sim/...`).
    async fn sim(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.core.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// core-sim's stats (`transfers_executed`, `by_path`, …).
    async fn sim_stats(&self) -> Value {
        self.sim("GET", "/_sim/stats", None).await
    }

    /// `POST /api/v1/core/transfers` as `auth`, with `key` and `body`:
    /// status, the `idempotent-replayed` header, and the JSON body.
    async fn transfer(
        &self,
        auth: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Value) {
        let response = self
            .post_keyed("/api/v1/core/transfers", auth, key, &body)
            .await;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap().to_string());
        (
            status,
            replayed,
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

/// Sends `GET target` with exactly these bytes as the request target (no
/// client-side normalisation of `..` or `%2e`), reading the answer to the
/// end of the connection: status and body.
fn raw_get(addr: std::net::SocketAddr, target: &str, auth: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target}: {text:?}"));
    // The JSON document, whether the body came chunked or not.
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start < end => &body[start..=end],
        _ => body,
    };
    (status, json.to_string())
}

fn deposit() -> Value {
    json!({"branch": "demo", "service": "deposit", "channel": "kiosk"})
}

#[tokio::test(flavor = "multi_thread")]
async fn kiosks_issue_numbered_tickets_and_retries_do_not_take_a_second_number() {
    let app = start(&[], &[]);
    let (status, first) = app.issue(KIOSK, Some("k-1"), deposit()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["number"], "A-001");
    assert_eq!(first["status"], "waiting");
    assert_eq!(first["waiting_ahead"], 0);
    // The same key and body: the same ticket, no new number.
    let (status, again) = app.issue(KIOSK, Some("k-1"), deposit()).await;
    assert!(status == 201 || status == 200, "{status}");
    assert_eq!(again["id"], first["id"]);
    // The same key with another body: 422.
    let (status, err) = app
        .issue(
            KIOSK,
            Some("k-1"),
            json!({"branch": "demo", "service": "loan", "channel": "kiosk"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("idempotency_key_mismatch"))
    );
    // Kiosks must send a key.
    let (status, err) = app.issue(KIOSK, None, deposit()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("idempotency_key_required"))
    );
    let (_, second) = app.issue(KIOSK, Some("k-2"), deposit()).await;
    assert_eq!(second["number"], "A-002");
    assert_eq!(second["waiting_ahead"], 1);
    assert!(second["estimated_wait_s"].as_u64().unwrap() > 0);
    // Unguessable ids, and the ticket can be read back.
    assert!(first["id"].as_str().unwrap().len() >= 22);
    let (status, view) = app
        .get(
            &format!("/api/v1/tickets/{}", first["id"].as_str().unwrap()),
            Some(KIOSK),
        )
        .await;
    assert_eq!((status, view["number"].as_str()), (200, Some("A-001")));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_precise_errors_and_lose_nothing() {
    let app = start(&[], &[]);
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (
            Some(KIOSK),
            json!({"branch": "nowhere", "service": "deposit", "channel": "kiosk"}),
            404,
            "branch_not_found",
        ),
        (
            Some(KIOSK),
            json!({"branch": "demo", "service": "mortgage", "channel": "kiosk"}),
            404,
            "service_not_found",
        ),
        (
            Some(KIOSK),
            json!({"branch": "demo", "service": "deposit", "channel": "kiosk", "extra": 1}),
            400,
            "invalid_request",
        ),
        (Some("Bearer wrong-key"), deposit(), 401, "unauthorized"),
        (None, deposit(), 401, "unauthorized"),
    ];
    for (i, (auth, body, status, code)) in cases.into_iter().enumerate() {
        let mut request = app
            .http
            .post(app.host.url("/api/v1/tickets"))
            .header("idempotency-key", format!("bad-{i}"))
            .json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "case {i}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "case {i}: {body}");
    }
    let malformed = app
        .http
        .post(app.host.url("/api/v1/tickets"))
        .header("authorization", KIOSK)
        .header("idempotency-key", "malformed")
        .body("{\"branch\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let oversized = app
        .http
        .post(app.host.url("/api/v1/tickets"))
        .header("authorization", KIOSK)
        .header("idempotency-key", "big")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    // None of that took a number.
    let (_, ticket) = app.issue(KIOSK, Some("good"), deposit()).await;
    assert_eq!(ticket["number"], "A-001");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phone_holds_one_ticket_per_branch_and_sees_only_its_own() {
    let app = start(&[], &[]);
    let alice = mobile_token("alice");
    let bob = mobile_token("bob");
    let body = json!({"branch": "demo", "service": "loan", "channel": "mobile"});
    let (status, ticket) = app.issue(&alice, Some("a-1"), body.clone()).await;
    assert_eq!(status, 201, "{ticket}");
    assert_eq!(ticket["number"], "B-001");
    let (status, err) = app.issue(&alice, Some("a-2"), body.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("already_has_ticket"))
    );
    let path = format!("/api/v1/tickets/{}", ticket["id"].as_str().unwrap());
    assert_eq!(app.get(&path, Some(&alice)).await.0, 200);
    assert_eq!(
        app.get(&path, Some(&bob)).await.0,
        404,
        "another phone must not see it"
    );
    // A phone cannot act as a counter.
    let response = app
        .http
        .post(app.host.url("/api/v1/queues/demo/call"))
        .header("authorization", &alice)
        .json(&json!({"counter": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A forged token is refused.
    let forged = format!(
        "Bearer {}",
        kiosk_domain::mint_mobile_token(b"not-the-secret", "alice", chrono_now() + 60)
    );
    assert_eq!(app.issue(&forged, Some("f"), body.clone()).await.0, 401);
    // Cancelling frees the phone to take a new ticket.
    let cancelled = app
        .http
        .delete(app.host.url(&path))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let (status, _) = app.issue(&alice, Some("a-3"), body).await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_call_oldest_first_and_never_the_same_ticket() {
    let app = start(&[], &[]);
    let mut issued = Vec::new();
    for i in 0..12 {
        let service = ["deposit", "loan", "fx"][i % 3];
        let (status, t) = app
            .issue(
                KIOSK,
                Some(&format!("t-{i}")),
                json!({"branch": "demo", "service": service, "channel": "kiosk"}),
            )
            .await;
        assert_eq!(status, 201);
        issued.push(t["id"].as_str().unwrap().to_string());
    }
    // Three counters call at once until nobody waits.
    let mut tasks = Vec::new();
    for counter in ["1", "2", "3"] {
        let http = app.http.clone();
        let url = app.host.url("/api/v1/queues/demo");
        tasks.push(tokio::spawn(async move {
            let mut called = Vec::new();
            loop {
                let response = http
                    .post(format!("{url}/call"))
                    .header("authorization", COUNTER)
                    .json(&json!({"counter": counter}))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    204 => break,
                    200 => {
                        let t: Value = response.json().await.unwrap();
                        assert_eq!(t["status"], "called");
                        assert_eq!(t["counter"], counter);
                        let id = t["id"].as_str().unwrap().to_string();
                        called.push(id.clone());
                        // The terminal says which counter it is.
                        let done = http
                            .post(format!("{url}/tickets/{id}/complete"))
                            .header("authorization", COUNTER)
                            .json(&json!({"counter": counter}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(done.status(), 200);
                    }
                    409 => continue, // lost a race for the queue: call again
                    other => panic!("call answered {other}: {}", response.text().await.unwrap()),
                }
            }
            called
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 12, "every ticket called once");
    assert_eq!(unique.len(), 12, "a ticket was called twice");
    let (_, board) = app.get("/api/v1/queues/demo", None).await;
    assert!(
        board["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["waiting"] == 0)
    );

    // A stale terminal at counter 2 cannot finish counter 1's ticket.
    let (_, t) = app
        .issue(
            KIOSK,
            Some("stale"),
            json!({"branch": "demo", "service": "loan", "channel": "kiosk"}),
        )
        .await;
    let id = t["id"].as_str().unwrap();
    let url = app.host.url("/api/v1/queues/demo");
    let called = app
        .http
        .post(format!("{url}/call"))
        .header("authorization", COUNTER)
        .json(&json!({"counter": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), 200);
    for (counter, status) in [("2", 409), ("1", 200)] {
        let done = app
            .http
            .post(format!("{url}/tickets/{id}/complete"))
            .header("authorization", COUNTER)
            .json(&json!({"counter": counter}))
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), status, "complete from counter {counter}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_board_and_counter_actions() {
    let app = start(&[], &[]);
    let (_, a1) = app.issue(KIOSK, Some("1"), deposit()).await;
    let (_, a2) = app.issue(KIOSK, Some("2"), deposit()).await;
    let (status, board) = app.get("/api/v1/queues/demo", None).await;
    assert_eq!(status, 200);
    let deposit_row = board["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "deposit")
        .unwrap();
    assert_eq!(deposit_row["waiting"], 2);
    assert_eq!(deposit_row["last_issued"], "A-002");
    assert_eq!(board["counters_open"], json!(["1", "2", "3"]));
    let (status, called) = app.call("2").await;
    assert_eq!((status, called["id"].clone()), (200, a1["id"].clone()));
    // A called ticket cannot be cancelled.
    let path = format!("/api/v1/tickets/{}", a1["id"].as_str().unwrap());
    let cancel = app
        .http
        .delete(app.host.url(&path))
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 409);
    // Transfer the called ticket to loans; it keeps its number.
    let id = a1["id"].as_str().unwrap();
    let moved = app
        .http
        .post(
            app.host
                .url(&format!("/api/v1/queues/demo/tickets/{id}/transfer")),
        )
        .header("authorization", COUNTER)
        .json(&json!({"service": "loan"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let moved: Value = moved.json().await.unwrap();
    assert_eq!(
        (moved["service"].as_str(), moved["number"].as_str()),
        (Some("loan"), Some("A-001"))
    );
    let (_, next) = app.call("2").await;
    assert!(next["id"] == a1["id"] || next["id"] == a2["id"]);
    let no_show = app
        .http
        .post(app.host.url(&format!(
            "/api/v1/queues/demo/tickets/{}/no-show",
            next["id"].as_str().unwrap()
        )))
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(no_show.status(), 200);
    assert_eq!(no_show.json::<Value>().await.unwrap()["status"], "no_show");
    let unknown = app.get("/api/v1/queues/nowhere", None).await;
    assert_eq!(
        (unknown.0, unknown.1["error"]["code"].as_str()),
        (404, Some("branch_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_core_passthrough_forwards_only_allowed_calls_without_client_credentials() {
    let app = start(&[], &[]);
    let response = app
        .http
        .get(app.host.url("/api/v1/core/customers/c-42?fields=name"))
        .header("authorization", KIOSK)
        .header("cookie", "session=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        response.json::<Value>().await.unwrap()["customer_ref"],
        "c-42"
    );
    let seen = app.core.requests();
    let last = seen.as_array().unwrap().last().unwrap();
    assert_eq!(last["path"], "/customers/c-42");
    assert_eq!(last["query"], "fields=name");
    let headers = last["headers"].as_object().unwrap();
    assert!(
        !headers.contains_key("authorization"),
        "client credentials reached the core"
    );
    assert!(!headers.contains_key("cookie"));
    assert_eq!(headers["x-request-id"], request_id.as_str());
    // The caller's key id reaches the core, never its key.
    assert_eq!(headers["x-kiosk-client"], "kiosk-dev");
    assert!(
        !headers
            .values()
            .any(|v| v.as_str().unwrap().contains("dev-kiosk-key")),
        "{headers:?}"
    );

    let denied = app
        .http
        .delete(app.host.url("/api/v1/core/customers/c-42"))
        .header("authorization", KIOSK)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    // A query string passes only for entries that allow it (`GET /accounts/*/balance` does not).
    let with_query = app
        .http
        .get(
            app.host
                .url("/api/v1/core/accounts/1/balance?as_of=2026-01-01"),
        )
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(with_query.status(), 403);
    let body: Value = with_query.json().await.unwrap();
    assert_eq!(body["error"]["code"], "core_route_not_allowed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queries are not allowed"),
        "{body}"
    );
    assert_eq!(
        app.core.requests().as_array().unwrap().len(),
        1,
        "a denied call reached the core"
    );
    let phone = mobile_token("alice");
    let as_phone = app
        .http
        .get(app.host.url("/api/v1/core/customers/c-42"))
        .header("authorization", phone)
        .send()
        .await
        .unwrap();
    assert_eq!(as_phone.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_hung_core_is_core_unavailable_and_health_degrades_fast() {
    let failing = start(&["--fail-every", "1"], &[]);
    let response = failing
        .http
        .get(failing.host.url("/api/v1/core/accounts/1/balance"))
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "core_unavailable"
    );

    let hung = start(&["--hang"], &[("SPIN_VARIABLE_CORE_TIMEOUT_MS", "300")]);
    let response = hung
        .http
        .get(hung.host.url("/api/v1/core/accounts/1/balance"))
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "core_unavailable"
    );
    let (status, health) = hung.get("/health", Some(COUNTER)).await;
    assert_eq!(
        status, 200,
        "a slow core degrades health, it does not fail it"
    );
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["store"], "ok");
    assert_eq!(health["checks"]["core"], "failing: timeout");
    // Tickets are still issued while the core is down.
    assert_eq!(hung.issue(KIOSK, Some("x"), deposit()).await.0, 201);

    let (status, health) = failing.get("/health", Some(COUNTER)).await;
    assert_eq!(
        (status, health["checks"]["store"].as_str()),
        (200, Some("ok"))
    );
    assert_eq!(health["checks"]["core"], "failing: status 503");
}

#[tokio::test(flavor = "multi_thread")]
async fn core_paths_a_core_could_read_differently_are_refused_before_the_core() {
    let app = start(&[], &[]);
    for path in [
        "/customers/..",
        "/customers/%2e%2e",
        "/customers/%2E%2E",
        "/customers/..%2F_sim%2Fstats",
        "/customers/..;",
        "/customers/..%5C..%5Cadmin",
        "/customers/a;b",
        "//customers/x",
        "/customers/x/",
        "/customers/%252e%252e",
    ] {
        let (status, body) = raw_get(app.host.addr, &format!("/api/v1/core{path}"), KIOSK);
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
        assert_eq!(body["error"]["code"], "invalid_core_path", "{path}: {body}");
    }
    assert_eq!(
        app.core.requests(),
        json!([]),
        "a refused path reached the core"
    );
    // A canonical path still passes.
    let (status, _) = raw_get(app.host.addr, "/api/v1/core/customers/c-1", KIOSK);
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_transfer_is_replayed_and_another_body_with_its_key_is_refused() {
    let app = start(&[], &[]);
    let body = json!({"from": "1", "to": "2", "amount": "10000"});
    // A write without a key never reaches the core.
    let (status, _, err) = app.transfer(KIOSK, None, body.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("idempotency_key_required"))
    );
    assert_eq!(app.core.requests(), json!([]));

    let (status, replayed, first) = app.transfer(KIOSK, Some("tr-key-1"), body.clone()).await;
    assert_eq!((status, replayed), (201, None), "{first}");
    let seen = app.core.requests();
    let headers = &seen.as_array().unwrap().last().unwrap()["headers"];
    assert_eq!(headers["idempotency-key"], "tr-key-1");
    assert_eq!(headers["x-kiosk-client"], "kiosk-dev");
    assert!(headers.get("authorization").is_none());

    // What a kiosk does after a lost answer: the same request again.
    let (status, replayed, again) = app.transfer(KIOSK, Some("tr-key-1"), body.clone()).await;
    assert_eq!((status, replayed.as_deref()), (201, Some("true")));
    assert_eq!(again["id"], first["id"]);
    let stats = app.sim_stats().await;
    assert_eq!(stats["transfers_executed"], 1, "{stats}");
    assert_eq!(
        stats["by_path"]["/transfers"], 1,
        "the replay came from the API's record"
    );

    let (status, _, err) = app
        .transfer(
            KIOSK,
            Some("tr-key-1"),
            json!({"from": "1", "to": "3", "amount": "10000"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("idempotency_key_mismatch"))
    );
    // The API's records are per caller: a counter's key of the same name
    // is not answered from the kiosk's record but goes to the core.
    let (status, _, _) = app.transfer(COUNTER, Some("tr-key-1"), body).await;
    assert_eq!(status, 201);
    assert_eq!(app.sim_stats().await["by_path"]["/transfers"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_that_ignores_idempotency_keys_still_gets_one_transfer_per_key() {
    let app = start(&["--ignore-idempotency"], &[]);
    let body = json!({"from": "1", "to": "2", "amount": "500"});
    let (status, _, first) = app.transfer(COUNTER, Some("once"), body.clone()).await;
    assert_eq!(status, 201, "{first}");
    for _ in 0..3 {
        let (status, replayed, again) = app.transfer(COUNTER, Some("once"), body.clone()).await;
        assert_eq!((status, replayed.as_deref()), (201, Some("true")));
        assert_eq!(again, first);
    }
    assert_eq!(app.sim_stats().await["transfers_executed"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_whose_answer_was_cut_goes_to_the_core_again_with_its_key() {
    // The core executes the transfer, then trickles its answer a byte a
    // second: the API cuts it at core_timeout_ms and cannot know the outcome.
    let app = start(
        &["--trickle-ms", "1000"],
        &[("SPIN_VARIABLE_CORE_TIMEOUT_MS", "1500")],
    );
    let body = json!({"from": "1", "to": "2", "amount": "700"});
    let started = std::time::Instant::now();
    let (status, _, err) = app.transfer(KIOSK, Some("cut"), body.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (504, Some("core_unavailable")),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the trickle was not cut: {:?}",
        started.elapsed()
    );
    app.sim("POST", "/_sim/mode", Some(json!({"trickle_ms": 0})))
        .await;
    // The API recorded no answer: the retry goes to the core with the same
    // key, and the core answers with the transfer it already made.
    let (status, replayed, answer) = app.transfer(KIOSK, Some("cut"), body.clone()).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (201, Some("true")),
        "{answer}"
    );
    let stats = app.sim_stats().await;
    assert_eq!(stats["transfers_executed"], 1, "{stats}");
    assert_eq!(stats["by_path"]["/transfers"], 2, "{stats}");
    // From now on the API's own record answers.
    let (status, _, again) = app.transfer(KIOSK, Some("cut"), body).await;
    assert_eq!((status, again["id"].clone()), (201, answer["id"].clone()));
    assert_eq!(app.sim_stats().await["by_path"]["/transfers"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_shows_its_checks_to_counters_only_and_never_error_text() {
    let app = start(&[], &[]);
    let (status, public) = app.get("/health", None).await;
    assert_eq!(status, 200);
    let mut fields: Vec<&String> = public.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["status", "version"], "{public}");
    assert_eq!(public["status"], "ok");
    // A kiosk key is not enough.
    assert!(
        app.get("/health", Some(KIOSK))
            .await
            .1
            .get("checks")
            .is_none()
    );
    let (_, counter) = app.get("/health", Some(COUNTER)).await;
    assert_eq!(counter["checks"], json!({"store": "ok", "core": "ok"}));

    let down = start(&["--hang"], &[]);
    let (status, public) = down.get("/health", None).await;
    assert_eq!((status, public["status"].as_str()), (200, Some("degraded")));
    assert!(public.get("checks").is_none(), "{public}");
    let (_, counter) = down.get("/health", Some(COUNTER)).await;
    assert_eq!(counter["checks"]["core"], "failing: timeout");
    for body in [public.to_string(), counter.to_string()] {
        assert!(!body.contains("ErrorCode"), "{body}");
    }
}

/// Sends `method path` with `auth` and `body`, and checks the answer
/// against api/openapi.json under `template`.
async fn exchange(
    app: &App,
    api: &support::openapi::OpenApi,
    (method, path, template): (&str, &str, &str),
    auth: Option<&str>,
    body: Option<Value>,
    idempotency_key: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.host.url(path));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    api.check(method, template, status, &value);
    (status, value)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_405_names_the_allowed_methods() {
    let app = start(&[], &[]);
    for (method, path, allow) in [
        ("PUT", "/api/v1/tickets", "POST"),
        ("PATCH", "/api/v1/tickets/t-1", "GET, DELETE"),
        ("DELETE", "/api/v1/queues/demo", "GET"),
        ("GET", "/api/v1/queues/demo/call", "POST"),
        ("GET", "/api/v1/queues/demo/recall", "POST"),
        ("GET", "/api/v1/queues/demo/tickets/t-1/complete", "POST"),
        ("POST", "/health", "GET, HEAD"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.host.url(path))
            .header("authorization", KIOSK)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let allowed = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok());
        assert_eq!(allowed, Some(allow), "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "method_not_allowed",
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_match_the_openapi_document() {
    let api = support::openapi::OpenApi::load();
    let app = start(&[], &[]);
    let tickets = "/api/v1/tickets";
    let (_, t1) = exchange(
        &app,
        &api,
        ("POST", tickets, tickets),
        Some(KIOSK),
        Some(deposit()),
        Some("c1"),
    )
    .await;
    let (_, t2) = exchange(
        &app,
        &api,
        ("POST", tickets, tickets),
        Some(KIOSK),
        Some(deposit()),
        Some("c2"),
    )
    .await;
    exchange(
        &app,
        &api,
        ("POST", tickets, tickets),
        Some(KIOSK),
        Some(deposit()),
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        ("POST", tickets, tickets),
        None,
        Some(deposit()),
        Some("c3"),
    )
    .await;
    exchange(
        &app,
        &api,
        ("POST", tickets, tickets),
        Some(KIOSK),
        Some(json!({"branch": "x"})),
        Some("c4"),
    )
    .await;
    exchange(
        &app,
        &api,
        ("POST", tickets, tickets),
        Some(KIOSK),
        Some(json!({"branch": "demo", "service": "loan", "channel": "kiosk"})),
        Some("c1"),
    )
    .await;
    let id1 = t1["id"].as_str().unwrap();
    let id2 = t2["id"].as_str().unwrap();
    let one = format!("/api/v1/tickets/{id1}");
    exchange(
        &app,
        &api,
        ("GET", &one, "/api/v1/tickets/{id}"),
        Some(KIOSK),
        None,
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        ("GET", "/api/v1/tickets/nope", "/api/v1/tickets/{id}"),
        Some(KIOSK),
        None,
        None,
    )
    .await;
    let board = "/api/v1/queues/{branch}";
    exchange(
        &app,
        &api,
        ("GET", "/api/v1/queues/demo", board),
        None,
        None,
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        ("GET", "/api/v1/queues/nope", board),
        None,
        None,
        None,
    )
    .await;
    let call = (
        "POST",
        "/api/v1/queues/demo/call",
        "/api/v1/queues/{branch}/call",
    );
    let (status, called) = exchange(
        &app,
        &api,
        call,
        Some(COUNTER),
        Some(json!({"counter": "1"})),
        None,
    )
    .await;
    assert_eq!(status, 200);
    exchange(
        &app,
        &api,
        ("DELETE", &one, "/api/v1/tickets/{id}"),
        Some(COUNTER),
        None,
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        (
            "POST",
            "/api/v1/queues/demo/recall",
            "/api/v1/queues/{branch}/recall",
        ),
        Some(COUNTER),
        Some(json!({"counter": "1"})),
        None,
    )
    .await;
    let action = |a: &str| {
        format!(
            "/api/v1/queues/demo/tickets/{}/{a}",
            called["id"].as_str().unwrap()
        )
    };
    let transfer = action("transfer");
    exchange(
        &app,
        &api,
        (
            "POST",
            &transfer,
            "/api/v1/queues/{branch}/tickets/{id}/transfer",
        ),
        Some(COUNTER),
        Some(json!({"service": "fx"})),
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        call,
        Some(COUNTER),
        Some(json!({"counter": "2"})),
        None,
    )
    .await;
    let complete = action("complete");
    exchange(
        &app,
        &api,
        (
            "POST",
            &complete,
            "/api/v1/queues/{branch}/tickets/{id}/complete",
        ),
        Some(COUNTER),
        None,
        None,
    )
    .await;
    let no_show = format!("/api/v1/queues/demo/tickets/{id2}/no-show");
    exchange(
        &app,
        &api,
        (
            "POST",
            &no_show,
            "/api/v1/queues/{branch}/tickets/{id}/no-show",
        ),
        Some(COUNTER),
        None,
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        (
            "DELETE",
            &format!("/api/v1/tickets/{id2}"),
            "/api/v1/tickets/{id}",
        ),
        Some(COUNTER),
        None,
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        call,
        Some(COUNTER),
        Some(json!({"counter": "3"})),
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        ("GET", "/api/v1/core/customers/c-1", "/api/v1/core/{path}"),
        Some(KIOSK),
        None,
        None,
    )
    .await;
    exchange(
        &app,
        &api,
        ("GET", "/api/v1/core/secrets", "/api/v1/core/{path}"),
        Some(KIOSK),
        None,
        None,
    )
    .await;
    let core = ("POST", "/api/v1/core/transfers", "/api/v1/core/{path}");
    let transfer = json!({"from": "1", "to": "2", "amount": "1"});
    exchange(&app, &api, core, Some(KIOSK), Some(transfer.clone()), None).await;
    let (status, _) = exchange(
        &app,
        &api,
        core,
        Some(KIOSK),
        Some(transfer.clone()),
        Some("o-1"),
    )
    .await;
    assert_eq!(status, 201);
    exchange(&app, &api, core, Some(KIOSK), Some(transfer), Some("o-1")).await;
    let (status, _) = exchange(
        &app,
        &api,
        core,
        Some(KIOSK),
        Some(json!({"other": true})),
        Some("o-1"),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = exchange(
        &app,
        &api,
        ("GET", "/api/v1/core/customers/a;b", "/api/v1/core/{path}"),
        Some(KIOSK),
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);
    exchange(&app, &api, ("GET", "/health", "/health"), None, None, None).await;
    let (_, health) = exchange(
        &app,
        &api,
        ("GET", "/health", "/health"),
        Some(COUNTER),
        None,
        None,
    )
    .await;
    assert!(health["checks"].is_object());
}

/// 8 clients × 200 tickets at once on one service, through `hosts`: the
/// numbers are exactly A-001 … A-1600.
async fn issue_concurrently(hosts: &[&Host]) {
    let http = client();
    let tasks: Vec<_> = (0..8)
        .map(|client_no| {
            let http = http.clone();
            let url = hosts[client_no % hosts.len()].url("/api/v1/tickets");
            tokio::spawn(async move {
                let mut numbers = Vec::with_capacity(200);
                for i in 0..200 {
                    let response = http
                        .post(&url)
                        .header("authorization", KIOSK)
                        .header("idempotency-key", format!("load-{client_no}-{i}"))
                        .json(&deposit())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(status, 201, "{body}");
                    let number = body["number"].as_str().unwrap();
                    numbers.push(number.trim_start_matches("A-").parse::<u32>().unwrap());
                }
                numbers
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=1600).collect::<Vec<u32>>(),
        "numbers repeated or skipped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_issues_on_the_embedded_store_get_exactly_1_to_1600() {
    let app = start(&[], &[]);
    issue_concurrently(&[&app.host]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_issues_through_two_hosts_sharing_redis_get_exactly_1_to_1600() {
    guest_wasm("ticket");
    let redis = kiosk_kv::testing::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = redis_runtime_config(dir.path(), &redis.url(), "");
    let args = ["--runtime-config-file", config.to_str().unwrap()];
    let manifest = repo().join("spin.toml");
    let a = Host::start_with_env(&manifest, &dir.path().join("a"), &args, &[]);
    let b = Host::start_with_env(&manifest, &dir.path().join("b"), &args, &[]);
    issue_concurrently(&[&a, &b]).await;
    // Both hosts see the same queue.
    let board: Value = client()
        .get(b.url("/api/v1/queues/demo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(board["services"][0]["last_issued"], "A-1600");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_core_within_its_timeout_still_answers() {
    let app = start(&["--latency-ms", "100"], &[]);
    let response = app
        .http
        .get(app.host.url("/api/v1/core/accounts/7/balance"))
        .header("authorization", COUNTER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["account"], "7");
}

/// spin.toml rewritten into `dir` (wasm sources absolute, the catalog
/// folder copied beside it, as files must lie inside the app's directory),
/// the ticket component reading `ticket_catalog` and the queue component
/// mounting `dir/queue_catalog_dir` instead.
fn manifest_with_catalogs(
    dir: &std::path::Path,
    ticket_catalog: &str,
    queue_catalog_dir: &str,
) -> std::path::PathBuf {
    let root = repo();
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    for entry in std::fs::read_dir(root.join("crates/kiosk-domain/catalog")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), catalog.join(entry.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(root.join("spin.toml")).unwrap();
    let queue_start = text.find("[component.queue]").unwrap();
    let (before, after) = text.split_at(queue_start);
    let before = before.replacen(
        "catalog_path = \"/catalog/dev.json\"",
        &format!("catalog_path = \"{ticket_catalog}\""),
        1,
    );
    let after = after.replacen(
        "\"crates/kiosk-domain/catalog\"",
        &format!("\"{queue_catalog_dir}\""),
        1,
    );
    let text = format!("{before}{after}")
        .replace("\"crates/kiosk-domain/catalog\"", "\"catalog\"")
        .replace(
            "source = \"target/",
            &format!("source = \"{}/target/", root.display()),
        );
    let manifest = dir.join("spin.toml");
    std::fs::write(&manifest, text).unwrap();
    // The development credentials travel with the manifest.
    std::fs::copy(root.join(".env"), dir.join(".env")).unwrap();
    manifest
}

/// A 503 `store_unavailable` with `Retry-After`, whose cause (`log`) is in
/// the host's log.
async fn expect_unavailable_and_logged(response: reqwest::Response, host: &Host, log: &str) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(host.wait_for_log(log), "{}", host.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_broken_catalog_is_a_clear_error_and_the_rest_keeps_serving() {
    guest_wasm("ticket");
    let core = CoreSim::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken-catalog");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("dev.json"),
        "{\"branches\": [{\"id\": \"demo\",\n",
    )
    .unwrap();
    let manifest = manifest_with_catalogs(dir.path(), "/catalog/missing.json", "broken-catalog");
    let state = dir.path().join("state");
    let host = Host::start_with_env(
        &manifest,
        &state,
        &[],
        &[("SPIN_VARIABLE_CORE_BASE_URL", &core.url)],
    );
    let http = client();

    let response = http
        .post(host.url("/api/v1/tickets"))
        .header("authorization", KIOSK)
        .header("idempotency-key", "no-catalog")
        .json(&deposit())
        .send()
        .await
        .unwrap();
    // The client is told to retry; the operator's log says what is wrong.
    expect_unavailable_and_logged(
        response,
        &host,
        "reading the catalog /catalog/missing.json: entity not found",
    )
    .await;

    let response = http
        .get(host.url("/api/v1/queues/demo"))
        .header("authorization", KIOSK)
        .send()
        .await
        .unwrap();
    expect_unavailable_and_logged(response, &host, "invalid catalog /catalog/dev.json: ").await;

    // Health reads no catalog and still answers.
    let health = http.get(host.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

// ------------------------------------------------------------------ limits

/// Sleeps into the next window of `period_s` seconds unless at least
/// `needed_s` are left in the current one, so a test's requests share one
/// rate window.
async fn room_in_window(period_s: u64, needed_s: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let left = period_s - now.as_secs() % period_s;
    if left < needed_s {
        tokio::time::sleep(std::time::Duration::from_millis(left * 1000 + 200)).await;
    }
}

/// Status, `Retry-After` and body of a response.
async fn seen(response: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn jongno(service: &str) -> Value {
    json!({"branch": "jongno", "service": service, "channel": "kiosk"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kiosk_key_over_its_ticket_rate_at_jongno_gets_429_and_others_are_served() {
    let api = support::openapi::OpenApi::load();
    let app = start(
        &[],
        &[(
            "SPIN_VARIABLE_KIOSK_API_KEYS",
            "kiosk-dev:dev-kiosk-key,kiosk-2:second-kiosk-key",
        )],
    );
    room_in_window(60, 20).await;
    // 120 tickets (the default rate) over the three queues, 8 at a time:
    // 75 deposits, 25 fx, 20 loans, each queue below its max_waiting.
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let http = app.http.clone();
            let url = app.host.url("/api/v1/tickets");
            tokio::spawn(async move {
                for i in (worker..120).step_by(8) {
                    let service = match i {
                        0..75 => "deposit",
                        75..100 => "fx",
                        _ => "loan",
                    };
                    let response = http
                        .post(&url)
                        .header("authorization", KIOSK)
                        .header("idempotency-key", format!("rate-{i}"))
                        .json(&jongno(service))
                        .send()
                        .await
                        .unwrap();
                    let (status, _, body) = seen(response).await;
                    assert_eq!(status, 201, "ticket {i}: {body}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let over = app
        .http
        .post(app.host.url("/api/v1/tickets"))
        .header("authorization", KIOSK)
        .header("idempotency-key", "rate-120")
        .json(&jongno("deposit"))
        .send()
        .await
        .unwrap();
    let (status, retry_after, body) = seen(over).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    let retry_after = retry_after.expect("Retry-After on 429");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    api.check("POST", "/api/v1/tickets", status, &body);

    // Another kiosk, a phone, and the same key at demo are served.
    let (status, body) = app
        .issue(
            "Bearer second-kiosk-key",
            Some("other-kiosk"),
            jongno("deposit"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .issue(
            &mobile_token("rate-phone"),
            None,
            json!({"branch": "jongno", "service": "fx", "channel": "mobile"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.issue(KIOSK, Some("rate-demo"), deposit()).await;
    assert_eq!(status, 201, "{body}");
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phones_fourth_ticket_in_an_hour_at_jongno_is_429() {
    let api = support::openapi::OpenApi::load();
    let app = start(&[], &[]);
    room_in_window(3600, 30).await;
    let phone = mobile_token("hourly");
    let body = json!({"branch": "jongno", "service": "fx", "channel": "mobile"});
    for i in 0..3 {
        let (status, ticket) = app.issue(&phone, None, body.clone()).await;
        assert_eq!(status, 201, "ticket {i}: {ticket}");
        // One active ticket per branch: cancel before the next.
        let cancel = app
            .http
            .delete(app.host.url(&format!(
                "/api/v1/tickets/{}",
                ticket["id"].as_str().unwrap()
            )))
            .header("authorization", &phone)
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 200);
    }
    let over = app
        .http
        .post(app.host.url("/api/v1/tickets"))
        .header("authorization", &phone)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, retry_after, body) = seen(over).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    assert!((1..=3600).contains(&retry_after.expect("Retry-After on 429")));
    api.check("POST", "/api/v1/tickets", status, &body);
    // Another phone is served.
    let (status, _) = app
        .issue(
            &mobile_token("someone-else"),
            None,
            json!({"branch": "jongno", "service": "fx", "channel": "mobile"}),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_over_its_core_call_rate_gets_429_before_the_core() {
    let api = support::openapi::OpenApi::load();
    guest_wasm("core");
    let core = CoreSim::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_with_catalogs(dir.path(), "/catalog/dev.json", "catalog");
    // The development catalog with the passthrough's rate at 5 a minute.
    let mut catalog: Value = serde_json::from_str(kiosk_domain::Catalog::dev_json()).unwrap();
    catalog["limits"] = json!({"core_calls": {"limit": 5, "per": "minute"}});
    std::fs::write(dir.path().join("catalog/dev.json"), catalog.to_string()).unwrap();
    let host = Host::start_with_env(
        &manifest,
        &dir.path().join("state"),
        &[],
        &[("SPIN_VARIABLE_CORE_BASE_URL", &core.url)],
    );
    let http = client();
    room_in_window(60, 15).await;
    let balance = |auth: &'static str| {
        http.get(host.url("/api/v1/core/accounts/1/balance"))
            .header("authorization", auth)
            .send()
    };
    for i in 0..5 {
        let (status, _, body) = seen(balance(COUNTER).await.unwrap()).await;
        assert_eq!(status, 200, "call {i}: {body}");
    }
    let (status, retry_after, body) = seen(balance(COUNTER).await.unwrap()).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    assert!((1..=60).contains(&retry_after.expect("Retry-After on 429")));
    api.check("GET", "/api/v1/core/{path}", status, &body);
    // Writes count too.
    let transfer = http
        .post(host.url("/api/v1/core/transfers"))
        .header("authorization", COUNTER)
        .header("idempotency-key", "over-the-rate")
        .json(&json!({"from": "1", "to": "2", "amount": "1"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = seen(transfer).await;
    assert_eq!(status, 429, "{body}");
    api.check("POST", "/api/v1/core/{path}", status, &body);
    // The kiosk key has its own count.
    let (status, _, _) = seen(balance(KIOSK).await.unwrap()).await;
    assert_eq!(status, 200);
    // Refused calls never reached the core.
    let stats: Value = http
        .get(format!("{}/_sim/stats", core.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_path"]["/accounts/1/balance"], 6, "{stats}");
    assert!(stats["by_path"]["/transfers"].is_null(), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_at_jongno_is_409_queue_full_until_a_ticket_is_called() {
    let api = support::openapi::OpenApi::load();
    let app = start(&[], &[]);
    // jongno's loan queue takes 20.
    for i in 0..20 {
        let (status, body) = app
            .issue(KIOSK, Some(&format!("full-{i}")), jongno("loan"))
            .await;
        assert_eq!(status, 201, "ticket {i}: {body}");
    }
    let (status, body) = app.issue(KIOSK, Some("full-20"), jongno("loan")).await;
    assert_eq!((status, code(&body)), (409, "queue_full"), "{body}");
    api.check("POST", "/api/v1/tickets", status, &body);
    let (status, body) = app
        .issue(
            &mobile_token("late"),
            None,
            json!({"branch": "jongno", "service": "loan", "channel": "mobile"}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "queue_full"), "{body}");
    // Other queues are open; a call makes room in this one.
    let (status, _) = app.issue(KIOSK, Some("full-d"), jongno("deposit")).await;
    assert_eq!(status, 201);
    let called = app
        .http
        .post(app.host.url("/api/v1/queues/jongno/call"))
        .header("authorization", COUNTER)
        .json(&json!({"counter": "4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), 200);
    let (status, body) = app.issue(KIOSK, Some("full-21"), jongno("loan")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["number"], "B-021");
    assert_eq!(body["waiting_ahead"], 19);
}
