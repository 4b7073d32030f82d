//! Throughput of the kernels through SQL, against a plain Rust loop over the same Arrow arrays.
//!
//! `cargo bench --bench kernels` (release profile). The workload is 1M ts-ordered rows over
//! 1,000 symbols in 8,192-row batches; set `FINTECH_BENCH_ROWS` / `FINTECH_BENCH_SYMBOLS` to
//! change it, `FINTECH_BENCH_NO_SYNC` to run RocksDB commits without fsync and
//! `FINTECH_BENCH_WORKING_SET` / `FINTECH_BENCH_COMMIT_LOG` / `FINTECH_BENCH_BLOCK_CACHE` /
//! `FINTECH_BENCH_READ_AHEAD` to set `fintech.working_set_bytes` /
//! `fintech.rocksdb.commit_log_bytes` / `fintech.rocksdb.block_cache_bytes` /
//! `fintech.rocksdb.read_ahead_bytes` for RocksDB. Runs each case on memory, RocksDB and Tonbo
//! (the disk backends' cases where their features are on). Prints rows/s, the bytes on disk,
//! peak RSS and the cost of state access: loading (read and decode) per key loaded, writing
//! (encode, stage and commit, fsync included) per key stored, and both over all keys loaded or
//! stored. Pipeline cases time the second query on a pipeline; "reopened" runs it in a new
//! session, so that it loads every key the first one stored.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{dir_bytes, env_usize, operator_metric, peak_rss_mib, reset_peak_rss};
use datafusion::arrow::array::{
    ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::common::HashMap;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{SortExpr, col};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

const BATCH: usize = 8_192;

fn generate(rows: usize, symbols: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("qty", DataType::Float64, false),
        Field::new("bid_px", DataType::Float64, false),
        Field::new("bid_sz", DataType::Float64, false),
        Field::new("ask_px", DataType::Float64, false),
        Field::new("ask_sz", DataType::Float64, false),
    ]));
    let names: Vec<String> = (0..symbols).map(|s| format!("SYM{s:05}")).collect();
    let mut state = 88172645463325252u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut mids = vec![100.0f64; symbols];
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = BATCH.min(rows - start);
        let mut cols: Vec<Vec<f64>> = (0..6).map(|_| Vec::with_capacity(n)).collect();
        let mut ts = Vec::with_capacity(n);
        let mut sym = Vec::with_capacity(n);
        for i in 0..n {
            let s = (next() % symbols as u64) as usize;
            mids[s] += ((next() % 5) as f64 - 2.0) * 0.01;
            ts.push((start + i) as i64);
            sym.push(names[s].as_str());
            let m = mids[s];
            for (c, v) in cols.iter_mut().zip([
                m,
                (next() % 100 + 1) as f64,
                m - 0.01,
                (next() % 10 + 1) as f64 * 100.0,
                m + 0.01,
                (next() % 10 + 1) as f64 * 100.0,
            ]) {
                c.push(v);
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ts)),
            Arc::new(StringArray::from(sym)),
        ];
        arrays.extend(
            cols.into_iter()
                .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
        );
        out.push(RecordBatch::try_new(Arc::clone(&schema), arrays).unwrap());
        start += n;
    }
    out
}

fn context() -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new());
    datafusion_fintech::register_all(&ctx).unwrap();
    ctx
}

/// Registers `batches` as `trades` (declared ordered by ts), with ts moved `shift` later.
fn register_trades(ctx: &SessionContext, batches: &[RecordBatch], shift: i64) {
    let shifted: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let ts = b.column(0).as_primitive::<Int64Type>();
            let ts: Int64Array = ts.unary(|t| t + shift);
            let mut cols = b.columns().to_vec();
            cols[0] = Arc::new(ts);
            RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect();
    let table = MemTable::try_new(batches[0].schema(), vec![shifted])
        .unwrap()
        .with_sort_order(vec![vec![SortExpr::new(col("ts"), true, false)]]);
    let _ = ctx.deregister_table("trades").unwrap();
    ctx.register_table("trades", Arc::new(table)).unwrap();
}

const EWMA: &str =
    "SELECT ts, symbol, ewma(price, 0.06) OVER (PARTITION BY symbol ORDER BY ts) FROM trades";
const ALL: &str = "SELECT ts, symbol,
    ewma(price, 0.06) OVER w, rolling_mean(price, 100) OVER w, rolling_std(price, 100) OVER w,
    vwap(price, qty) OVER w, log_return(price) OVER w, ofi(bid_px, bid_sz, ask_px, ask_sz) OVER w
  FROM trades WINDOW w AS (PARTITION BY symbol ORDER BY ts)";

#[derive(Clone, Copy, PartialEq)]
enum State {
    PerQuery,
    Memory,
    RocksDb,
    /// RocksDB, the timed query in a new session: nothing kept in memory but RocksDB's caches.
    RocksDbReopened,
    Tonbo,
    /// Tonbo, the timed query in a new session.
    TonboReopened,
}

impl State {
    fn backend(self) -> Option<&'static str> {
        match self {
            State::RocksDb | State::RocksDbReopened => Some("rocksdb"),
            State::Tonbo | State::TonboReopened => Some("tonbo"),
            _ => None,
        }
    }

    fn reopened(self) -> bool {
        matches!(self, State::RocksDbReopened | State::TonboReopened)
    }
}

/// What one case measured.
struct Measured {
    rows_per_sec: f64,
    /// ns per key loaded.
    load_ns: f64,
    /// ns per key stored.
    write_ns: f64,
    /// ns per key loaded or stored.
    access_ns: f64,
    /// Bytes on disk after the timed query (disk backends).
    disk_bytes: f64,
}

/// Runs `sql` `runs` times, each on fresh state, twice per run; the second query is timed.
/// Returns the run with the best rows/s.
async fn sql_case(batches: &[RecordBatch], sql: &str, state: State, runs: usize) -> Measured {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut best = Measured {
        rows_per_sec: 0.0,
        load_ns: f64::NAN,
        write_ns: f64::NAN,
        access_ns: f64::NAN,
        disk_bytes: f64::NAN,
    };
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = vec![];
        if state != State::PerQuery {
            settings.push(format!("SET fintech.pipeline = 'bench{run}'"));
        }
        if state == State::RocksDb || state == State::RocksDbReopened {
            if std::env::var("FINTECH_BENCH_NO_SYNC").is_ok() {
                settings.push("SET fintech.rocksdb.sync = false".into());
            }
            for (var, setting) in [
                ("FINTECH_BENCH_WORKING_SET", "working_set_bytes"),
                ("FINTECH_BENCH_COMMIT_LOG", "rocksdb.commit_log_bytes"),
                ("FINTECH_BENCH_BLOCK_CACHE", "rocksdb.block_cache_bytes"),
                ("FINTECH_BENCH_READ_AHEAD", "rocksdb.read_ahead_bytes"),
            ] {
                if let Ok(bytes) = std::env::var(var) {
                    settings.push(format!("SET fintech.{setting} = {bytes}"));
                }
            }
        }
        if let Some(backend) = state.backend() {
            settings.push(format!("SET fintech.state_backend = '{backend}'"));
            settings.push(format!(
                "SET fintech.state_path = '{}'",
                dir.path().display()
            ));
        }
        let open = || async {
            let ctx = context();
            for s in &settings {
                ctx.sql(s).await.unwrap().collect().await.unwrap();
            }
            ctx
        };
        let mut ctx = open().await;
        // The second query is timed: it runs on a warm context and continues the first
        // one's pipeline; reopened, it loads every key the first one stored.
        let passes = 2;
        for pass in 0..passes {
            if pass > 0 && state.reopened() {
                drop(ctx);
                ctx = open().await;
            }
            // The second pass continues in time: its rows are new, not late.
            register_trades(&ctx, batches, pass as i64 * rows as i64);
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let start = Instant::now();
            let mut stream = execute_stream(Arc::clone(&plan), ctx.task_ctx()).unwrap();
            let mut seen = 0;
            while let Some(b) = stream.next().await {
                seen += b.unwrap().num_rows();
            }
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(seen, rows);
            if pass + 1 == passes && rows as f64 / secs > best.rows_per_sec {
                let metric = |name| operator_metric(&plan, name) as f64;
                let per = |ns: f64, keys: f64| if keys == 0.0 { f64::NAN } else { ns / keys };
                let (loaded, stored) = (metric("keys_loaded"), metric("keys_stored"));
                let (load, write) = (
                    metric("load_time"),
                    metric("stage_time") + metric("commit_time"),
                );
                best = Measured {
                    rows_per_sec: rows as f64 / secs,
                    load_ns: per(load, loaded),
                    write_ns: per(write, stored),
                    access_ns: per(load + write, loaded + stored),
                    disk_bytes: match state.backend() {
                        Some(_) => dir_bytes(dir.path()) as f64,
                        None => f64::NAN,
                    },
                };
            }
        }
    }
    best
}

/// The same EWMA as a hand-written loop over the Arrow arrays: the physical-limit reference.
fn plain_loop(batches: &[RecordBatch], runs: usize) -> f64 {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut best = 0.0f64;
    for _ in 0..runs {
        let start = Instant::now();
        let mut state: HashMap<&str, f64> = HashMap::default();
        let mut checksum = 0.0;
        for b in batches {
            let sym = b.column(1).as_string::<i32>();
            let px = b.column(2).as_primitive::<Float64Type>();
            let mut out = Float64Builder::with_capacity(b.num_rows());
            for (s, p) in sym.iter().zip(px.values()) {
                let y = state
                    .entry(s.unwrap())
                    .and_modify(|y| *y = 0.94 * *y + 0.06 * p)
                    .or_insert(*p);
                out.append_value(*y);
            }
            let out = out.finish();
            checksum += out.value(out.len() - 1);
        }
        std::hint::black_box(checksum);
        best = best.max(rows as f64 / start.elapsed().as_secs_f64());
    }
    best
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; any other argument is a case-name filter.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rows = env_usize("FINTECH_BENCH_ROWS", 1_000_000);
    let symbols = env_usize("FINTECH_BENCH_SYMBOLS", 1_000);
    let runs = env_usize("FINTECH_BENCH_RUNS", 3);
    let batches = generate(rows, symbols);
    println!(
        "workload: {rows} rows, {symbols} symbols, ts-ordered, {BATCH}-row batches; best of {runs}"
    );
    println!(
        "{:<40} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "case", "rows/s", "RSS MiB", "load ns", "write ns", "ns/key", "disk MiB"
    );
    let mut cases: Vec<(&str, Option<(&str, State)>)> = vec![
        ("plain Rust loop, ewma", None),
        ("sql ewma, no pipeline", Some((EWMA, State::PerQuery))),
        ("sql ewma, memory pipeline", Some((EWMA, State::Memory))),
        (
            "sql all six kernels, no pipeline",
            Some((ALL, State::PerQuery)),
        ),
        (
            "sql all six kernels, memory pipeline",
            Some((ALL, State::Memory)),
        ),
    ];
    if cfg!(feature = "rocksdb") {
        cases.push(("sql ewma, rocksdb pipeline", Some((EWMA, State::RocksDb))));
        cases.push((
            "sql ewma, rocksdb reopened",
            Some((EWMA, State::RocksDbReopened)),
        ));
        cases.push((
            "sql all six kernels, rocksdb pipeline",
            Some((ALL, State::RocksDb)),
        ));
        cases.push((
            "sql all six, rocksdb reopened",
            Some((ALL, State::RocksDbReopened)),
        ));
    }
    if cfg!(feature = "tonbo") {
        cases.push(("sql ewma, tonbo pipeline", Some((EWMA, State::Tonbo))));
        cases.push((
            "sql ewma, tonbo reopened",
            Some((EWMA, State::TonboReopened)),
        ));
        cases.push((
            "sql all six kernels, tonbo pipeline",
            Some((ALL, State::Tonbo)),
        ));
        cases.push((
            "sql all six, tonbo reopened",
            Some((ALL, State::TonboReopened)),
        ));
    }
    for (name, case) in cases {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        reset_peak_rss();
        let m = match case {
            None => Measured {
                rows_per_sec: plain_loop(&batches, runs),
                load_ns: f64::NAN,
                write_ns: f64::NAN,
                access_ns: f64::NAN,
                disk_bytes: f64::NAN,
            },
            Some((sql, state)) => sql_case(&batches, sql, state, runs).await,
        };
        println!(
            "{name:<40} {:>12.0} {:>8.1} {:>8.0} {:>8.0} {:>8.0} {:>9.1}",
            m.rows_per_sec,
            peak_rss_mib(),
            m.load_ns,
            m.write_ns,
            m.access_ns,
            m.disk_bytes / (1 << 20) as f64
        );
    }
}
