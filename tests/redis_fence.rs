//! The sequence fence end to end: two kiosk-host processes share a Redis
//! that keeps nothing on disk; Redis is stopped the unsafe way
//! (`SHUTDOWN NOSAVE`) and started again empty on the same port. Ticket
//! numbering goes on above every number handed out before, through either
//! host, instead of starting again at 1.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Host, client, guest_wasm, redis_runtime_config, repo};

const KIOSK: &str = "Bearer dev-kiosk-key";

/// What issuing through one host gave.
#[derive(Default)]
struct Issued {
    numbers: Vec<u32>,
    unavailable: u32,
}

/// Issues `count` deposit tickets through `host`, one after the other,
/// retrying a 503 `store_unavailable` (the fence pausing numbering, or Redis
/// coming back) for at most a minute per ticket.
async fn issue(host: &Host, tag: &str, count: usize) -> Issued {
    let http = client();
    let mut issued = Issued::default();
    for i in 0..count {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let response = http
                .post(host.url("/api/v1/tickets"))
                .header("authorization", KIOSK)
                .header("idempotency-key", format!("fence-{tag}-{i}"))
                .json(&json!({"branch": "demo", "service": "deposit", "channel": "kiosk"}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == 503
                && body["error"]["code"] == "store_unavailable"
                && Instant::now() < until
            {
                issued.unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(status, 201, "{body}\n{}", host.stderr());
            let number = body["number"].as_str().unwrap();
            issued
                .numbers
                .push(number.trim_start_matches("A-").parse().unwrap());
            break;
        }
    }
    issued
}

/// Issues `count` tickets through each host at once.
async fn issue_through_both(a: &Host, b: &Host, round: &str, count: usize) -> (Issued, Issued) {
    let (tag_a, tag_b) = (format!("{round}-a"), format!("{round}-b"));
    tokio::join!(issue(a, &tag_a, count), issue(b, &tag_b, count))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_hand_out_no_number_twice_after_redis_forgets_everything() {
    guest_wasm("ticket");
    let mut redis = kiosk_kv::testing::RedisServer::start_volatile();
    let dir = tempfile::tempdir().unwrap();
    let config = redis_runtime_config(
        dir.path(),
        &redis.url(),
        "durability = \"volatile\"\npeer_timeout = \"10s\"\n",
    );
    let args = ["--runtime-config-file", config.to_str().unwrap()];
    let manifest = repo().join("spin.toml");
    let a = Host::start_with_env(&manifest, &dir.path().join("a"), &args, &[]);
    let b = Host::start_with_env(&manifest, &dir.path().join("b"), &args, &[]);

    let (before_a, before_b) = issue_through_both(&a, &b, "before", 20).await;
    let before: BTreeSet<u32> = before_a
        .numbers
        .iter()
        .chain(&before_b.numbers)
        .copied()
        .collect();
    assert_eq!(before, (1..=40).collect(), "before the restart");

    redis.crash_and_restart();

    let (after_a, after_b) = issue_through_both(&a, &b, "after", 20).await;
    let mut all: Vec<u32> = before.iter().copied().collect();
    all.extend(&after_a.numbers);
    all.extend(&after_b.numbers);
    let distinct: BTreeSet<u32> = all.iter().copied().collect();
    let repeats = all.len() - distinct.len();
    let unavailable = after_a.unavailable + after_b.unavailable;
    println!(
        "issued before the restart: {}, after: {} (a: {:?}, b: {:?}), repeats: {repeats}, \
         503 store_unavailable answers: {unavailable}",
        before.len(),
        after_a.numbers.len() + after_b.numbers.len(),
        after_a.numbers,
        after_b.numbers
    );
    assert_eq!(repeats, 0, "numbers handed out twice: {all:?}");
    assert_eq!(all.len(), 80);
    for host in [&a, &b] {
        // Both hosts were alive: neither numbered without the other.
        assert!(
            !host.stderr().contains("within the peer timeout"),
            "{}",
            host.stderr()
        );
    }
    assert!(
        a.stderr().contains("raising sequences") || b.stderr().contains("raising sequences"),
        "no host noticed the rewind:\n{}\n{}",
        a.stderr(),
        b.stderr()
    );
}
