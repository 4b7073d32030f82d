//! Shared helpers of the integration tests: random tick data and query plumbing.
#![allow(dead_code)]

pub mod consumer;
pub mod s3;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{SortExpr, col};
use datafusion::prelude::{SessionConfig, SessionContext};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub fn tick_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("price", DataType::Float64, true),
        Field::new("qty", DataType::Float64, true),
        Field::new("bid_px", DataType::Float64, true),
        Field::new("bid_sz", DataType::Float64, true),
        Field::new("ask_px", DataType::Float64, true),
        Field::new("ask_sz", DataType::Float64, true),
    ]))
}

/// `rows` ticks over `symbols` symbols with non-decreasing timestamps (ties included) and
/// an occasional NULL price.
pub fn random_ticks(seed: u64, rows: usize, symbols: usize) -> RecordBatch {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut mids = vec![100.0f64; symbols];
    let mut ts = 1_000i64;
    let (mut seq, mut tss, mut syms, mut price, mut qty) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut bp, mut bs, mut ap, mut asz) = (vec![], vec![], vec![], vec![]);
    for i in 0..rows {
        ts += rng.random_range(0..3); // 0 makes ties
        let s = rng.random_range(0..symbols);
        mids[s] = (mids[s] + rng.random_range(-2i32..=2) as f64 * 0.01).max(1.0);
        let m = (mids[s] * 100.0).round() / 100.0;
        seq.push(i as i64);
        tss.push(ts);
        syms.push(format!("S{s:03}"));
        price.push(if rng.random_bool(0.02) { None } else { Some(m) });
        qty.push(Some(rng.random_range(1..50) as f64 * 10.0));
        bp.push(Some(m - 0.01));
        bs.push(Some(rng.random_range(1..20) as f64 * 100.0));
        ap.push(Some(m + 0.01));
        asz.push(Some(rng.random_range(1..20) as f64 * 100.0));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(seq)),
        Arc::new(Int64Array::from(tss)),
        Arc::new(StringArray::from(syms)),
        Arc::new(Float64Array::from(price)),
        Arc::new(Float64Array::from(qty)),
        Arc::new(Float64Array::from(bp)),
        Arc::new(Float64Array::from(bs)),
        Arc::new(Float64Array::from(ap)),
        Arc::new(Float64Array::from(asz)),
    ];
    RecordBatch::try_new(tick_schema(), columns).unwrap()
}

pub fn context(partitions: usize) -> SessionContext {
    // Small batches: DataFusion hash-partitions (runs `partitions` partitions) only inputs
    // larger than a batch, and test inputs are small. Sources stay one ordered partition: split,
    // DataFusion would sort by ts itself and apply ties in its sort's order, not the input's.
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(64)
        .with_information_schema(true);
    config.options_mut().optimizer.repartition_file_scans = false;
    let ctx = SessionContext::new_with_config(config);
    datafusion_fintech::register_all(&ctx).unwrap();
    ctx
}

/// Registers `batch` as table `trades`, declared ordered by `ts` (as WITH ORDER (ts) would).
pub fn register_trades(ctx: &SessionContext, batch: RecordBatch) -> Result<()> {
    let rows = batch.num_rows().max(1);
    register_trades_chunked(ctx, batch, rows)
}

/// Like [`register_trades`], in input batches of `rows` rows.
pub fn register_trades_chunked(
    ctx: &SessionContext,
    batch: RecordBatch,
    rows: usize,
) -> Result<()> {
    // Copies, not slices: a slice reports the memory of the whole batch it is cut from, and
    // memory-limited queries would account for it.
    let chunks: Vec<RecordBatch> = (0..batch.num_rows())
        .step_by(rows)
        .map(|i| {
            let n = rows.min(batch.num_rows() - i);
            let picked =
                datafusion::arrow::array::UInt32Array::from_iter_values(i as u32..(i + n) as u32);
            datafusion::arrow::compute::take_record_batch(&batch, &picked).unwrap()
        })
        .collect();
    let chunks = if chunks.is_empty() {
        vec![batch.clone()]
    } else {
        chunks
    };
    let _ = ctx.deregister_table("trades")?;
    let table = MemTable::try_new(batch.schema(), vec![chunks])?
        .with_sort_order(vec![vec![SortExpr::new(col("ts"), true, false)]]);
    ctx.register_table("trades", Arc::new(table))?;
    Ok(())
}

pub async fn sql(ctx: &SessionContext, q: &str) -> Result<Vec<RecordBatch>> {
    ctx.sql(q).await?.collect().await
}

/// A context of `partitions` partitions with per-query or pipeline state in RocksDB at `dir`,
/// holding at most `working_set` bytes before it stages.
pub async fn rocks_context(partitions: usize, dir: &Path, working_set: usize) -> SessionContext {
    store_context("rocksdb", partitions, dir, working_set).await
}

/// A context of `partitions` partitions with state in `backend` at `dir`, holding at most
/// `working_set` bytes before it stages (where the backend stages).
pub async fn store_context(
    backend: &str,
    partitions: usize,
    dir: &Path,
    working_set: usize,
) -> SessionContext {
    let ctx = context(partitions);
    for s in [
        format!("SET fintech.state_backend = '{backend}'"),
        format!("SET fintech.state_path = '{}'", dir.display()),
        format!("SET fintech.working_set_bytes = {working_set}"),
    ] {
        sql(&ctx, &s).await.unwrap();
    }
    ctx
}

/// Every kernel over `trades`, with `seq` to line rows up.
pub const ALL_KERNELS_QUERY: &str = "SELECT seq, ts, symbol,
    ewma(price, 0.06) OVER w AS ewma,
    rolling_mean(price, 5) OVER w AS mean5,
    rolling_std(price, 5) OVER w AS std5,
    vwap(price, qty) OVER w AS vwap,
    log_return(price) OVER w AS ret,
    ofi(bid_px, bid_sz, ask_px, ask_sz) OVER w AS ofi
  FROM trades
  WINDOW w AS (PARTITION BY symbol ORDER BY ts)";

/// The rows of `ALL_KERNELS_QUERY` over all of `data` in one query, with per-query state:
/// what a pipeline that sees `data` in parts must give, bit for bit.
pub async fn all_kernels_at_once(
    data: &RecordBatch,
    partitions: usize,
) -> Vec<(i64, Vec<Option<u64>>)> {
    let ctx = context(partitions);
    register_trades(&ctx, data.clone()).unwrap();
    rows_by_seq(&sql(&ctx, ALL_KERNELS_QUERY).await.unwrap())
}

/// The float columns of a result, as bit patterns keyed and sorted by `seq` (column 0).
pub fn rows_by_seq(batches: &[RecordBatch]) -> Vec<(i64, Vec<Option<u64>>)> {
    let mut out = Vec::new();
    for b in batches {
        let seq = b
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            let vals = (0..b.num_columns())
                .filter(|&c| b.column(c).data_type() == &DataType::Float64)
                .map(|c| {
                    let a = b.column(c).as_primitive::<Float64Type>();
                    (!a.is_null(i)).then(|| a.value(i).to_bits())
                })
                .collect();
            out.push((seq.value(i), vals));
        }
    }
    out.sort_by_key(|r| r.0);
    out
}

/// Splits `batch` at `cuts` (sorted row offsets) into consecutive slices.
pub fn split(batch: &RecordBatch, cuts: &[usize]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&batch.num_rows())) {
        out.push(batch.slice(start, c - start));
        start = c;
    }
    out
}

/// A whole table as sorted text rows, for comparing state snapshots.
pub fn table_text(batches: &[RecordBatch]) -> Vec<String> {
    let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
    rows.sort();
    rows
}
