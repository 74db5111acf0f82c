//! Measures `increment` throughput of each backend: 16 concurrent tasks share
//! 10 000 increments of one key, on one store handle and then split over two
//! handles (as two processes would be). `fenced` is Redis behind the
//! sequence fence (the key declared a sequence; separate state dirs per
//! handle, as two hosts).
//!
//! Run: `cargo run --example increment_bench` (starts its own redis-server).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk_kv::testing::RedisServer;
use kiosk_kv::{FenceConfig, FencedStore, KvBackend, RedisStore, SqliteStore};

const TASKS: usize = 16;
const TOTAL: usize = 10_000;

async fn bench(name: &str, handles: &[Arc<dyn KvBackend>]) {
    let key = format!("bench-{}", handles.len());
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let store = handles[i % handles.len()].clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for _ in 0..TOTAL / TASKS {
                    let started = Instant::now();
                    store.increment(&key, 1).await.expect("increment");
                    slowest = slowest.max(started.elapsed());
                }
                slowest
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.expect("task"));
    }
    let elapsed = started.elapsed();
    let done = (TOTAL / TASKS * TASKS) as i64;
    assert_eq!(handles[0].increment(&key, 0).await.expect("read"), done);
    println!(
        "{name:<8} {} handle(s): {done} increments in {:.2?} = {:.0} ops/s, slowest one {:.1?}",
        handles.len(),
        elapsed,
        done as f64 / elapsed.as_secs_f64(),
        slowest
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let open = |p: &Path| -> Arc<dyn KvBackend> {
        Arc::new(SqliteStore::open(p, "default").expect("open"))
    };
    bench("sqlite", &[open(&path)]).await;
    bench("sqlite", &[open(&path), open(&path)]).await;

    let server = RedisServer::start();
    let connect = || async {
        Arc::new(RedisStore::connect(&server.url()).await.expect("connect")) as Arc<dyn KvBackend>
    };
    bench("redis", &[connect().await]).await;
    bench("redis", &[connect().await, connect().await]).await;

    // A server of its own: the fence starts numbering from an empty store.
    let server = RedisServer::start();
    let fenced = |state_dir: std::path::PathBuf| {
        let url = server.url();
        async move {
            let redis = RedisStore::connect(&url).await.expect("connect");
            let id = kiosk_kv::fence::host_id(&state_dir).expect("host id");
            let config = FenceConfig::new(vec!["bench-".into()]);
            let store = FencedStore::start(redis, "default", &state_dir, &id, config)
                .await
                .expect("fence");
            assert!(store.wait_ready(Duration::from_secs(10)).await);
            Arc::new(store) as Arc<dyn KvBackend>
        }
    };
    let state = |name: &str| dir.path().join(name);
    bench("fenced", &[fenced(state("a")).await]).await;
    bench(
        "fenced",
        &[fenced(state("b")).await, fenced(state("c")).await],
    )
    .await;
}
