//! The RocksDB backend: continuation through staged (evicted) state, commit on success,
//! crash safety under SIGKILL, and clear errors for a directory that is in use, foreign or
//! damaged.
#![cfg(feature = "rocksdb")]

mod common;

use std::path::Path;

use common::consumer::{self, *};
use common::*;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use datafusion_fintech::exec::KeyedStateExec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

/// Batch by batch on RocksDB, with a working set so small that every batch stages its
/// state, gives the rows of one query over everything, bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_through_staged_state() {
    for seed in 0..3u64 {
        let partitions = [1, 4, 2][seed as usize];
        let data = random_ticks(seed, 4_000, 29);
        let whole = all_kernels_at_once(&data, partitions).await;

        let dir = tempfile::tempdir().unwrap();
        let ctx = rocks_context(partitions, &dir.path().join("state"), 1).await;
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut cuts: Vec<usize> = (0..6).map(|_| rng.random_range(0..4_000)).collect();
        cuts.sort();
        let mut out = Vec::new();
        for part in split(&data, &cuts) {
            // Small input batches, so that eviction happens inside each query.
            register_trades_chunked(&ctx, part, 97).unwrap();
            out.extend(sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        }
        assert_eq!(rows_by_seq(&out), whole, "seed {seed}");
        let evicted = table_text(
            &sql(&ctx, "EXPLAIN ANALYZE SELECT ewma(price, 0.5) OVER (PARTITION BY symbol ORDER BY ts) FROM trades")
                .await
                .unwrap(),
        )
        .join("\n");
        assert!(
            !evicted.contains("evictions=0,"),
            "no eviction happened: {evicted}"
        );
    }
}

/// Queries in new sessions over many symbols in small input batches read their keys one by
/// one until the store reads each state ahead; the rows are those of one query over
/// everything, bit for bit, whether the working set holds the query's keys or stages them
/// (which makes the store forget what it read ahead of the staged keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_through_read_ahead() {
    for (seed, working_set) in [(0u64, 1usize << 30), (1, 1 << 30), (2, 20_000)] {
        let partitions = [1, 2, 4][seed as usize];
        let data = random_ticks(seed, 9_000, 3_000);
        let whole = all_kernels_at_once(&data, partitions).await;

        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut out = Vec::new();
        for part in split(&data, &[3_000, 6_000]) {
            // A new session: nothing kept in memory, every key is read from the store.
            let ctx = rocks_context(partitions, &state, working_set).await;
            sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
            // 40-row batches ask for far fewer keys than a sweep would read.
            register_trades_chunked(&ctx, part, 40).unwrap();
            out.extend(sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        }
        assert_eq!(rows_by_seq(&out), whole, "seed {seed}");
    }
}

/// Runs `q` and returns its rows and how many keys its operators started with from the
/// working sets the pipeline's previous query kept.
async fn sql_keeping(ctx: &SessionContext, q: &str) -> (Vec<RecordBatch>, usize) {
    fn kept(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let own = if plan.downcast_ref::<KeyedStateExec>().is_some() {
            plan.metrics()
                .and_then(|m| m.sum_by_name("keys_kept"))
                .map_or(0, |v| v.as_usize())
        } else {
            0
        };
        own + plan.children().into_iter().map(kept).sum::<usize>()
    }
    let plan = ctx
        .sql(q)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let rows = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    (rows, kept(&plan))
}

/// With a working set that holds everything, each query starts from the states the previous
/// one kept in memory. Changing target_partitions between queries (keys move between
/// partitions), failed queries and read-only LIMIT queries in between must not let a stale
/// state through: the rows equal one query over everything, bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_through_kept_working_sets() {
    for seed in 0..3u64 {
        let data = random_ticks(seed + 40, 4_000, 29);
        let whole = all_kernels_at_once(&data, 2).await;

        let dir = tempfile::tempdir().unwrap();
        let ctx = rocks_context(1, &dir.path().join("state"), 128 << 20).await;
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut cuts: Vec<usize> = (0..9).map(|_| rng.random_range(0..4_000)).collect();
        cuts.sort();
        let (mut out, mut kept) = (Vec::new(), 0);
        for (n, part) in split(&data, &cuts).into_iter().enumerate() {
            // 1 -> 4 -> 2: keys a partition kept move to other partitions and come back.
            let partitions = [1, 4, 2, 2, 1, 3, 2, 4, 4, 1][n];
            let set = format!("SET datafusion.execution.target_partitions = {partitions}");
            sql(&ctx, &set).await.unwrap();
            if n == 5 {
                // Fails at its last row, after changing states in memory.
                sql(&ctx, "SET fintech.late_rows = 'error'").await.unwrap();
                let late = datafusion::arrow::compute::concat_batches(
                    &part.schema(),
                    &[part.clone(), data.slice(0, 1)],
                )
                .unwrap();
                register_trades(&ctx, late).unwrap();
                let err = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap_err().to_string();
                assert!(err.contains("late row"), "{err}");
                sql(&ctx, "SET fintech.late_rows = 'skip'").await.unwrap();
            }
            register_trades(&ctx, part).unwrap();
            if n == 7 {
                let limited = format!("SELECT * FROM ({ALL_KERNELS_QUERY}) LIMIT 3");
                sql(&ctx, &limited).await.unwrap();
            }
            let (rows, k) = sql_keeping(&ctx, ALL_KERNELS_QUERY).await;
            out.extend(rows);
            kept += k;
        }
        assert_eq!(rows_by_seq(&out), whole, "seed {seed}");
        assert!(kept > 0, "no query started from a kept working set");
    }
}

/// A query that fails after staging leaves the pipeline exactly as it was.
#[tokio::test]
async fn failed_query_after_staging_commits_nothing() {
    let data = random_ticks(21, 3_000, 31);
    let parts = split(&data, &[1_500]);
    let dir = tempfile::tempdir().unwrap();
    let ctx = rocks_context(2, &dir.path().join("state"), 1).await;
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    sql(&ctx, "SET fintech.late_rows = 'error'").await.unwrap();
    register_trades(&ctx, parts[0].clone()).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    let dump = "SELECT * FROM fintech_state('p', 'rolling_std(price,5)@symbol') ORDER BY symbol";
    let states = "SELECT state_id, keys, bytes FROM fintech_states('p') ORDER BY state_id";
    let before = (
        table_text(&sql(&ctx, dump).await.unwrap()),
        table_text(&sql(&ctx, states).await.unwrap()),
    );
    // The late row comes last: the query has staged most of its updates by then.
    let bad = datafusion::arrow::compute::concat_batches(
        &parts[1].schema(),
        &[parts[1].clone(), data.slice(0, 1)],
    )
    .unwrap();
    register_trades_chunked(&ctx, bad, 64).unwrap();
    let err = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap_err().to_string();
    assert!(err.contains("late row"), "{err}");
    let after = (
        table_text(&sql(&ctx, dump).await.unwrap()),
        table_text(&sql(&ctx, states).await.unwrap()),
    );
    assert_eq!(before, after);
}

/// How a consumer uses the store. A batch updates 2,400 states, ~0.4 MB in memory.
///
/// Part of each batch's updates are staged (which folds the commit log first), the rest go
/// to the commit log with the commit.
const STAGING_AND_LOG: &str =
    "SET datafusion.execution.batch_size = 1000; SET fintech.working_set_bytes = 900000;";
/// Every commit written to its data keys, none to the commit log.
const NO_LOG: &str = "SET fintech.rocksdb.commit_log_bytes = 0;";
/// Commits go to the commit log, which folds every few commits.
const LOG_FOLDING: &str = "SET fintech.rocksdb.commit_log_bytes = 1000000;";
/// Input batches of 20 rows read a few keys at a time, until the store reads each state
/// ahead; stages take their undo values from what it read ahead.
const READ_AHEAD: &str = "SET datafusion.execution.batch_size = 20; \
    SET fintech.working_set_bytes = 300000; SET fintech.fold_order = 'time';";
/// Rows sorted by key before they are folded (a working set this small makes `auto` choose
/// it too), each key staged once per query.
const KEY_ORDER: &str = "SET datafusion.execution.batch_size = 100; \
    SET fintech.working_set_bytes = 300000; SET fintech.fold_order = 'key';";

/// SIGKILL the consumer at random moments, resume from `fintech_pipelines()` each time, and
/// end with exactly the state and outputs of an uninterrupted run. Each seed uses the store
/// another way: staging and the commit log, no commit log, a commit log that folds, reads
/// ahead and stages from them, or folds rows sorted by key.
#[test]
fn sigkill_at_random_points_then_resume() {
    consumer::sigkill_at_random_points_then_resume(
        "rocksdb",
        &[STAGING_AND_LOG, NO_LOG, LOG_FOLDING, READ_AHEAD, KEY_ORDER],
    );
}

/// A second process cannot open a state directory that is in use.
#[tokio::test]
async fn second_process_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ctx = rocks_context(1, &state, 1 << 20).await;
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&ctx, random_ticks(1, 100, 5)).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();

    assert_in_use_by_another_process("rocksdb", &state);
}

async fn open_error(dir: &Path) -> String {
    let ctx = rocks_context(1, dir, 1 << 20).await;
    sql(&ctx, "SELECT * FROM fintech_pipelines()")
        .await
        .unwrap_err()
        .to_string()
}

/// A foreign, damaged or wrong-layout directory is refused and left as it was.
#[tokio::test]
async fn foreign_and_damaged_directories_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "not a database").unwrap();
    let before = snapshot_dir(&foreign);
    let err = open_error(&foreign).await;
    assert!(
        err.contains("is not a datafusion-fintech state directory"),
        "{err}"
    );
    assert_eq!(snapshot_dir(&foreign), before);

    let other_db = dir.path().join("other_db");
    {
        let db = rocksdb::DB::open_default(&other_db).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let before = snapshot_dir(&other_db);
    let err = open_error(&other_db).await;
    assert!(
        err.contains("RocksDB database that datafusion-fintech did not write"),
        "{err}"
    );
    assert_eq!(snapshot_dir(&other_db), before);

    let damaged = dir.path().join("damaged");
    {
        let ctx = rocks_context(1, &damaged, 1 << 20).await;
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        register_trades(&ctx, random_ticks(2, 100, 5)).unwrap();
        sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    }
    // Point CURRENT at a manifest that is not there.
    std::fs::write(damaged.join("CURRENT"), "MANIFEST-999999\n").unwrap();
    let before = snapshot_dir(&damaged);
    let err = open_error(&damaged).await;
    assert!(err.contains(&damaged.display().to_string()), "{err}");
    assert_eq!(snapshot_dir(&damaged), before);

    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(open_error(&file).await.contains("is a file"));
}

/// State written by one process is read back by the next, exactly.
#[test]
fn state_survives_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    write_batches(&data_dir, 2, 500);
    let target = Target::local("rocksdb", &state);
    run_to_end(&consumer_script(&target, &data_dir, STAGING_AND_LOG, 0, 1));
    let after_first = dump_state(&target);
    assert!(after_first.contains("batch-0"));
    assert_eq!(dump_state(&target), after_first, "reading changes nothing");
    run_to_end(&consumer_script(&target, &data_dir, STAGING_AND_LOG, 1, 2));
    assert!(dump_state(&target).contains("batch-1"));
}
