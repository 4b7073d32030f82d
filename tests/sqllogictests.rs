//! Runs every `sql-tests/*.slt` file once per state backend and per `target_partitions` in
//! {1, 4}, each run on a fresh `SessionContext` with datafusion-fintech registered.
//!
//! `cargo test --test sqllogictests -- FILTER` runs only files whose name contains FILTER;
//! `-- --complete FILTER` rewrites the expected results of those files from a memory run with
//! one partition on memory, or `FINTECH_SLT_PARTITIONS` partitions on `FINTECH_SLT_BACKEND`
//! (read the diff before committing it).
//! Files may use `onlyif`/`skipif` with the labels `memory` / `rocksdb` / `tonbo` (the backend) and
//! `partitions-1` / `partitions-4`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqllogictest::{DBOutput, DefaultColumnType, Runner};

/// The state backends every suite runs on. Adding a backend is one entry here.
const BACKENDS: &[&str] = &[
    "memory",
    #[cfg(feature = "rocksdb")]
    "rocksdb",
    #[cfg(feature = "tonbo")]
    "tonbo",
];
const PARTITIONS: &[usize] = &[1, 4];

struct FintechDb {
    ctx: SessionContext,
}

#[derive(Debug)]
struct DbError(DataFusionError);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for DbError {}

fn format_batches(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let workspace = env!("CARGO_MANIFEST_DIR").trim_start_matches('/');
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()?;
        for i in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| {
                    // Plans print file paths: make them independent of the checkout.
                    let s = f.value(i).to_string().replace(workspace, "WORKSPACE");
                    if s.is_empty() {
                        "(empty)".to_string()
                    } else {
                        s
                    }
                })
                .collect();
            // A multi-line cell (a plan) becomes one result line per text line, as in
            // DataFusion's own sqllogictest runner, so expected plans read naturally.
            if cells.iter().any(|c| c.contains('\n')) {
                rows.push(
                    cells
                        .iter()
                        .map(|c| c.lines().next().unwrap_or("").to_string())
                        .collect(),
                );
                for c in &cells {
                    rows.extend(c.lines().skip(1).map(|l| vec![l.to_string()]));
                }
            } else {
                rows.push(cells);
            }
        }
    }
    Ok(rows)
}

#[async_trait]
impl sqllogictest::AsyncDB for FintechDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.sql(sql).await.map_err(DbError)?;
        let schema = df.schema().clone();
        let batches = df.collect().await.map_err(DbError)?;
        let is_statement = sql
            .split_whitespace()
            .next()
            .map(|w| {
                matches!(
                    w.to_ascii_uppercase().as_str(),
                    "SET" | "CREATE" | "DROP" | "INSERT"
                )
            })
            .unwrap_or(false);
        if is_statement {
            return Ok(DBOutput::StatementComplete(0));
        }
        let rows = format_batches(&batches).map_err(DbError)?;
        let types = schema
            .fields()
            .iter()
            .map(|f| {
                if f.data_type().is_floating() {
                    DefaultColumnType::FloatingPoint
                } else if f.data_type().is_integer() {
                    DefaultColumnType::Integer
                } else {
                    DefaultColumnType::Text
                }
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "datafusion-fintech"
    }
}

async fn connect(
    backend: &'static str,
    partitions: usize,
    state_dir: PathBuf,
) -> Result<FintechDb, DbError> {
    // Small batches: DataFusion hash-partitions only inputs larger than a batch, and the test
    // tables are small; without this, 'partitions-4' would run one partition.
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(if partitions > 1 { 2 } else { 8192 })
        .with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    datafusion_fintech::register_all(&ctx).map_err(DbError)?;
    for sql in [
        format!("SET fintech.state_backend = '{backend}'"),
        format!("SET fintech.state_path = '{}'", state_dir.display()),
    ] {
        ctx.sql(&sql)
            .await
            .map_err(DbError)?
            .collect()
            .await
            .map_err(DbError)?;
    }
    Ok(FintechDb { ctx })
}

async fn run_file(path: &Path, backend: &'static str, partitions: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let state_dir = dir.path().join("state");
    let mut runner = Runner::new(move || connect(backend, partitions, state_dir.clone()));
    runner.add_label(backend);
    runner.add_label(&format!("partitions-{partitions}"));
    runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(true).to_string())
}

async fn complete_file(path: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let state_dir = dir.path().join("state");
    let partitions: usize = std::env::var("FINTECH_SLT_PARTITIONS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let backend: &'static str = match std::env::var("FINTECH_SLT_BACKEND").as_deref() {
        Ok(b) => BACKENDS
            .iter()
            .find(|x| **x == b)
            .expect("a backend of this build"),
        Err(_) => "memory",
    };
    let mut runner = Runner::new(move || connect(backend, partitions, state_dir.clone()));
    runner.add_label(backend);
    runner.add_label(&format!("partitions-{partitions}"));
    runner
        .update_test_file(
            path,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            sqllogictest::default_column_validator,
        )
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let complete = std::env::args().any(|a| a == "--complete");
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("sql-tests directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter.as_ref().is_none_or(|f| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains(f.as_str())
            })
        })
        .collect();
    files.sort();
    if complete {
        for file in &files {
            complete_file(file).await.expect("completing test file");
            println!("completed {}", file.display());
        }
        return;
    }
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        for backend in BACKENDS {
            for &partitions in PARTITIONS {
                let name = format!(
                    "{} [{backend}, target_partitions={partitions}]",
                    file.file_name().unwrap().to_string_lossy()
                );
                let start = Instant::now();
                match run_file(file, backend, partitions).await {
                    Ok(()) => {
                        passed += 1;
                        println!("test {name} ... ok ({:.2?})", start.elapsed());
                    }
                    Err(e) => {
                        failed += 1;
                        println!("test {name} ... FAILED\n{e}");
                    }
                }
            }
        }
    }
    println!("\nsqllogictests: {passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
