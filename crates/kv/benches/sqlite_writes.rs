//! Write throughput of the SQLite backend with group commit, against the same
//! store committing every write alone (`with_max_batch(1)`: one transaction,
//! one fsync, per write, as before group commit).
//!
//! 16 concurrent tokio tasks increment one key of a store in a temporary
//! file (`synchronous=FULL`). The two modes alternate, ROUNDS times each, and
//! the median of each is printed with their ratio.
//!
//! Run: `cargo bench -p kiosk-kv --bench sqlite_writes`
//! (the temporary file goes in `$TMPDIR`, so put that on the disk to measure).

use std::sync::Arc;
use std::time::Instant;

use kiosk_kv::{KvBackend, SqliteStore};

const TASKS: usize = 16;
const ROUNDS: usize = 3;
/// Increments per round; fewer for the slow mode, to keep the run short.
const GROUP_OPS: usize = 32_000;
const SINGLE_OPS: usize = 8_000;

/// Increments/s of `ops` increments shared by [`TASKS`] tasks.
async fn round(store: &Arc<SqliteStore>, key: &str, ops: usize) -> f64 {
    let before = store.increment(key, 0).await.expect("read");
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                for _ in 0..ops / TASKS {
                    store.increment(&key, 1).await.expect("increment");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = started.elapsed();
    let done = (ops / TASKS * TASKS) as i64;
    assert_eq!(store.increment(key, 0).await.expect("read"), before + done);
    done as f64 / elapsed.as_secs_f64()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = Arc::new(SqliteStore::open(&dir.path().join("group.db"), "default").expect("open"));
    let single = Arc::new(
        SqliteStore::open(&dir.path().join("single.db"), "default")
            .expect("open")
            .with_max_batch(1),
    );
    // Warm up: create the files' pages and WAL.
    round(&group, "warmup", 1_600).await;
    round(&single, "warmup", 1_600).await;

    let (mut group_rates, mut single_rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let commits = group.commits();
        let rate = round(&group, "counter", GROUP_OPS).await;
        let batches = group.commits() - commits;
        println!(
            "  group commit:    {rate:>8.0} increments/s ({:.1} per commit)",
            GROUP_OPS as f64 / batches as f64
        );
        group_rates.push(rate);
        let rate = round(&single, "counter", SINGLE_OPS).await;
        println!("  one tx per op:   {rate:>8.0} increments/s");
        single_rates.push(rate);
    }
    let (g, s) = (median(group_rates), median(single_rates));
    println!(
        "sqlite increments, {TASKS} tasks, median of {ROUNDS}: group commit {g:.0}/s, \
         one transaction per op {s:.0}/s, ratio {:.1}x",
        g / s
    );
}
