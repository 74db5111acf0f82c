//! Results as JSON (what `bench/run` reads) and as a table.

use serde_json::{Value, json};

use crate::scenario::{Limits, OPERATIONS, Sample, SizeRun};

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` of the values at or below it (with fewer than 100 values, p99
/// is the largest).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted(values: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v
}

fn op_json(samples: &[Sample]) -> Value {
    if samples.is_empty() {
        return json!({ "n": 0 });
    }
    let ns = sorted(samples.iter().map(|s| s.nanos));
    let ms = |n: u64| n as f64 / 1e6;
    let ops = sorted(samples.iter().map(|s| s.tally.ops));
    let keys = sorted(samples.iter().map(|s| s.tally.keys));
    let read = sorted(samples.iter().map(|s| s.tally.bytes_read));
    let written = sorted(samples.iter().map(|s| s.tally.bytes_written));
    let both = sorted(
        samples
            .iter()
            .map(|s| s.tally.bytes_read + s.tally.bytes_written),
    );
    json!({
        "n": samples.len(),
        "p50_ms": ms(percentile(&ns, 0.5)),
        "p99_ms": ms(percentile(&ns, 0.99)),
        "mean_ms": ms(ns.iter().sum::<u64>() / ns.len() as u64),
        "store_ops_p50": percentile(&ops, 0.5),
        "store_ops_max": percentile(&ops, 1.0),
        "keys_p50": percentile(&keys, 0.5),
        "bytes_read_p50": percentile(&read, 0.5),
        "bytes_written_p50": percentile(&written, 0.5),
        "bytes_p50": percentile(&both, 0.5),
        "bytes_max": percentile(&both, 1.0),
    })
}

fn size_json(run: &SizeRun) -> Value {
    let ops: serde_json::Map<String, Value> = run
        .samples
        .iter()
        .map(|(op, samples)| ((*op).to_owned(), op_json(samples)))
        .collect();
    let ahead = sorted(run.waiting_ahead.iter().map(|&n| u64::from(n)));
    let f = &run.fill;
    json!({
        "target": run.target,
        "reached": run.reached,
        "complete": run.complete(),
        "fill": {
            "stopped_by_prediction": f.stopped_by_prediction,
            "issued": f.issued,
            "issue_s": f.issue_seconds,
            "issue_errors": f.issue_errors,
            "first_error": f.first_error,
            "settle_transfers": f.settle_transfers,
            "settle_s": f.settle_seconds,
            "settled": f.settled,
            "settle_last_keys": f.settle_last_keys,
        },
        "warmup_cycles": run.warmup_cycles,
        "cycles": run.cycles,
        "measure_s": run.measure_seconds,
        "waiting_ahead_p50": percentile(&ahead, 0.5),
        "errors": run.errors,
        "ops": ops,
    })
}

fn ratio(to: &Value, from: &Value, key: &str) -> Value {
    match (to[key].as_f64(), from[key].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

fn measured(size: &Value) -> bool {
    size["ops"]["issue"]["n"].as_u64().unwrap_or(0) > 0
}

/// The largest measured size over the smallest, per operation.
fn ratios_json(sizes: &[Value]) -> Value {
    let measured: Vec<&Value> = sizes.iter().filter(|s| measured(s)).collect();
    let (Some(first), Some(last)) = (measured.first(), measured.last()) else {
        return json!({});
    };
    if measured.len() < 2 {
        return json!({});
    }
    let mut out = serde_json::Map::new();
    for op in OPERATIONS {
        let (a, b) = (&last["ops"][op], &first["ops"][op]);
        out.insert(
            op.to_owned(),
            json!({
                "from": first["target"], "to": last["target"],
                "from_reached": first["reached"], "to_reached": last["reached"],
                "to_complete": last["complete"],
                "p50": ratio(a, b, "p50_ms"),
                "p99": ratio(a, b, "p99_ms"),
                "store_ops": ratio(a, b, "store_ops_p50"),
                "bytes": ratio(a, b, "bytes_p50"),
            }),
        );
    }
    Value::Object(out)
}

pub fn to_json(
    sizes: &[usize],
    limits: &Limits,
    results: &[(String, Vec<SizeRun>)],
    total_seconds: f64,
) -> Value {
    let backends: Vec<Value> = results
        .iter()
        .map(|(backend, runs)| {
            let sizes: Vec<Value> = runs.iter().map(size_json).collect();
            json!({
                "backend": backend,
                "ratios": ratios_json(&sizes),
                "sizes": sizes,
            })
        })
        .collect();
    json!({
        "sizes": sizes,
        "operations": OPERATIONS,
        "fill_budget_s": limits.fill_budget.as_secs_f64(),
        "fill_threads": limits.fill_threads,
        "settle_keys": limits.settle_keys,
        "cycles": limits.cycles,
        "sample_budget_s": limits.sample_budget.as_secs_f64(),
        "total_s": total_seconds,
        "backends": backends,
    })
}

/// `10`, `10k`, `100k`, `1.5M`.
pub fn short(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 100_000 == 0 => format!("{}M", n as f64 / 1e6),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn times(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("x{x:.1}"))
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The table `bench/run` prints too (it formats the JSON the same way).
pub fn table(results: &Value) -> String {
    let mut lines = Vec::new();
    let budget = results["fill_budget_s"].as_f64().unwrap_or(0.0);
    for b in results["backends"].as_array().into_iter().flatten() {
        lines.push(format!(
            "\nQueue operations by tickets waiting, {} store (a fresh store per size; calls, keys, KB: medians per request)",
            b["backend"].as_str().unwrap_or("?")
        ));
        lines.push(format!(
            "{:<10}{:>9}{:>5}{:>10}{:>10}{:>7}{:>7}{:>11}{:>11}",
            "operation",
            "waiting",
            "n",
            "p50 ms",
            "p99 ms",
            "calls",
            "keys",
            "KB read",
            "KB written"
        ));
        let sizes = b["sizes"].as_array().cloned().unwrap_or_default();
        for op in OPERATIONS {
            for (i, s) in sizes.iter().enumerate() {
                let o = &s["ops"][op];
                let (target, reached) = (count(&s["target"]), count(&s["reached"]));
                let label = if i == 0 { op } else { "" };
                if !measured(s) {
                    lines.push(format!(
                        "{label:<10}{:>9}  not reached in {budget:.0} s: not measured",
                        short(target)
                    ));
                    continue;
                }
                let (waiting, note) = if s["complete"].as_bool() == Some(true) {
                    (short(target), String::new())
                } else {
                    (
                        reached.to_string(),
                        format!("  ({} not reached in {budget:.0} s)", short(target)),
                    )
                };
                let kb = |k: &str| o[k].as_f64().unwrap_or(0.0) / 1024.0;
                lines.push(format!(
                    "{label:<10}{waiting:>9}{:>5}{:>10.2}{:>10.2}{:>7}{:>7}{:>11.1}{:>11.1}{note}",
                    count(&o["n"]),
                    o["p50_ms"].as_f64().unwrap_or(0.0),
                    o["p99_ms"].as_f64().unwrap_or(0.0),
                    count(&o["store_ops_p50"]),
                    count(&o["keys_p50"]),
                    kb("bytes_read_p50"),
                    kb("bytes_written_p50"),
                ));
            }
            let r = &b["ratios"][op];
            if r.is_object() {
                let to = if r["to_complete"].as_bool() == Some(true) {
                    short(count(&r["to"]))
                } else {
                    count(&r["to_reached"]).to_string()
                };
                lines.push(format!(
                    "{:<10}{:>9}  p50 {}, p99 {}, calls {}, bytes {}",
                    "",
                    format!("{to}/{}", short(count(&r["from"]))),
                    times(&r["p50"]),
                    times(&r["p99"]),
                    times(&r["store_ops"]),
                    times(&r["bytes"]),
                ));
            }
        }
        for s in &sizes {
            let f = &s["fill"];
            let mut line = format!(
                "  fill {:>5}: issued {} in {:.1} s",
                short(count(&s["target"])),
                count(&f["issued"]),
                f["issue_s"].as_f64().unwrap_or(0.0),
            );
            if f["stopped_by_prediction"].as_bool() == Some(true) {
                line += " (stopped there: settling more was predicted not to fit the budget)";
            } else if count(&f["issued"]) < count(&s["target"]) {
                line += &format!(" (the {budget:.0} s budget ran out)");
            }
            line += &format!(
                ", settled by {} transfers in {:.1} s{}",
                count(&f["settle_transfers"]),
                f["settle_s"].as_f64().unwrap_or(0.0),
                if f["settled"].as_bool() == Some(true) {
                    ""
                } else {
                    " (NOT caught up)"
                },
            );
            if measured(s) {
                line += &format!(
                    "; measured {} cycles in {:.1} s at {} waiting (a new ticket's waiting_ahead: {})",
                    count(&s["cycles"]),
                    s["measure_s"].as_f64().unwrap_or(0.0),
                    count(&s["reached"]),
                    count(&s["waiting_ahead_p50"]),
                );
            }
            if let Some(errors) = s["errors"].as_array().filter(|e| !e.is_empty()) {
                let texts: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
                line += &format!("; {}", texts.join("; "));
            }
            lines.push(line);
        }
    }
    lines.push(LEGEND.into());
    lines.join("\n")
}

/// What the columns mean.
pub const LEGEND: &str = "  p99: nearest rank (the slowest sample below 100 samples); calls: Store trait calls \
(a get_many or set_many is one); KB read includes a compare-and-swap's expected value, which the store reads to compare";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), 5);
        assert_eq!(percentile(&v, 0.99), 10);
        assert_eq!(percentile(&[7], 0.5), 7);
        let w: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&w, 0.99), 198);
    }

    #[test]
    fn short_sizes() {
        assert_eq!(short(10), "10");
        assert_eq!(short(10_000), "10k");
        assert_eq!(short(100_000), "100k");
        assert_eq!(short(1_234), "1234");
    }
}
