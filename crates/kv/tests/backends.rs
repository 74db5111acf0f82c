//! One suite, run against every backend with identical assertions, plus the
//! tests that only make sense for one backend.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk_kv::testing::RedisServer;
use kiosk_kv::{
    Expected, KvBackend, KvError, MAX_VALUE_SIZE, RedisStore, SqliteStore, SwapOutcome,
};

type Store = Arc<dyn KvBackend>;

/// A fresh, empty store of one backend.
trait Fixture: Sized {
    async fn new() -> Self;
    /// The handle the tests use.
    fn store(&self) -> Store;
    /// Another handle on the same data, opened separately (its own
    /// connections), as a second process would.
    async fn another_handle(&self) -> Store;
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
}

const LABEL: &str = "default";

impl Fixture for Sqlite {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let store = Arc::new(SqliteStore::open(&path, LABEL).unwrap());
        Self {
            _dir: dir,
            path,
            store,
        }
    }
    fn store(&self) -> Store {
        self.store.clone()
    }
    async fn another_handle(&self) -> Store {
        Arc::new(SqliteStore::open(&self.path, LABEL).unwrap())
    }
}

struct Redis {
    server: RedisServer,
    store: Store,
}

impl Fixture for Redis {
    async fn new() -> Self {
        let server = RedisServer::start();
        let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
        Self { server, store }
    }
    fn store(&self) -> Store {
        self.store.clone()
    }
    async fn another_handle(&self) -> Store {
        Arc::new(RedisStore::connect(&self.server.url()).await.unwrap())
    }
}

/// Runs each named test of the shared suite against `$fixture`.
macro_rules! shared_suite {
    ($fixture:ty) => {
        shared_suite!($fixture =>
            get_set_delete,
            exists_and_list_keys,
            get_many_keeps_request_order,
            set_many_and_delete_many,
            binary_and_empty_values,
            oversized_values_are_refused,
            increment_from_absent_and_negative_delta,
            increment_on_non_integer_is_invalid,
            increment_overflow_is_invalid,
            swap_absent,
            swap_with_value,
            handles_share_data,
            concurrent_increments_over_two_handles,
            concurrent_cas_appends_lose_nothing,
        );
    };
    ($fixture:ty => $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let fixture = <$fixture as super::Fixture>::new().await;
                super::$test(&fixture).await;
            }
        )*
    };
}

mod sqlite {
    shared_suite!(super::Sqlite);
}

mod redis {
    shared_suite!(super::Redis);
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn sorted_keys(store: &Store) -> Vec<String> {
    let mut listed = store.list_keys().await.unwrap();
    listed.sort();
    listed
}

async fn get_set_delete(f: &impl Fixture) {
    let s = f.store();
    assert_eq!(s.get("a").await.unwrap(), None);
    s.set("a", b"one").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"one".to_vec()));
    s.set("a", b"two").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"two".to_vec()));
    s.delete("a").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None);
    // Deleting an absent key is not an error.
    s.delete("a").await.unwrap();
    s.delete("never-there").await.unwrap();
}

async fn exists_and_list_keys(f: &impl Fixture) {
    let s = f.store();
    assert!(sorted_keys(&s).await.is_empty());
    assert!(!s.exists("a").await.unwrap());
    for key in ["b", "a", "c"] {
        s.set(key, key.as_bytes()).await.unwrap();
    }
    assert!(s.exists("a").await.unwrap());
    assert_eq!(sorted_keys(&s).await, keys(&["a", "b", "c"]));
    s.delete("b").await.unwrap();
    assert!(!s.exists("b").await.unwrap());
    assert_eq!(sorted_keys(&s).await, keys(&["a", "c"]));

    // More keys than one SCAN round trip returns.
    let many: Vec<(String, Vec<u8>)> = (0..2500).map(|i| (format!("k{i:04}"), vec![1])).collect();
    s.set_many(&many).await.unwrap();
    assert_eq!(s.list_keys().await.unwrap().len(), 2502);
}

async fn get_many_keeps_request_order(f: &impl Fixture) {
    let s = f.store();
    s.set("a", b"A").await.unwrap();
    s.set("c", b"C").await.unwrap();
    let got = s
        .get_many(&keys(&["c", "b", "a", "missing", "c"]))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            ("c".to_string(), Some(b"C".to_vec())),
            ("b".to_string(), None),
            ("a".to_string(), Some(b"A".to_vec())),
            ("missing".to_string(), None),
            ("c".to_string(), Some(b"C".to_vec())),
        ]
    );
    assert!(s.get_many(&[]).await.unwrap().is_empty());
    assert_eq!(
        s.get_many(&keys(&["a"])).await.unwrap(),
        vec![("a".to_string(), Some(b"A".to_vec()))]
    );
}

async fn set_many_and_delete_many(f: &impl Fixture) {
    let s = f.store();
    s.set("b", b"old").await.unwrap();
    let items = vec![
        ("a".to_string(), b"1".to_vec()),
        ("b".to_string(), b"2".to_vec()),
        ("c".to_string(), b"3".to_vec()),
    ];
    s.set_many(&items).await.unwrap();
    for (key, value) in &items {
        assert_eq!(s.get(key).await.unwrap().as_ref(), Some(value));
    }
    s.delete_many(&keys(&["a", "missing", "b"])).await.unwrap();
    assert_eq!(sorted_keys(&s).await, keys(&["c"]));
    s.set_many(&[]).await.unwrap();
    s.delete_many(&[]).await.unwrap();
    assert_eq!(sorted_keys(&s).await, keys(&["c"]));
}

async fn binary_and_empty_values(f: &impl Fixture) {
    let s = f.store();
    let all_bytes: Vec<u8> = (0..=255u8).rev().collect();
    s.set("bin", &all_bytes).await.unwrap();
    assert_eq!(s.get("bin").await.unwrap(), Some(all_bytes.clone()));

    s.set("empty", b"").await.unwrap();
    assert_eq!(s.get("empty").await.unwrap(), Some(Vec::new()));
    assert!(s.exists("empty").await.unwrap());

    let key = "clé/with spaces:and\u{1F511}";
    s.set(key, b"\0").await.unwrap();
    assert_eq!(s.get(key).await.unwrap(), Some(vec![0]));
    assert_eq!(sorted_keys(&s).await, keys(&["bin", key, "empty"]));

    let got = s.get_many(&keys(&["empty", "bin"])).await.unwrap();
    assert_eq!(got[0].1, Some(Vec::new()));
    assert_eq!(got[1].1, Some(all_bytes));
}

async fn oversized_values_are_refused(f: &impl Fixture) {
    let s = f.store();
    let big = vec![0u8; MAX_VALUE_SIZE + 1];
    assert!(matches!(
        s.set("big", &big).await,
        Err(KvError::TooLarge(_))
    ));
    let items = vec![
        ("small".to_string(), vec![1]),
        ("big".to_string(), big.clone()),
    ];
    assert!(matches!(
        s.set_many(&items).await,
        Err(KvError::TooLarge(_))
    ));
    assert!(matches!(
        s.swap("big", &Expected::Absent, &big).await,
        Err(KvError::TooLarge(_))
    ));
    // Nothing of the refused batch was written.
    assert!(sorted_keys(&s).await.is_empty());
}

async fn increment_from_absent_and_negative_delta(f: &impl Fixture) {
    let s = f.store();
    assert_eq!(s.increment("n", 1).await.unwrap(), 1);
    assert_eq!(s.increment("n", 5).await.unwrap(), 6);
    assert_eq!(s.increment("n", -10).await.unwrap(), -4);
    assert_eq!(s.increment("n", 0).await.unwrap(), -4);
    assert_eq!(s.increment("m", -3).await.unwrap(), -3);
    assert!(s.exists("m").await.unwrap());
    // The counter is an ordinary value: it can be deleted and starts over.
    s.delete("n").await.unwrap();
    assert_eq!(s.increment("n", 2).await.unwrap(), 2);
}

async fn increment_on_non_integer_is_invalid(f: &impl Fixture) {
    let s = f.store();
    s.set("text", b"abc").await.unwrap();
    let result = s.increment("text", 1).await;
    assert!(
        matches!(result, Err(KvError::InvalidValue(_))),
        "{result:?}"
    );
    assert_eq!(s.get("text").await.unwrap(), Some(b"abc".to_vec()));
    s.set("empty", b"").await.unwrap();
    let result = s.increment("empty", 1).await;
    assert!(
        matches!(result, Err(KvError::InvalidValue(_))),
        "{result:?}"
    );
    // The store still works.
    assert_eq!(s.increment("fine", 1).await.unwrap(), 1);
}

async fn increment_overflow_is_invalid(f: &impl Fixture) {
    let s = f.store();
    assert_eq!(s.increment("n", i64::MAX).await.unwrap(), i64::MAX);
    let result = s.increment("n", 1).await;
    assert!(
        matches!(result, Err(KvError::InvalidValue(_))),
        "{result:?}"
    );
    assert_eq!(s.increment("n", 0).await.unwrap(), i64::MAX);
    assert_eq!(s.increment("low", i64::MIN).await.unwrap(), i64::MIN);
    let result = s.increment("low", -1).await;
    assert!(
        matches!(result, Err(KvError::InvalidValue(_))),
        "{result:?}"
    );
}

async fn swap_absent(f: &impl Fixture) {
    let s = f.store();
    assert_eq!(
        s.swap("k", &Expected::Absent, b"first").await.unwrap(),
        SwapOutcome::Swapped
    );
    assert_eq!(s.get("k").await.unwrap(), Some(b"first".to_vec()));
    // Someone inserted: insert-if-absent must not overwrite.
    assert_eq!(
        s.swap("k", &Expected::Absent, b"second").await.unwrap(),
        SwapOutcome::Conflict {
            current: Some(b"first".to_vec())
        }
    );
    assert_eq!(s.get("k").await.unwrap(), Some(b"first".to_vec()));
    // An empty value is present, not absent.
    s.set("e", b"").await.unwrap();
    assert_eq!(
        s.swap("e", &Expected::Absent, b"x").await.unwrap(),
        SwapOutcome::Conflict {
            current: Some(Vec::new())
        }
    );
}

async fn swap_with_value(f: &impl Fixture) {
    let s = f.store();
    s.set("k", b"v1").await.unwrap();
    assert_eq!(
        s.swap("k", &Expected::Value(b"v1".to_vec()), b"v2")
            .await
            .unwrap(),
        SwapOutcome::Swapped
    );
    assert_eq!(s.get("k").await.unwrap(), Some(b"v2".to_vec()));
    // Stale expectation: conflict, carrying what is there now.
    assert_eq!(
        s.swap("k", &Expected::Value(b"v1".to_vec()), b"v3")
            .await
            .unwrap(),
        SwapOutcome::Conflict {
            current: Some(b"v2".to_vec())
        }
    );
    assert_eq!(s.get("k").await.unwrap(), Some(b"v2".to_vec()));
    // Expecting a value where there is none.
    assert_eq!(
        s.swap("absent", &Expected::Value(b"v1".to_vec()), b"v3")
            .await
            .unwrap(),
        SwapOutcome::Conflict { current: None }
    );
    assert!(!s.exists("absent").await.unwrap());
    // Expecting the empty value matches only the empty value.
    s.set("e", b"").await.unwrap();
    assert_eq!(
        s.swap("e", &Expected::Value(Vec::new()), b"full")
            .await
            .unwrap(),
        SwapOutcome::Swapped
    );
    assert_eq!(
        s.swap("absent", &Expected::Value(Vec::new()), b"full")
            .await
            .unwrap(),
        SwapOutcome::Conflict { current: None }
    );
}

async fn handles_share_data(f: &impl Fixture) {
    let one = f.store();
    let two = f.another_handle().await;
    one.set("k", b"from one").await.unwrap();
    assert_eq!(two.get("k").await.unwrap(), Some(b"from one".to_vec()));
    two.delete("k").await.unwrap();
    assert!(!one.exists("k").await.unwrap());
}

async fn concurrent_increments_over_two_handles(f: &impl Fixture) {
    let handles = [f.store(), f.another_handle().await];
    // Every increment saw a distinct value: none was lost or duplicated.
    assert_eq!(
        increment_concurrently(&handles, 16, 100).await,
        (1..=1600).collect::<Vec<i64>>()
    );
    assert_eq!(handles[1].increment("counter", 0).await.unwrap(), 1600);
}

/// `tasks` tasks, spread over `handles` in turn, each incrementing
/// `"counter"` by one `per_task` times; every value they were answered, sorted.
async fn increment_concurrently(handles: &[Store], tasks: usize, per_task: usize) -> Vec<i64> {
    let tasks: Vec<_> = (0..tasks)
        .map(|i| {
            let store = handles[i % handles.len()].clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    seen.push(store.increment("counter", 1).await.unwrap());
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    seen.sort_unstable();
    seen
}

async fn concurrent_cas_appends_lose_nothing(f: &impl Fixture) {
    const TASKS: u8 = 16;
    const APPENDS: usize = 5;
    let handles = [f.store(), f.another_handle().await];
    let tasks: Vec<_> = (0..TASKS)
        .map(|id| {
            let store = handles[usize::from(id) % 2].clone();
            tokio::spawn(async move {
                let mut current = store.get("log").await.unwrap();
                for _ in 0..APPENDS {
                    loop {
                        let expected = current.clone().map_or(Expected::Absent, Expected::Value);
                        let mut new = current.clone().unwrap_or_default();
                        new.push(id);
                        match store.swap("log", &expected, &new).await.unwrap() {
                            SwapOutcome::Swapped => {
                                current = Some(new);
                                break;
                            }
                            SwapOutcome::Conflict { current: now } => current = now,
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = handles[0].get("log").await.unwrap().unwrap();
    let mut counts = BTreeMap::new();
    for id in &log {
        *counts.entry(*id).or_insert(0) += 1;
    }
    assert_eq!(log.len(), usize::from(TASKS) * APPENDS, "{log:?}");
    assert_eq!(counts, (0..TASKS).map(|id| (id, APPENDS)).collect());
}

// ---- SQLite only ----

#[tokio::test]
async fn sqlite_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/kv.db");
    let error = SqliteStore::open(&path, LABEL).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("no/such/dir"), "{message}");
}

#[tokio::test]
async fn sqlite_in_memory_store() {
    let s = SqliteStore::in_memory(LABEL).unwrap();
    s.set("a", b"1").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.increment("n", 2).await.unwrap(), 2);
    assert_eq!(s.list_keys().await.unwrap().len(), 2);
    // Each in-memory store is its own.
    let other = SqliteStore::in_memory(LABEL).unwrap();
    assert_eq!(other.get("a").await.unwrap(), None);
}

/// The file is Spin's: same table, labels as `store`, counters as 8-byte
/// little-endian integers, WAL journal.
#[tokio::test]
async fn sqlite_file_is_spin_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.db");
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key));
             INSERT INTO spin_key_value VALUES ('default', 'from-spin', x'0102');
             INSERT INTO spin_key_value VALUES ('other', 'from-spin', x'03');",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path, "default").unwrap();
    assert_eq!(s.get("from-spin").await.unwrap(), Some(vec![1, 2]));
    assert_eq!(s.list_keys().await.unwrap(), keys(&["from-spin"]));
    assert_eq!(s.increment("n", 5).await.unwrap(), 5);
    assert_eq!(s.get("n").await.unwrap(), Some(5i64.to_le_bytes().to_vec()));

    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let value: Vec<u8> = raw
        .query_row(
            "SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'n'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(value, 5i64.to_le_bytes());
    // The other label's row is untouched and invisible.
    let other = SqliteStore::open(&path, "other").unwrap();
    assert_eq!(other.list_keys().await.unwrap(), keys(&["from-spin"]));
    assert_eq!(other.get("from-spin").await.unwrap(), Some(vec![3]));
}

/// A file locked by another process past the timeout: `Unavailable`, on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_file_is_unavailable_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let timeout = Duration::from_millis(300);
    let s = SqliteStore::open(&path, LABEL)
        .unwrap()
        .with_timeout(timeout);
    s.set("k", b"v").await.unwrap();

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for attempt in [
        Box::pin(s.set("k", b"w")) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>,
        Box::pin(async { s.increment("n", 1).await.map(|_| ()) }),
        Box::pin(async { s.swap("k", &Expected::Absent, b"x").await.map(|_| ()) }),
    ] {
        let started = Instant::now();
        let result = attempt.await;
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
        assert!(
            elapsed >= timeout - Duration::from_millis(50),
            "{elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "{elapsed:?}"
        );
    }
    // Readers are not blocked by a writer (WAL).
    assert_eq!(s.get("k").await.unwrap(), Some(b"v".to_vec()));
    locker.execute_batch("ROLLBACK").unwrap();
    s.set("k", b"w").await.unwrap();
    assert_eq!(s.get("k").await.unwrap(), Some(b"w".to_vec()));
}

/// A counter of the wrong length (Spin panics here) is `InvalidValue`.
#[tokio::test]
async fn sqlite_counter_of_wrong_length_is_invalid() {
    let s = SqliteStore::in_memory(LABEL).unwrap();
    s.set("n", &[1, 0, 0, 0]).await.unwrap();
    let result = s.increment("n", 1).await;
    assert!(
        matches!(result, Err(KvError::InvalidValue(_))),
        "{result:?}"
    );
    s.set("n", &7i64.to_le_bytes()).await.unwrap();
    assert_eq!(s.increment("n", 1).await.unwrap(), 8);
}

// ---- SQLite group commit ----
//
// Writes of one handle are committed in batches by its writer thread; these
// tests check that batching changes nothing a caller can see.

/// Many more concurrent writers than the machine has threads, on one key:
/// every increment applied once, and each saw its own distinct value. Also with
/// one transaction per write, the mode the benchmark compares against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_concurrent_increments_on_one_key() {
    for max_batch in [None, Some(1)] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("kv.db"), LABEL).unwrap();
        if let Some(max_batch) = max_batch {
            store = store.with_max_batch(max_batch);
        }
        let store = Arc::new(store);
        let seen = increment_concurrently(&[store.clone() as Store], 32, 50).await;
        assert_eq!(seen, (1..=1600).collect::<Vec<i64>>(), "{max_batch:?}");
        assert_eq!(store.increment("counter", 0).await.unwrap(), 1600);
        if max_batch == Some(1) {
            // 1600 increments and the read above, one commit each.
            assert_eq!(store.commits(), 1601);
        }
    }
}

/// Makes the writer thread of `store` (on the file at `path`) stall on a first
/// write while `queue` sends more, so that those all end up in ONE
/// transaction; checks that they did. Returns what `queue`'s tasks returned.
async fn in_one_batch<T: Send + 'static>(
    store: &Arc<SqliteStore>,
    path: &std::path::Path,
    queue: impl FnOnce() -> Vec<tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let locker = rusqlite::Connection::open(path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let plug = tokio::spawn({
        let store = store.clone();
        async move { store.set("plug", b"").await }
    });
    // The writer thread takes the plug and waits for the lock...
    tokio::time::sleep(Duration::from_millis(200)).await;
    let commits = store.commits();
    let tasks = queue();
    // ... while everything else queues behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    locker.execute_batch("ROLLBACK").unwrap();
    plug.await.unwrap().unwrap();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(
        store.commits(),
        commits + 2,
        "the plug and then everything queued behind it, each in one commit"
    );
    results
}

/// One failing write of a batch (an increment of a value that is not a
/// counter) fails alone: the others of its transaction succeed, and are on
/// disk once answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failing_write_fails_alone_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let store = Arc::new(SqliteStore::open(&path, LABEL).unwrap());
    store.set("text", b"abc").await.unwrap();
    store.set("gone", b"x").await.unwrap();
    store.increment("n", 100).await.unwrap();

    #[derive(Debug)]
    enum Done {
        Unit(Result<(), KvError>),
        Count(Result<i64, KvError>),
        Swap(Result<SwapOutcome, KvError>),
    }
    let results = in_one_batch(&store, &path, || {
        let mut tasks = Vec::new();
        for i in 0..10i64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                Done::Unit(s.set(&format!("k{i}"), &[i as u8]).await)
            }));
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                Done::Count(s.increment(&format!("c{i}"), i + 1).await)
            }));
            if i == 3 || i == 7 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    Done::Count(s.increment("text", 1).await)
                }));
            }
        }
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            Done::Count(s.increment("n", 1).await)
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            Done::Unit(
                s.set_many(&[("m1".into(), b"1".to_vec()), ("m2".into(), b"2".to_vec())])
                    .await,
            )
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(
            async move { Done::Unit(s.delete("gone").await) },
        ));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            Done::Swap(s.swap("fresh", &Expected::Absent, b"new").await)
        }));
        tasks
    })
    .await;

    let mut failures = 0;
    for result in &results {
        match result {
            Done::Count(Err(KvError::InvalidValue(_))) => failures += 1,
            Done::Unit(Ok(())) | Done::Count(Ok(_)) | Done::Swap(Ok(SwapOutcome::Swapped)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(failures, 2, "{results:?}");
    drop(results);
    drop(store);

    // A new handle reads everything back from the file.
    let reopened = SqliteStore::open(&path, LABEL).unwrap();
    for i in 0..10i64 {
        assert_eq!(
            reopened.get(&format!("k{i}")).await.unwrap(),
            Some(vec![i as u8])
        );
        assert_eq!(
            reopened.increment(&format!("c{i}"), 0).await.unwrap(),
            i + 1
        );
    }
    assert_eq!(reopened.increment("n", 0).await.unwrap(), 101);
    assert_eq!(reopened.get("text").await.unwrap(), Some(b"abc".to_vec()));
    assert_eq!(reopened.get("m2").await.unwrap(), Some(b"2".to_vec()));
    assert!(!reopened.exists("gone").await.unwrap());
    assert_eq!(reopened.get("fresh").await.unwrap(), Some(b"new".to_vec()));
}

/// Insert-if-absent from many tasks at once: exactly one wins, in one batch or
/// over several, on a file and in memory; the losers see the winner's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_insert_if_absent_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let file = Arc::new(SqliteStore::open(&path, LABEL).unwrap());
    let memory = Arc::new(SqliteStore::in_memory(LABEL).unwrap());
    let racers = |store: &Arc<SqliteStore>, key: &'static str| {
        (0..32u8)
            .map(|id| {
                let store = store.clone();
                tokio::spawn(async move {
                    let outcome = store.swap(key, &Expected::Absent, &[id]).await.unwrap();
                    (id, outcome)
                })
            })
            .collect::<Vec<_>>()
    };
    let check = |results: Vec<(u8, SwapOutcome)>, stored: Option<Vec<u8>>| {
        let winners: Vec<u8> = results
            .iter()
            .filter(|(_, outcome)| *outcome == SwapOutcome::Swapped)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert_eq!(stored, Some(vec![winners[0]]));
        for (_, outcome) in results {
            if let SwapOutcome::Conflict { current } = outcome {
                assert_eq!(current, Some(vec![winners[0]]));
            }
        }
    };

    let batched = in_one_batch(&file, &path, || racers(&file, "batched")).await;
    check(batched, file.get("batched").await.unwrap());
    for store in [&file, &memory] {
        let mut results = Vec::new();
        for task in racers(store, "free") {
            results.push(task.await.unwrap());
        }
        check(results, store.get("free").await.unwrap());
    }
}

/// Writes that time out waiting for the file lock are not written later, when
/// the lock is free: a timeout means "not done".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_timed_out_writes_are_not_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let timeout = Duration::from_millis(300);
    let store = Arc::new(
        SqliteStore::open(&path, LABEL)
            .unwrap()
            .with_timeout(timeout),
    );
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.set(&format!("k{i}"), b"v").await })
        })
        .collect();
    for task in tasks {
        let result = task.await.unwrap();
        assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
    }
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    locker.execute_batch("ROLLBACK").unwrap();
    // The writer is free again; nothing of the failed writes shows up.
    store.set("after", b"v").await.unwrap();
    assert_eq!(
        sorted_keys(&(store.clone() as Store)).await,
        keys(&["after"])
    );
}

/// An in-memory store's reads go through its writer thread: under
/// concurrency, each task reads its own writes and never another's
/// half-done `set_many`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_store_under_concurrency() {
    let store = Arc::new(SqliteStore::in_memory(LABEL).unwrap());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let (a, b) = (format!("a{t}"), format!("b{t}"));
                for i in 0..50u8 {
                    store
                        .set_many(&[(a.clone(), vec![i]), (b.clone(), vec![i])])
                        .await
                        .unwrap();
                    assert_eq!(store.get(&a).await.unwrap(), Some(vec![i]));
                    let both = store.get_many(&[a.clone(), b.clone()]).await.unwrap();
                    assert_eq!(both[0].1, both[1].1);
                    store.increment("shared", 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.increment("shared", 0).await.unwrap(), 800);
    assert_eq!(store.list_keys().await.unwrap().len(), 33);
}

// ---- Redis only ----

/// Counters are Redis integers, as Spin stores them there.
#[tokio::test]
async fn redis_counter_is_decimal_text() {
    let f = Redis::new().await;
    let s = f.store();
    assert_eq!(s.increment("n", 42).await.unwrap(), 42);
    assert_eq!(s.get("n").await.unwrap(), Some(b"42".to_vec()));
    s.set("m", b"-7").await.unwrap();
    assert_eq!(s.increment("m", 1).await.unwrap(), -6);
}

#[tokio::test]
async fn redis_nothing_listening_is_unavailable_within_the_bound() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");

    let started = Instant::now();
    let result = RedisStore::connect(&url).await;
    assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < kiosk_kv::DEFAULT_TIMEOUT + Duration::from_millis(500));

    // Lazily connected: the operation fails instead, as quickly.
    let lazy = RedisStore::connect_lazy(&url).await.unwrap();
    let started = Instant::now();
    let result = lazy.get("k").await;
    assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < kiosk_kv::DEFAULT_TIMEOUT + Duration::from_millis(500));
}

/// A peer that accepts connections but never answers must not hang us.
#[tokio::test]
async fn redis_silent_server_is_unavailable_within_the_bound() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let timeout = Duration::from_millis(400);

    let started = Instant::now();
    let result = RedisStore::connect_with_timeout(&url, timeout).await;
    assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    drop(listener);
}

/// The server goes away after connecting: operations fail fast, and work again
/// once a server is back on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_going_away_is_unavailable() {
    let server = RedisServer::start();
    let s = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    s.set("k", b"v").await.unwrap();
    drop(server);
    for _ in 0..3 {
        let started = Instant::now();
        let result = s.get("k").await;
        assert!(matches!(result, Err(KvError::Unavailable(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_millis(1000));
    }
}

#[tokio::test]
async fn redis_out_of_memory_is_full() {
    let f = Redis::new().await;
    let client = ::redis::Client::open(f.server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    for (name, value) in [("maxmemory", "4mb"), ("maxmemory-policy", "noeviction")] {
        ::redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .exec_async(&mut admin)
            .await
            .unwrap();
    }
    let s = f.store();
    let chunk = vec![7u8; 256 * 1024];
    let mut result = Ok(());
    for i in 0..100 {
        result = s.set(&format!("k{i}"), &chunk).await;
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(KvError::Full(_))), "{result:?}");
    // The swap script hits the same limit and says so.
    let result = s.swap("new", &Expected::Absent, &chunk).await;
    assert!(matches!(result, Err(KvError::Full(_))), "{result:?}");
    // Reads still work.
    assert_eq!(s.get("k0").await.unwrap(), Some(chunk));
}

/// Checkpoints happen off the commit path but do happen: after writing far
/// more than the WAL's threshold, the log file stays a few thousand pages
/// long (without checkpoints it would hold every write) and the data is in
/// the database file, and survives reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_keep_the_wal_short() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.db");
    let store = Arc::new(SqliteStore::open(&path, LABEL).unwrap());
    let value = vec![7u8; 2048];
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    store.set(&format!("k-{t}-{i}"), &value).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // 6400 values of 2 KiB: at least 12.5 MiB of WAL frames without
    // checkpoints, whichever way the writes were batched.
    let wal = std::fs::metadata(dir.path().join("kv.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 10 << 20, "WAL is {wal} bytes");
    let db = std::fs::metadata(&path).unwrap().len();
    assert!(db > 4 << 20, "database file is {db} bytes");
    drop(store);
    let reopened = SqliteStore::open(&path, LABEL).unwrap();
    assert_eq!(reopened.list_keys().await.unwrap().len(), 6400);
    assert_eq!(reopened.get("k-15-399").await.unwrap(), Some(value));
}
