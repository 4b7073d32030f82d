//! Larger-than-memory state: a pipeline with millions of keys of `rolling_mean(x, 100)`, on
//! RocksDB or (FINTECH_BENCH_BACKEND=tonbo) on Tonbo.
//!
//! `cargo bench --bench large_state` (release profile). Prints rows/s, peak RSS and the
//! state's size on disk. Defaults: 5,000,000 keys x 100 rows each (500M rows, about 4 GB of
//! state), generated on the fly in ts order with each key's rows in runs, and the default
//! settings (128 MiB working set, 128 MiB block cache, 64 MiB write buffers). Change with
//! FINTECH_BENCH_KEYS, FINTECH_BENCH_ROWS_PER_KEY, FINTECH_BENCH_RUN (rows per key per run
//! of consecutive rows) and FINTECH_BENCH_DIR (where the state goes; default a temp dir).
//!
//! With FINTECH_BENCH_PARQUET=1 the same rows are first written to a Parquet file under
//! `benches/data/` (kept for the next run), which the query then reads as an external table
//! `WITH ORDER (ts ASC)`: a bounded input, for which `fintech.fold_order = 'auto'` may sort
//! by key first (the plan's fold order is printed). FINTECH_BENCH_FOLD_ORDER sets
//! `fintech.fold_order` (default: the setting's default).
//!
//! The larger-than-memory case of the README, keys interleaved in time and keys adjacent:
//!
//!     FINTECH_BENCH_PARQUET=1 FINTECH_BENCH_KEYS=1000000 FINTECH_BENCH_RUN=1 \
//!         cargo bench --bench large_state
//!     FINTECH_BENCH_PARQUET=1 FINTECH_BENCH_KEYS=1000000 FINTECH_BENCH_RUN=100 \
//!         cargo bench --bench large_state

use std::pin::Pin;
mod common;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use common::{dir_bytes, env_usize, operator_metric, peak_rss_mib};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{SortExpr, col};
use datafusion::physical_plan::execute_stream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{Stream, StreamExt};

const BATCH: usize = 8_192;

/// Rows in ts order; key k's rows come in runs of `run` consecutive rows, the runs of all
/// keys cycling, so every key is revisited `rows_per_key / run` times over the stream.
#[derive(Debug)]
struct Generator {
    schema: SchemaRef,
    keys: u64,
    rows_per_key: u64,
    run: u64,
}

struct GeneratorStream {
    schema: SchemaRef,
    next_row: u64,
    total: u64,
    keys: u64,
    run: u64,
}

impl Stream for GeneratorStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.next_row >= self.total {
            return Poll::Ready(None);
        }
        let n = (BATCH as u64).min(self.total - self.next_row);
        let (mut ts, mut key, mut x) = (
            Vec::with_capacity(n as usize),
            Vec::with_capacity(n as usize),
            Vec::with_capacity(n as usize),
        );
        for r in self.next_row..self.next_row + n {
            let run_no = r / self.run;
            let k = run_no % self.keys;
            ts.push(r as i64);
            key.push(k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1);
            x.push(100.0 + ((r % 1_000) as f64) * 0.01);
        }
        self.next_row += n;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ts)),
            Arc::new(UInt64Array::from(key)),
            Arc::new(Float64Array::from(x)),
        ];
        Poll::Ready(Some(
            RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(Into::into),
        ))
    }
}

impl RecordBatchStream for GeneratorStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl PartitionStream for Generator {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        Box::pin(GeneratorStream {
            schema: Arc::clone(&self.schema),
            next_row: 0,
            total: self.keys * self.rows_per_key,
            keys: self.keys,
            run: self.run,
        })
    }
}

/// Writes the generator's rows to `path` (snappy, row groups of 1Mi rows), unless it exists.
async fn write_parquet(generator: &Generator, path: &std::path::Path) {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::WriterProperties;

    if path.exists() {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let mut writer =
        ArrowWriter::try_new(file, Arc::clone(&generator.schema), Some(props)).unwrap();
    let ctx = SessionContext::new();
    let mut stream = generator.execute(ctx.task_ctx());
    let start = Instant::now();
    while let Some(batch) = stream.next().await {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.close().unwrap();
    std::fs::rename(&partial, path).unwrap();
    println!(
        "wrote {} in {:.1} s",
        path.display(),
        start.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let keys = env_usize("FINTECH_BENCH_KEYS", 5_000_000) as u64;
    let rows_per_key = env_usize("FINTECH_BENCH_ROWS_PER_KEY", 100) as u64;
    let run = env_usize("FINTECH_BENCH_RUN", 100) as u64;
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("FINTECH_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("state"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("key", DataType::UInt64, false),
        Field::new("x", DataType::Float64, false),
    ]));
    let generator = Arc::new(Generator {
        schema: Arc::clone(&schema),
        keys,
        rows_per_key,
        run,
    });
    let ctx = SessionContext::new_with_config(SessionConfig::new());
    datafusion_fintech::register_all(&ctx).unwrap();
    let parquet = std::env::var("FINTECH_BENCH_PARQUET").is_ok_and(|v| v == "1");
    let source = if parquet {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "benches/data/state_{keys}x{rows_per_key}_run{run}.parquet"
        ));
        write_parquet(&generator, &path).await;
        let create = format!(
            "CREATE EXTERNAL TABLE ticks STORED AS PARQUET LOCATION '{}' WITH ORDER (ts ASC)",
            path.display()
        );
        ctx.sql(&create).await.unwrap().collect().await.unwrap();
        "one Parquet file WITH ORDER (ts)"
    } else {
        let table = StreamingTable::try_new(Arc::clone(&schema), vec![generator])
            .unwrap()
            .with_sort_order(vec![SortExpr::new(col("ts"), true, false)]);
        ctx.register_table("ticks", Arc::new(table)).unwrap();
        "a generated stream in ts order"
    };
    if let Ok(order) = std::env::var("FINTECH_BENCH_FOLD_ORDER") {
        let set = format!("SET fintech.fold_order = '{order}'");
        ctx.sql(&set).await.unwrap().collect().await.unwrap();
    }
    let backend = std::env::var("FINTECH_BENCH_BACKEND").unwrap_or_else(|_| "rocksdb".into());
    for s in [
        format!("SET fintech.state_backend = '{backend}'"),
        format!("SET fintech.state_path = '{}'", dir.display()),
        "SET fintech.pipeline = 'big'".to_string(),
        format!(
            "SET fintech.working_set_bytes = {}",
            env_usize("FINTECH_BENCH_WORKING_SET", 128 << 20)
        ),
    ] {
        ctx.sql(&s).await.unwrap().collect().await.unwrap();
    }
    let rows = keys * rows_per_key;
    let query = "SELECT rolling_mean(x, 100) OVER (PARTITION BY key ORDER BY ts) FROM ticks";
    let plan = ctx
        .sql(&format!("EXPLAIN {query}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    let fold_order = if plan.contains("FintechSequenceExec") {
        "key (sorted by key, ts, position)"
    } else {
        "time (input order)"
    };
    println!(
        "workload: {keys} keys x {rows_per_key} rows (runs of {run}) = {rows} rows from {source}, \
         rolling_mean(x, 100), {backend}; fold order: {fold_order}"
    );
    let start = Instant::now();
    let plan = ctx
        .sql(query)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let mut stream = execute_stream(Arc::clone(&plan), ctx.task_ctx()).unwrap();
    let mut seen = 0u64;
    while let Some(b) = stream.next().await {
        seen += b.unwrap().num_rows() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(seen, rows);
    let states = ctx
        .sql("SELECT keys, bytes FROM fintech_states('big')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    println!(
        "{}",
        datafusion::arrow::util::pretty::pretty_format_batches(&states).unwrap()
    );
    // The operator's times add up over its partitions (they run on parallel threads).
    let secs_of = |name| operator_metric(&plan, name) as f64 / 1e9;
    println!(
        "operator:          fold {:.1} s, load {:.1} s ({} keys), stage {:.1} s ({} evictions), \
         commit {:.1} s ({} keys), summed over partitions",
        secs_of("fold_time"),
        secs_of("load_time"),
        operator_metric(&plan, "keys_loaded"),
        secs_of("stage_time"),
        operator_metric(&plan, "evictions"),
        secs_of("commit_time"),
        operator_metric(&plan, "keys_stored"),
    );
    println!("rows/s:            {:.0}", rows as f64 / secs);
    println!("elapsed:           {secs:.1} s");
    println!("peak RSS:          {:.0} MiB", peak_rss_mib());
    println!(
        "state on disk:     {:.0} MiB",
        dir_bytes(&dir) as f64 / (1 << 20) as f64
    );
}
