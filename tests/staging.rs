//! Staging on every disk backend (RocksDB, Tonbo): a query whose working set outgrows
//! `fintech.working_set_bytes` stages what it evicts, reads it back, and commits it with the
//! rest or rolls it back; states larger than the working set are read from the store as the
//! query asks for them; working sets kept across queries never let a stale state through.
#![cfg(any(feature = "rocksdb", feature = "tonbo"))]

mod common;

use std::sync::Arc;

use common::*;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use datafusion_fintech::exec::KeyedStateExec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The disk backends this build has.
const BACKENDS: &[&str] = &[
    #[cfg(feature = "rocksdb")]
    "rocksdb",
    #[cfg(feature = "tonbo")]
    "tonbo",
];

/// Fails with the first row where `got` and `want` differ (rows of [`rows_by_seq`]).
fn assert_same_rows(got: &[RecordBatch], want: &[(i64, Vec<Option<u64>>)], what: &str) {
    let got = rows_by_seq(got);
    if got == want {
        return;
    }
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let first = got.iter().zip(want).find(|(a, b)| a != b);
    panic!(
        "{what}: {} rows, {} expected; {differ} differ, the first: {first:?}",
        got.len(),
        want.len()
    );
}

/// The EXPLAIN ANALYZE text of one `ewma` query over `trades`.
async fn analyzed(ctx: &SessionContext) -> String {
    let q = "EXPLAIN ANALYZE SELECT ewma(price, 0.5) OVER (PARTITION BY symbol ORDER BY ts) \
             FROM trades";
    table_text(&sql(ctx, q).await.unwrap()).join("\n")
}

/// Batch by batch, with a working set so small that every batch stages its state, gives the
/// rows of one query over everything, bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_through_staged_state() {
    for backend in BACKENDS {
        for seed in 0..3u64 {
            let partitions = [1, 4, 2][seed as usize];
            let data = random_ticks(seed, 4_000, 29);
            let whole = all_kernels_at_once(&data, partitions).await;

            let dir = tempfile::tempdir().unwrap();
            let ctx = store_context(backend, partitions, &dir.path().join("state"), 1).await;
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
            assert_same_rows(&out, &whole, &format!("{backend}, seed {seed}"));
            let evicted = analyzed(&ctx).await;
            assert!(
                !evicted.contains("evictions=0,"),
                "{backend}: no eviction happened: {evicted}"
            );
        }
    }
}

/// Queries in new sessions over many symbols in small input batches read their keys from
/// the store: the rows are those of one query over everything, bit for bit, whether the
/// working set holds the query's keys or stages them. RocksDB reads keys one by one until it
/// reads a state ahead; Tonbo reads a state whole, or, when the states outgrow the working
/// set (the third case), forward from the keys asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_through_new_sessions() {
    for backend in BACKENDS {
        for (seed, working_set) in [(0u64, 1usize << 30), (1, 1 << 30), (2, 20_000)] {
            let partitions = [1, 2, 4][seed as usize];
            let data = random_ticks(seed, 9_000, 3_000);
            let whole = all_kernels_at_once(&data, partitions).await;

            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let mut out = Vec::new();
            for part in split(&data, &[3_000, 6_000]) {
                // A new session: nothing kept in memory, every key is read from the store.
                let ctx = store_context(backend, partitions, &state, working_set).await;
                sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
                // 40-row batches ask for few keys at a time.
                register_trades_chunked(&ctx, part, 40).unwrap();
                out.extend(sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
            }
            assert_same_rows(&out, &whole, &format!("{backend}, seed {seed}"));
        }
    }
}

/// Tonbo reads a state larger than the working set forward, in key order, when the query
/// folds by key: integer keys and string keys of several lengths, over three queries, give
/// the rows of one query over everything.
#[cfg(feature = "tonbo")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonbo_reads_states_larger_than_the_working_set_forward() {
    let data = random_ticks(7, 12_000, 5_000);
    let numbered = "FROM (SELECT *, CAST(substr(symbol, 2) AS BIGINT) AS no FROM trades)";
    for key in ["symbol", "no"] {
        let query = ALL_KERNELS_QUERY
            .replace("PARTITION BY symbol", &format!("PARTITION BY {key}"))
            .replace("FROM trades", numbered);
        let whole = {
            let ctx = context(2);
            register_trades(&ctx, data.clone()).unwrap();
            rows_by_seq(&sql(&ctx, &query).await.unwrap())
        };
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut out = Vec::new();
        for part in split(&data, &[4_000, 8_000]) {
            let ctx = store_context("tonbo", 2, &state, 50_000).await;
            sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
            sql(&ctx, "SET fintech.fold_order = 'key'").await.unwrap();
            register_trades_chunked(&ctx, part, 500).unwrap();
            out.extend(sql(&ctx, &query).await.unwrap());
        }
        assert_same_rows(&out, &whole, &format!("PARTITION BY {key}"));
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
    for backend in BACKENDS {
        for seed in 0..3u64 {
            let data = random_ticks(seed + 40, 4_000, 29);
            let whole = all_kernels_at_once(&data, 2).await;

            let dir = tempfile::tempdir().unwrap();
            let ctx = store_context(backend, 1, &dir.path().join("state"), 128 << 20).await;
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
            assert_same_rows(&out, &whole, &format!("{backend}, seed {seed}"));
            assert!(
                kept > 0,
                "{backend}: no query started from a kept working set"
            );
        }
    }
}

/// A query that fails after staging leaves the pipeline exactly as it was, and the next
/// query continues from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_query_after_staging_commits_nothing() {
    for backend in BACKENDS {
        let data = random_ticks(21, 3_000, 31);
        let parts = split(&data, &[1_500]);
        let dir = tempfile::tempdir().unwrap();
        let ctx = store_context(backend, 2, &dir.path().join("state"), 1).await;
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        sql(&ctx, "SET fintech.late_rows = 'error'").await.unwrap();
        register_trades(&ctx, parts[0].clone()).unwrap();
        let mut out = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
        let dump =
            "SELECT * FROM fintech_state('p', 'rolling_std(price,5)@symbol') ORDER BY symbol";
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
        assert!(err.contains("late row"), "{backend}: {err}");
        let after = (
            table_text(&sql(&ctx, dump).await.unwrap()),
            table_text(&sql(&ctx, states).await.unwrap()),
        );
        assert_eq!(before, after, "{backend}");
        register_trades_chunked(&ctx, parts[1].clone(), 64).unwrap();
        out.extend(sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        assert_same_rows(&out, &all_kernels_at_once(&data, 2).await, backend);
        assert!(!analyzed(&ctx).await.contains("evictions=0,"), "{backend}");
    }
}
