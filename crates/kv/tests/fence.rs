//! The sequence fence against a real redis-server that goes back in time:
//! wiped (`SHUTDOWN NOSAVE` and a restart, or `FLUSHALL`) or restarted from
//! an older snapshot. No number handed out before may be handed out again.

use std::path::Path;
use std::time::{Duration, Instant};

use kiosk_kv::fence::host_id;
use kiosk_kv::testing::RedisServer;
use kiosk_kv::{FenceConfig, FencedStore, KvBackend, KvError, RedisStore};

const KEY: &str = "seq:demo:2026-03-02";

/// A host: its own state dir and id, short timings.
async fn host(server: &RedisServer, state_dir: &Path, peer_timeout: Duration) -> FencedStore {
    host_polling(server, state_dir, peer_timeout, Duration::from_millis(200)).await
}

/// The same, checking the store every `poll`.
async fn host_polling(
    server: &RedisServer,
    state_dir: &Path,
    peer_timeout: Duration,
    poll: Duration,
) -> FencedStore {
    let redis = RedisStore::connect(&server.url()).await.unwrap();
    let id = host_id(state_dir).unwrap();
    let mut config = FenceConfig::new(vec!["seq:".into()]);
    config.poll_interval = poll;
    config.peer_timeout = peer_timeout;
    let store = FencedStore::start(redis, "default", state_dir, &id, config)
        .await
        .unwrap();
    assert!(
        store.wait_ready(Duration::from_secs(20)).await,
        "{:?}",
        store.status()
    );
    store
}

/// Increments `key`, retrying while the store is unavailable (recovering or
/// restarting), within a generous bound. Returns the value and how many
/// times it was unavailable.
async fn increment(store: &FencedStore, key: &str) -> (i64, u32) {
    let until = Instant::now() + Duration::from_secs(60);
    let mut unavailable = 0;
    loop {
        match store.increment(key, 1).await {
            Ok(value) => return (value, unavailable),
            Err(KvError::Unavailable(_)) if Instant::now() < until => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("increment failed: {e} ({:?})", store.status()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_store_numbers_above_what_this_host_handed_out() {
    let mut server = RedisServer::start_volatile();
    let dir = tempfile::tempdir().unwrap();
    let store = host(&server, dir.path(), Duration::from_secs(5)).await;
    for expected in 1..=5 {
        assert_eq!(increment(&store, KEY).await.0, expected);
    }
    server.crash_and_restart();
    let (value, _) = increment(&store, KEY).await;
    assert!(value > 5, "{value} was handed out before the wipe");
    assert!(store.status().recoveries >= 1, "{:?}", store.status());
}

/// Two hosts take turns on one key, the store is wiped, then only `a`
/// numbers: `a` must wait for `b`, idle, to raise the key above `b`'s last
/// number. `b` polls slowly, so that only waiting for it (not `a`'s grace
/// period after creating the epoch) keeps `a` from numbering too early.
async fn two_hosts_then_only_one_numbers(wipe: impl FnOnce(&mut RedisServer)) {
    let mut server = RedisServer::start_volatile();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let timeout = Duration::from_secs(30);
    let a = host(&server, dir_a.path(), timeout).await;
    let b = host_polling(&server, dir_b.path(), timeout, Duration::from_secs(2)).await;
    let mut handed_out = Vec::new();
    for _ in 0..10 {
        handed_out.push(increment(&a, KEY).await.0);
        handed_out.push(increment(&b, KEY).await.0);
    }
    assert_eq!(handed_out, (1..=20).collect::<Vec<i64>>());
    // `a` has read `b`'s heartbeat since `b` started (it polls every 200 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    wipe(&mut server);
    let mut after = Vec::new();
    let mut unavailable = 0;
    for _ in 0..5 {
        let (value, waited) = increment(&a, KEY).await;
        after.push(value);
        unavailable += waited;
    }
    println!("before: {handed_out:?}; after: {after:?}; unavailable answers: {unavailable}");
    assert!(
        after.iter().all(|v| *v > 20),
        "numbers handed out again: {after:?}"
    );
    assert!(unavailable > 0, "the wipe went unnoticed");
    assert!(
        b.status().ready && b.status().recoveries >= 1,
        "{:?}",
        b.status()
    );
    assert!(a.status().unanswered.is_empty(), "{:?}", a.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn after_shutdown_nosave_a_host_waits_for_its_idle_peer_to_raise() {
    two_hosts_then_only_one_numbers(RedisServer::crash_and_restart).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_flushall_a_host_waits_for_its_idle_peer_to_raise() {
    two_hosts_then_only_one_numbers(|server| server.flush_all()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_peer_is_waited_for_at_most_the_peer_timeout() {
    let server = RedisServer::start_volatile();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&server, dir_a.path(), Duration::from_secs(3)).await;
    let b = host(&server, dir_b.path(), Duration::from_secs(3)).await;
    let mut last_of_a = 0;
    for _ in 0..3 {
        last_of_a = increment(&a, KEY).await.0;
        increment(&b, KEY).await;
    }
    // `a` has read `b`'s heartbeat, then `b` dies.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(b);
    server.flush_all();
    let (value, unavailable) = increment(&a, KEY).await;
    assert!(
        value > last_of_a,
        "{value} was handed out by this host before"
    );
    assert!(unavailable > 0);
    let status = a.status();
    assert_eq!(
        status.unanswered,
        vec![format!("{}/default", host_id(dir_b.path()).unwrap())],
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_from_an_older_snapshot_is_seen_by_the_host_that_lost_writes() {
    let mut server = RedisServer::start_volatile();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&server, dir_a.path(), Duration::from_secs(30)).await;
    let b = host(&server, dir_b.path(), Duration::from_secs(30)).await;
    for _ in 0..3 {
        increment(&a, KEY).await;
        increment(&b, KEY).await;
    }
    server.save_snapshot();
    // Lost: only `a`'s writes after the snapshot; the epoch survives.
    let mut highest = 0;
    for _ in 0..4 {
        highest = increment(&a, KEY).await.0;
    }
    assert_eq!(highest, 10);
    server.crash_and_restart();
    let (value, _) = increment(&a, KEY).await;
    assert!(value > highest, "{value} was handed out before");
    assert!(a.status().recoveries >= 1, "{:?}", a.status());
    let (value_b, _) = increment(&b, KEY).await;
    assert!(value_b > value, "{value_b} after {value}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_declared_sequences_are_fenced_and_the_fence_keys_are_hidden() {
    let server = RedisServer::start_volatile();
    let dir = tempfile::tempdir().unwrap();
    let store = host(&server, dir.path(), Duration::from_secs(5)).await;
    increment(&store, KEY).await;
    assert_eq!(store.increment("claim:x", 1).await.unwrap(), 1);
    server.flush_all();
    // A claim that tests `== 1` works again after a wipe: not raised.
    assert_eq!(store.increment("claim:x", 1).await.unwrap(), 1);
    let (value, _) = increment(&store, KEY).await;
    assert_eq!(value, 2);
    let keys = store.list_keys().await.unwrap();
    assert_eq!(keys, vec!["claim:x".to_string(), KEY.to_string()]);
    assert!(matches!(
        store.set("kiosk-fence:epoch", b"1-x").await,
        Err(KvError::Other(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_keeps_its_id_and_journal_across_restarts() {
    let server = RedisServer::start_volatile();
    let dir = tempfile::tempdir().unwrap();
    let id = host_id(dir.path()).unwrap();
    assert_eq!(host_id(dir.path()).unwrap(), id);
    let store = host(&server, dir.path(), Duration::from_secs(5)).await;
    for _ in 0..3 {
        increment(&store, KEY).await;
    }
    drop(store);
    server.flush_all();
    // Restarted after the wipe: raises before numbering.
    let store = host(&server, dir.path(), Duration::from_secs(5)).await;
    assert_eq!(increment(&store, KEY).await.0, 4);
}
