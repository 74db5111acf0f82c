//! `queue-scale`: what each queue operation costs as the queue grows.
//!
//! For each size (default 10, 10,000 and 100,000 tickets waiting) and each
//! store (the real SQLite store in a temporary file; Redis too when
//! `redis-server` is on PATH, a throwaway server with an append-only file
//! synced every second), on a fresh store:
//!
//! 1. fill: kiosks issue `size` tickets through `Kiosk::issue_ticket`
//!    (idempotency keys, several threads at once), within `--fill-budget-s`
//!    and, from the second size on, no more than the previous size's fill
//!    predicts can be issued and settled in that budget (settling taken to
//!    grow a little faster than the square of the line, as today's does);
//!    the size reached is reported;
//! 2. settle: a counter transfers the oldest ticket to another service and
//!    back until such a transfer reads at most `--settle-keys` store keys
//!    (the counters have caught up with the burst: today's design merges
//!    up to 1000 issued tickets into the queue document per counter action),
//!    bounded by the fill budget again;
//! 3. measure, in cycles that leave the line as long as they found it:
//!    issue, the new ticket's status (`ticket`, with `waiting_ahead`), the
//!    board (`queue`), transfer, cancel (a ticket in the middle of the
//!    line), `call_next` (+ `complete`), and two more issues.
//!
//! Per operation: median and p99 latency (p99 is the largest sample below
//! 100 samples), and the store calls, keys and bytes per request, counted
//! by an adapter around the store (the deterministic part).
//!
//! Everything goes through the domain's public API only (never store keys),
//! so the same benchmark measures a redesigned queue.

mod report;
mod scenario;
mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiosk_domain::Catalog;
use kiosk_kv::testing::RedisServer;
use kiosk_kv::{RedisStore, SqliteStore};

use crate::scenario::{Limits, SizeRun, run_size};
use crate::store::{Counting, KvStore};

const USAGE: &str = "\
usage: queue-scale [options]
  --sizes 10,10000,100000   tickets waiting to measure at
  --backends auto           sqlite, redis or both (auto: sqlite, and redis if redis-server is on PATH)
  --fill-budget-s 60        time to fill each size (issuing; settling is bounded by as much again);
                            the size reached is reported
  --fill-threads 16         issuing threads during the fill
  --cycles 40               most measurement cycles per size (each: 3 issues + 1 of every other operation)
  --sample-budget-s 15      measurement time per size (at least 3 cycles, at most 3x this)
  --warmup-cycles 1         unmeasured cycles before measuring
  --settle-keys 400         the fill is settled once a transfer reads at most this many keys
  --catalog PATH            catalog JSON (default: the crate's catalog.json)
  --json PATH               write the results as JSON
  --quiet                   no progress on stderr";

struct Args {
    sizes: Vec<usize>,
    backends: Vec<String>,
    limits: Limits,
    catalog: PathBuf,
    json: Option<PathBuf>,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sizes: vec![10, 10_000, 100_000],
        backends: Vec::new(),
        limits: Limits {
            fill_budget: Duration::from_secs(60),
            fill_threads: 16,
            settle_keys: 400,
            cycles: 40,
            sample_budget: Duration::from_secs(15),
            warmup_cycles: 1,
        },
        catalog: Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog.json"),
        json: None,
        quiet: false,
    };
    let mut backends = "auto".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        if flag == "--quiet" {
            args.quiet = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| -> Result<u64, String> {
            v.replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--sizes" => {
                args.sizes = value
                    .split(',')
                    .map(|v| number(v).map(|n| n as usize))
                    .collect::<Result<_, _>>()?;
                if args.sizes.is_empty() || args.sizes.contains(&0) {
                    return Err("--sizes: give sizes of at least 1".into());
                }
            }
            "--backends" => backends = value,
            "--fill-budget-s" => args.limits.fill_budget = Duration::from_secs(number(&value)?),
            "--fill-threads" => args.limits.fill_threads = number(&value)?.clamp(1, 256) as usize,
            "--cycles" => args.limits.cycles = number(&value)?.max(1) as usize,
            "--sample-budget-s" => args.limits.sample_budget = Duration::from_secs(number(&value)?),
            "--warmup-cycles" => args.limits.warmup_cycles = number(&value)? as usize,
            "--settle-keys" => args.limits.settle_keys = number(&value)?,
            "--catalog" => args.catalog = value.into(),
            "--json" => args.json = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    args.backends = match backends.as_str() {
        "auto" => {
            let mut b = vec!["sqlite".to_owned()];
            if redis_on_path() {
                b.push("redis".into());
            }
            b
        }
        list => list.split(',').map(str::to_owned).collect(),
    };
    for b in &args.backends {
        if b != "sqlite" && b != "redis" {
            return Err(format!("--backends: unknown store {b:?} (sqlite, redis)"));
        }
    }
    Ok(args)
}

fn redis_on_path() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join("redis-server").is_file())
}

/// Per-operation timeout of the stores: a 100,000-ticket queue document is
/// tens of megabytes, far beyond what the default 2 s is meant for.
const STORE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let quiet = args.quiet;
    let log = move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let text = std::fs::read_to_string(&args.catalog).unwrap_or_else(|e| {
        eprintln!("cannot read {}: {e}", args.catalog.display());
        std::process::exit(2);
    });
    let catalog = Catalog::from_json(&text).unwrap_or_else(|e| {
        eprintln!("invalid catalog {}: {e}", args.catalog.display());
        std::process::exit(2);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let mut results: Vec<(String, Vec<SizeRun>)> = Vec::new();
    for backend in &args.backends {
        let mut runs: Vec<SizeRun> = Vec::new();
        for &size in &args.sizes {
            let previous = runs.last().map(|r| &r.fill);
            log(&format!("{backend}, {size} waiting:"));
            let run = match backend.as_str() {
                "sqlite" => {
                    let dir = tempfile::Builder::new()
                        .prefix("queue-scale-")
                        .tempdir()
                        .expect("temporary directory");
                    let kv = SqliteStore::open(&dir.path().join("kv.db"), "default")
                        .unwrap_or_else(|e| panic!("SQLite store: {e}"))
                        .with_timeout(STORE_TIMEOUT);
                    let store = Counting::new(KvStore::new(kv, runtime.handle().clone()));
                    run_size(&catalog, &store, size, previous, &args.limits, &log)
                }
                _ => {
                    // A fresh server per size: an empty store and append-only file.
                    let server = RedisServer::start();
                    let kv = runtime
                        .block_on(RedisStore::connect_with_timeout(
                            &server.url(),
                            STORE_TIMEOUT,
                        ))
                        .unwrap_or_else(|e| panic!("Redis store: {e}"));
                    let store = Counting::new(KvStore::new(kv, runtime.handle().clone()));
                    let run = run_size(&catalog, &store, size, previous, &args.limits, &log);
                    drop(store);
                    drop(server);
                    run
                }
            };
            log(&format!(
                "  measured {} cycles in {:.1} s at {} waiting{}",
                run.cycles,
                run.measure_seconds,
                run.reached,
                if run.errors.is_empty() {
                    String::new()
                } else {
                    format!("; errors: {}", run.errors.join("; "))
                }
            ));
            runs.push(run);
        }
        results.push((backend.clone(), runs));
    }
    let total = started.elapsed().as_secs_f64();
    let json = report::to_json(&args.sizes, &args.limits, &results, total);
    println!("{}", report::table(&json));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json).expect("JSON");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        log(&format!("written: {}", path.display()));
    }
}
