//! A tour of datafusion-fintech on generated tick data: the kernels in SQL, a pipeline that
//! carries state across two batches, and the state itself as a table.
//!
//! Run with `cargo run --release --example quickstart`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{SortExpr, col};
use datafusion::prelude::{SessionConfig, SessionContext};

const SYMBOLS: usize = 50;
const ROWS: usize = 100_000;

/// A day of trades: a random walk per symbol, one trade every few milliseconds.
fn generate_trades() -> RecordBatch {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift64*: deterministic without extra dependencies.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut prices: Vec<f64> = (0..SYMBOLS).map(|i| 20.0 + 10.0 * i as f64).collect();
    let start = 1_767_260_000_000_000i64; // 2026-01-01 09:33:20 UTC, in microseconds
    let (mut ts, mut sym, mut px, mut qty, mut bid, mut bsz, mut ask, mut asz) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    let mut t = start;
    for _ in 0..ROWS {
        t += (next() % 5_000) as i64;
        let s = (next() % SYMBOLS as u64) as usize;
        let step = (next() % 5) as f64 - 2.0;
        prices[s] = ((prices[s] + step * 0.01) * 100.0).round() / 100.0;
        let p = prices[s];
        ts.push(t);
        sym.push(format!("SYM{s:02}"));
        px.push(p);
        qty.push(((next() % 20) + 1) as f64 * 100.0);
        bid.push(((p - 0.01) * 100.0).round() / 100.0);
        bsz.push(((next() % 10) + 1) as f64 * 100.0);
        ask.push(((p + 0.01) * 100.0).round() / 100.0);
        asz.push(((next() % 10) + 1) as f64 * 100.0);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("qty", DataType::Float64, false),
        Field::new("bid_px", DataType::Float64, false),
        Field::new("bid_sz", DataType::Float64, false),
        Field::new("ask_px", DataType::Float64, false),
        Field::new("ask_sz", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts)),
        Arc::new(StringArray::from(sym)),
        Arc::new(Float64Array::from(px)),
        Arc::new(Float64Array::from(qty)),
        Arc::new(Float64Array::from(bid)),
        Arc::new(Float64Array::from(bsz)),
        Arc::new(Float64Array::from(ask)),
        Arc::new(Float64Array::from(asz)),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn register(ctx: &SessionContext, name: &str, batch: RecordBatch) -> Result<()> {
    let _ = ctx.deregister_table(name)?;
    // Declared ordered by ts, as `CREATE EXTERNAL TABLE ... WITH ORDER (ts)` would.
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?
        .with_sort_order(vec![vec![SortExpr::new(col("ts"), true, false)]]);
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

async fn show(ctx: &SessionContext, title: &str, sql: &str) -> Result<()> {
    println!("\n== {title}\n{sql}");
    let batches = ctx.sql(sql).await?.collect().await?;
    println!("{}", pretty_format_batches(&batches)?);
    Ok(())
}

const KERNELS: &str = "SELECT ts, symbol, price,
       ewma(price, 0.06)                   OVER w AS px_ewma,
       rolling_mean(price, 20)             OVER w AS px_mean20,
       rolling_std(price, 20)              OVER w AS px_std20,
       vwap(price, qty)                    OVER w AS vwap,
       log_return(price)                   OVER w AS ret,
       ofi(bid_px, bid_sz, ask_px, ask_sz) OVER w AS ofi
FROM trades
WINDOW w AS (PARTITION BY symbol ORDER BY ts)";

/// Runs `sql` and keeps its result as table `name`.
async fn keep(ctx: &SessionContext, name: &str, sql: &str) -> Result<usize> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let schema = batches[0].schema();
    let _ = ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    Ok(rows)
}

#[tokio::main]
async fn main() -> Result<()> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    datafusion_fintech::register_all(&ctx)?;
    let trades = generate_trades();
    println!(
        "generated {} trades over {SYMBOLS} symbols",
        trades.num_rows()
    );

    // 1. The whole day in one query, no pipeline: per-query state, like any window function.
    register(&ctx, "trades", trades.clone())?;
    keep(&ctx, "whole_day", KERNELS).await?;
    show(
        &ctx,
        "All six kernels over the whole day in one query (last rows of SYM07)",
        "SELECT * FROM whole_day WHERE symbol = 'SYM07' ORDER BY ts DESC LIMIT 3",
    )
    .await?;

    // 2. A pipeline: the morning, then the afternoon, continuing each symbol's state.
    let half = trades.num_rows() / 2;
    ctx.sql("SET fintech.pipeline = 'ticks'")
        .await?
        .collect()
        .await?;
    for (tag, part) in [
        ("morning", trades.slice(0, half)),
        ("afternoon", trades.slice(half, trades.num_rows() - half)),
    ] {
        register(&ctx, "trades", part)?;
        ctx.sql(&format!("SET fintech.commit_tag = '{tag}'"))
            .await?
            .collect()
            .await?;
        let rows = keep(&ctx, tag, KERNELS).await?;
        println!("\npipeline 'ticks': batch '{tag}': {rows} rows, committed");
    }
    show(
        &ctx,
        "The afternoon batch, computed from the state the morning left (same numbers)",
        "SELECT * FROM afternoon WHERE symbol = 'SYM07' ORDER BY ts DESC LIMIT 3",
    )
    .await?;
    show(
        &ctx,
        "Afternoon rows that differ from the one-query run, bit for bit",
        "SELECT count(*) AS differing_rows FROM (SELECT * FROM afternoon EXCEPT SELECT * FROM whole_day)",
    )
    .await?;

    // 3. The state itself.
    show(
        &ctx,
        "Pipelines",
        "SELECT pipeline, backend, commits, last_commit_tag FROM fintech_pipelines()",
    )
    .await?;
    show(
        &ctx,
        "States of the pipeline",
        "SELECT state_id, kernel, params, keys, bytes FROM fintech_states('ticks')",
    )
    .await?;
    show(
        &ctx,
        "One key's EWMA state",
        "SELECT symbol, ewma, rows_applied, last_applied \
         FROM fintech_state('ticks', 'ewma(price,0.06)@symbol') WHERE symbol = 'SYM07'",
    )
    .await?;
    show(
        &ctx,
        "EXPLAIN of that read: a point lookup, not a scan",
        "EXPLAIN SELECT * FROM fintech_state('ticks', 'ewma(price,0.06)@symbol') WHERE symbol = 'SYM07'",
    )
    .await?;
    Ok(())
}
