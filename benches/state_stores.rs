//! The state stores side by side: what a pipeline of many small commits costs to reopen and
//! keeps on disk, and how fast a whole state reads back as a table.
//!
//! `cargo bench --bench state_stores` (release profile). Two parts, each on every backend of
//! the build:
//!
//! - **commits**: a pipeline commits `ewma(price, 0.06)` over the same 1,000 keys N times
//!   (N = 10, 100, 200, 1,000; FINTECH_BENCH_COMMITS=10,100 to choose), one query per commit in one
//!   process. Prints ms per commit, the directory's size next to the state's own (the
//!   records' bytes, `fintech_states`), and the time a new process takes from its first
//!   statement to the answer of `SELECT commits FROM fintech_pipelines()` (the store's open,
//!   best of 3; a memory run of the same new process is the baseline).
//! - **scan**: `SELECT * FROM fintech_state(...)` over one state of FINTECH_BENCH_KEYS keys
//!   (default 1,000,000), read as a stream: rows/s, best of 3, and the process's peak RSS
//!   while it scans.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use common::{dir_bytes, env_usize, peak_rss_mib, reset_peak_rss};
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

const EWMA: &str = "SELECT ewma(price, 0.06) OVER (PARTITION BY symbol ORDER BY ts) FROM t";
const STATE: &str = "ewma(price,0.06)@symbol";

fn backends() -> Vec<&'static str> {
    let mut out = vec!["memory"];
    if cfg!(feature = "rocksdb") {
        out.push("rocksdb");
    }
    if cfg!(feature = "tonbo") {
        out.push("tonbo");
    }
    out
}

async fn context(backend: &str, dir: &Path) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    datafusion_fintech::register_all(&ctx).unwrap();
    for s in [
        format!("SET fintech.state_backend = '{backend}'"),
        format!("SET fintech.state_path = '{}'", dir.display()),
        "SET fintech.pipeline = 'bench'".to_string(),
    ] {
        ctx.sql(&s).await.unwrap().collect().await.unwrap();
    }
    ctx
}

/// One row per key `0..keys` at time `ts`.
fn rows(keys: usize, ts: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("symbol", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(ts, keys))),
            Arc::new(Int64Array::from_iter_values(0..keys as i64)),
            Arc::new(Float64Array::from_iter_values(
                (0..keys).map(|k| 100.0 + (k as f64 * 0.37 + ts as f64).sin()),
            )),
        ],
    )
    .unwrap()
}

async fn commit(ctx: &SessionContext, batch: RecordBatch, tag: usize) {
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
    ctx.deregister_table("t").unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    ctx.sql(&format!("SET fintech.commit_tag = 'c{tag}'"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    ctx.sql(EWMA).await.unwrap().collect().await.unwrap();
}

/// In a child process: `n` commits; prints the milliseconds per commit and the state's bytes.
async fn commit_many(backend: &str, n: usize, dir: &Path) {
    let ctx = context(backend, dir).await;
    let start = Instant::now();
    for i in 0..n {
        commit(&ctx, rows(1_000, i as i64), i).await;
    }
    let per = start.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!("{per} {}", state_bytes(&ctx).await);
}

/// In a child process: open the store and answer one query; prints the milliseconds.
async fn open_once(backend: &str, dir: &Path) {
    let start = Instant::now();
    let ctx = context(backend, dir).await;
    let out = ctx
        .sql("SELECT commits FROM fintech_pipelines()")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(backend == "memory" || out.iter().map(|b| b.num_rows()).sum::<usize>() == 1);
    println!("{ms}");
}

/// What this benchmark, run again as a child process with `var` set to `value`, prints.
fn child(var: &str, value: String) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(var, value)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The best of 3 child processes' open times, in ms.
fn open_ms(backend: &str, dir: &Path) -> f64 {
    (0..3)
        .map(|_| {
            child("FINTECH_BENCH_OPEN", format!("{backend}:{}", dir.display()))
                .parse::<f64>()
                .unwrap()
        })
        .fold(f64::INFINITY, f64::min)
}

async fn state_bytes(ctx: &SessionContext) -> u64 {
    let out = ctx
        .sql("SELECT bytes FROM fintech_states('bench')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    out[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        .map_or(0, |a| a.value(0))
}

async fn commits_part() {
    let counts: Vec<usize> = std::env::var("FINTECH_BENCH_COMMITS")
        .unwrap_or_else(|_| "10,100,200,1000".into())
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    println!("commits of ewma over the same 1,000 keys, one query each");
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "backend", "commits", "ms/commit", "dir MiB", "state MiB", "open ms"
    );
    let tmp = tempfile::tempdir().unwrap();
    let baseline = open_ms("memory", tmp.path());
    for backend in backends().into_iter().filter(|b| *b != "memory") {
        for &n in &counts {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            // In a process of its own: a process keeps its Tonbo stores open until it exits.
            let text = child(
                "FINTECH_BENCH_COMMIT",
                format!("{backend}:{n}:{}", state.display()),
            );
            let (per, live) = text.split_once(' ').unwrap();
            let (per, live): (f64, u64) = (per.parse().unwrap(), live.parse().unwrap());
            println!(
                "{backend:<8} {n:>8} {per:>10.1} {:>10.2} {:>10.3} {:>10.0}",
                dir_bytes(&state) as f64 / (1 << 20) as f64,
                live as f64 / (1 << 20) as f64,
                open_ms(backend, &state),
            );
        }
    }
    println!("(a new process answering on the memory backend: {baseline:.0} ms)");
}

async fn scan_part() {
    let keys = env_usize("FINTECH_BENCH_KEYS", 1_000_000);
    println!("\nSELECT * FROM fintech_state over {keys} keys of {STATE}, best of 3");
    println!(
        "{:<8} {:>12} {:>10} {:>14}",
        "backend", "rows/s", "seconds", "scan RSS MiB"
    );
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(backend, &dir.path().join("state")).await;
        commit(&ctx, rows(keys, 0), 0).await;
        reset_peak_rss();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            let mut stream = ctx
                .sql(&format!("SELECT * FROM fintech_state('bench', '{STATE}')"))
                .await
                .unwrap()
                .execute_stream()
                .await
                .unwrap();
            let mut seen = 0;
            while let Some(batch) = stream.next().await {
                seen += batch.unwrap().num_rows();
            }
            best = best.min(start.elapsed().as_secs_f64());
            assert_eq!(seen, keys);
        }
        println!(
            "{backend:<8} {:>12.0} {best:>10.2} {:>14.0}",
            keys as f64 / best,
            peak_rss_mib()
        );
    }
}

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var("FINTECH_BENCH_COMMIT") {
        let mut parts = spec.splitn(3, ':');
        let (backend, n, dir) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap(),
        );
        commit_many(backend, n, Path::new(dir)).await;
        return;
    }
    if let Ok(spec) = std::env::var("FINTECH_BENCH_OPEN") {
        let (backend, dir) = spec.split_once(':').unwrap();
        open_once(backend, Path::new(dir)).await;
        return;
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_none_or(|f| "commits".contains(f)) {
        commits_part().await;
    }
    if filter.as_deref().is_none_or(|f| "scan".contains(f)) {
        scan_part().await;
    }
}
