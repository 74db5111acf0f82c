//! Measures `increment` throughput of each backend: 16 concurrent tasks share
//! 10 000 increments of one key, on one store handle and then split over two
//! handles (as two processes would be).
//!
//! Run: `cargo run --example increment_bench` (starts its own redis-server).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiosk_kv::testing::RedisServer;
use kiosk_kv::{KvBackend, RedisStore, SqliteStore};

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
}
